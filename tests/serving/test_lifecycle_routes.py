"""The model's lifecycle over HTTP, on the real registry: list, gate (a background job), promote
(refused unless the gate passed, as the CLI refuses), roll back and the champion's history."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from src.registry.lifecycle import CHAMPION, champion_history
from src.registry.tracking import tracking_client
from src.serving.app import create_app
from tests.serving.conftest import api_settings, new_key
from tests.trained_registry import TEXT_PARAMS, Registry, kept_as_found, trained_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry of its own (version 2 @challenger, never gated): this test gates and moves the
    aliases, which the package's shared registry has seen other tests do already."""
    return trained_registry(tmp_path_factory.mktemp("lifecycle-routes"), TEXT_PARAMS)


@pytest.fixture
def admin(registry: Registry, store_url: str) -> Iterator[TestClient]:
    """The API, called with an admin key; the registry is left as the test found it."""
    with (
        kept_as_found(registry),
        TestClient(create_app(api_settings(registry, store_url))) as client,
    ):
        client.headers["X-API-Key"] = new_key(store_url, "admin")
        yield client


def _finished(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while (job := client.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


def test_an_admin_gates_promotes_and_rolls_back_over_http(
    admin: TestClient, registry: Registry
) -> None:
    listed = admin.get("/models")
    assert listed.status_code == 200, listed.text
    versions = {v["version"]: v for v in listed.json()}
    assert versions["1"]["aliases"] == [CHAMPION] and versions["1"]["gate"]["decision"] == "passed"
    assert "test_weighted_f1" in versions["1"]["scores"]
    assert versions["1"]["lineage"]["data_version"]
    assert versions["2"]["aliases"] == ["challenger"]

    # Never validated: refused with the CLI's reason, the champion stays.
    refused = admin.post("/models/2/promote")
    assert refused.status_code == 409 and "did not pass the gate" in refused.json()["detail"]
    assert admin.post("/models/99/validate").status_code == 404

    started = admin.post("/models/2/validate")
    assert started.status_code == 202 and started.json()["status"] in ("queued", "running")
    job = _finished(admin, started.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["version"] == "2" and job["result"]["decision"] == "passed"
    assert job["result"]["champion_version"] == "1"

    try:
        promoted = admin.post("/models/2/promote")
        assert promoted.status_code == 200 and promoted.json()["promoted"] is True
        again = admin.post("/models/2/promote").json()
        assert again["promoted"] is False and "already champion" in again["reason"]
        last = admin.get("/models/history").json()[-1]
        assert last["action"] == "promote" and last["version"] == "2"
        assert last["by"].startswith("test (API key ")
    finally:
        back = admin.post("/models/rollback", json={"reason": "the test puts version 1 back"})
    assert back.status_code == 200 and back.json()["version"] == "1"
    history = champion_history(tracking_client(registry.uri))
    assert history[-1]["reason"] == "the test puts version 1 back"
    assert admin.get("/jobs/unknown").status_code == 404


def test_rolling_back_the_first_champion_is_refused_with_the_reason(admin: TestClient) -> None:
    refused = admin.post("/models/rollback")
    assert refused.status_code == 409
    assert "first champion" in refused.json()["detail"] or "audit log" in refused.json()["detail"]
