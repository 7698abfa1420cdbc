"""`rakuten serve` as it runs in production: a uvicorn process on a free port of 127.0.0.1 that
answers concurrent clients over HTTP and picks up a promotion by itself."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from src.config import load_params
from src.db.migrate import upgrade
from src.models.lifecycle import promote, rollback, validate
from src.models.tracking import tracking_client
from tests.registry import Registry
from tests.servers import Server, free_port, started, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PRODUCTS = [
    {"productid": 1, "designation": "Piscine tubulaire hors-sol 300 x 200 cm"},
    {
        "productid": 2,
        "designation": "Coffret de cartes à collectionner",
        "description": "<b>Neuf</b>",
    },
]


def _call(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def test_rakuten_serve_answers_concurrent_clients_and_follows_a_promotion(
    registry: Registry, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'predictions.db'}"
    upgrade(store)
    port = free_port()
    environ = {
        **os.environ,
        "RAKUTEN_MLFLOW_TRACKING_URI": registry.uri,
        "RAKUTEN_DATABASE_URL": store,
        "RAKUTEN_API_REFRESH_SECONDS": "1",
    }
    command = [str(Path(sys.executable).parent / "rakuten"), "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with started(command, log, environ) as process:
        url = wait_until_healthy(Server(process, f"http://127.0.0.1:{port}", log), "/ready")

        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda _: _call(f"{url}/predict", {"products": PRODUCTS}), range(16))
            )
        assert all(a["predictions"] == answers[0]["predictions"] for a in answers)
        assert answers[0]["model"]["version"] == "1"

        client = tracking_client(registry.uri)
        validate(client, registry.paths, load_params(registry.params_file).gate, version="2")
        promote(client, "auto", version="2", automatic=True, by="test")
        try:
            deadline = time.monotonic() + 60
            while _call(f"{url}/model")["version"] != "2":
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            assert _call(f"{url}/predict", {"products": PRODUCTS})["model"]["version"] == "2"
        finally:
            rollback(client, by="test", reason="the test puts version 1 back")

        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        assert (
            'rakuten_api_requests_total{endpoint="/predict",method="POST",status="200"} 17.0'
            in metrics
        )
    assert "serving rakuten-product-classifier v2 (@champion), was v1" in log.read_text()
