"""`rakuten serve` as it runs in production: a uvicorn process on a free port of 127.0.0.1 that
answers concurrent clients over HTTP, picks up a promotion by itself, and is scraped by a real
Prometheus that answers every query of the API's Grafana dashboard."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from src.config import load_params
from src.db.migrate import upgrade
from src.registry.lifecycle import promote, rollback, validate
from src.registry.tracking import tracking_client
from tests.servers import Server, free_port, started, wait_until_healthy
from tests.serving.conftest import API_KEY_SECRET, new_key
from tests.trained_registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = [
    {"productid": 1, "designation": "Piscine tubulaire hors-sol 300 x 200 cm"},
    {
        "productid": 2,
        "designation": "Coffret de cartes à collectionner",
        "description": "<b>Neuf</b>",
    },
]


def _call(url: str, body: dict[str, Any] | None = None, key: str | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} | ({"X-API-Key": key} if key else {})
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


@pytest.fixture(scope="module")
def serve_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The served API's SQLite store, migrated."""
    store = f"sqlite:///{tmp_path_factory.mktemp('serve-store') / 'predictions.db'}"
    upgrade(store)
    return store


@pytest.fixture(scope="module")
def key(serve_store: str) -> str:
    """A key of scope predict for the served API."""
    return new_key(serve_store, "predict")


@pytest.fixture(scope="module")
def api(
    registry: Registry, serve_store: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`rakuten serve` on the registry and a SQLite store, checking its alias every second."""
    root = tmp_path_factory.mktemp("serve")
    port = free_port()
    environ = {
        **os.environ,
        "RAKUTEN_MLFLOW_TRACKING_URI": registry.uri,
        "RAKUTEN_DATABASE_URL": serve_store,
        "RAKUTEN_API_REFRESH_SECONDS": "1",
        "RAKUTEN_API_KEY_SECRET": API_KEY_SECRET,
    }
    command = [str(Path(sys.executable).parent / "rakuten"), "serve", "--port", str(port)]
    log = root / "serve.log"
    with started(command, log, environ) as process:
        server = Server(process, f"http://127.0.0.1:{port}", log)
        wait_until_healthy(server, "/ready")
        yield server


def test_rakuten_serve_answers_concurrent_clients_and_follows_a_promotion(
    api: Server, registry: Registry, key: str
) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: _call(f"{api.url}/predict", {"products": PRODUCTS}, key), range(16))
        )
    assert all(a["predictions"] == answers[0]["predictions"] for a in answers)
    assert answers[0]["model"]["version"] == "1"

    client = tracking_client(registry.uri)
    validate(client, registry.paths, load_params(registry.params_file).gate, version="2")
    promote(client, "auto", version="2", automatic=True, by="test")
    try:
        deadline = time.monotonic() + 60
        while _call(f"{api.url}/model", key=key)["version"] != "2":
            assert time.monotonic() < deadline, api.log.read_text()[-3000:]
            time.sleep(0.5)
        answer = _call(f"{api.url}/predict", {"products": PRODUCTS}, key)
        assert answer["model"]["version"] == "2"
    finally:
        rollback(client, by="test", reason="the test puts version 1 back")
    assert "serving rakuten-product-classifier v2 (@champion), was v1" in api.log.read_text()


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_scrapes_the_api_and_answers_every_dashboard_query(
    api: Server, key: str, tmp_path: Path
) -> None:
    # The stack's own scrape job for the API, pointed at this server and scraping every second.
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rakuten-api"]
    job["static_configs"] = [{"targets": [api.url.removeprefix("http://")]}]
    job["scrape_interval"] = "1s"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": [job]}))
    port = free_port()
    command = [
        "prometheus",
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with started(command, tmp_path / "prometheus.log", dict(os.environ)) as process:
        prometheus = wait_until_healthy(
            Server(process, f"http://127.0.0.1:{port}", tmp_path / "prometheus.log"), "/-/ready"
        )

        def query(expr: str) -> list[dict[str, Any]]:
            url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
            answer = _call(url)
            assert answer["status"] == "success", answer
            result: list[dict[str, Any]] = answer["data"]["result"]
            return result

        # Traffic spread over several scrapes, so that rates have samples on both sides.
        deadline = time.monotonic() + 60
        while not query('up{job="rakuten-api"} == 1'):
            assert time.monotonic() < deadline, "Prometheus never scraped the API"
            time.sleep(0.5)
        for _ in range(4):
            _call(f"{api.url}/predict", {"products": PRODUCTS}, key)
            with pytest.raises(urllib.error.HTTPError, match="422"):
                _call(f"{api.url}/predict", {"products": []}, key)
            time.sleep(1.5)

        dashboard = json.loads(
            (ROOT / "monitoring" / "grafana" / "dashboards" / "rakuten-api.json").read_text()
        )
        grafana = {"$__range": "5m", "$__rate_interval": "1m"}
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in grafana.items():
                    expr = expr.replace(variable, value)
                assert query(expr), f"{panel['title']}: no data for {expr}"
