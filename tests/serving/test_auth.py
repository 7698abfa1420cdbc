"""API keys: made and revoked by the CLI, stored as an HMAC, checked on every route but the open
ones (401 without a good key, 403 without the scope), cached, and recorded by id with each call."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import delete, event, select
from typer.testing import CliRunner

from src.cli.main import app as cli
from src.config import get_settings
from src.db.engine import make_engine
from src.db.models import ApiKey, Base
from src.errors import RakutenError
from src.serving.app import create_app
from tests.serving.conftest import API_KEY_SECRET, api_settings, new_key
from tests.trained_registry import Registry

ROOT = Path(__file__).resolve().parents[2]
# (method, path, body, scope needed); the lifecycle's moves are left to test_lifecycle_routes.py.
GUARDED: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/predict", {"products": [{"designation": "Lampe de chevet"}]}, "predict"),
    ("GET", "/model", None, "predict"),
    ("GET", "/products/1/prediction", None, "predict"),
    ("GET", "/models", None, "admin"),
    ("GET", "/models/history", None, "admin"),
    ("GET", "/jobs/nope", None, "admin"),
]
OPEN = ["/health", "/ready", "/metrics"]
# The routes that change something: refused before anything happens (their 2xx: their own tests).
ADMIN_MOVES = [
    ("POST", "/models/2/validate"),
    ("POST", "/models/2/promote"),
    ("POST", "/models/rollback"),
    ("POST", "/datasets"),
    ("POST", "/labels"),
    ("POST", "/training-runs"),
    ("GET", "/training-runs/some-run"),
]


@pytest.fixture
def store(store_url: str) -> Iterator[str]:
    """The module's store, emptied after the test."""
    yield store_url
    engine = make_engine(store_url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    engine.dispose()


@pytest.fixture
def client(registry: Registry, store: str) -> Iterator[TestClient]:
    """The API with keys on, its cache off (each call reads the key: revocation is immediate)."""
    settings = api_settings(registry, store, api_key_cache_seconds=0)
    with TestClient(create_app(settings)) as started:
        yield started


def _call(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None, **headers: str
) -> Any:
    return client.request(method, path, json=body, headers=headers)


def test_the_cli_makes_a_key_shown_once_lists_it_without_it_and_revokes_it(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", store)
    monkeypatch.setenv("RAKUTEN_API_KEY_SECRET", API_KEY_SECRET)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        made = runner.invoke(cli, ["api-key", "create", "--name", "catalogue", "--scope", "admin"])
        assert made.exit_code == 0, made.output
        created = json.loads(made.stdout.splitlines()[0])
        key = created["key"]
        assert len(key) >= 43 and created["prefix"] == key[:8]
        assert created["scopes"] == ["admin"] and created["revoked_at"] is None

        listed = runner.invoke(cli, ["api-key", "list"])
        assert listed.exit_code == 0 and key not in listed.stdout
        (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert row["id"] == created["id"] and row["name"] == "catalogue"

        engine = make_engine(store)
        with engine.connect() as connection:
            stored = connection.execute(select(ApiKey)).one()
        engine.dispose()
        assert key not in stored.digest and len(stored.digest) == 64  # an HMAC-SHA256, in hex

        revoked = runner.invoke(cli, ["api-key", "revoke", str(created["id"])])
        assert revoked.exit_code == 0 and json.loads(revoked.stdout)["revoked_at"] is not None
        unknown = runner.invoke(cli, ["api-key", "revoke", "999"])
        assert unknown.exit_code != 0 and "no API key 999" in str(unknown.exception)
        bad = runner.invoke(cli, ["api-key", "create", "--name", "x", "--scope", "root"])
        assert bad.exit_code != 0 and "scope root unknown" in str(bad.exception)
    finally:
        get_settings.cache_clear()


def test_no_key_is_made_or_checked_without_the_server_secret(
    registry: Registry, store: str
) -> None:
    with pytest.raises(RakutenError, match="RAKUTEN_API_KEY_SECRET must be set"):
        create_app(api_settings(registry, store, api_key_secret=None))


@pytest.mark.parametrize(("method", "path", "body", "scope"), GUARDED)
def test_each_guarded_route_answers_401_403_or_lets_in_by_scope(
    client: TestClient,
    store: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    scope: str,
) -> None:
    missing = _call(client, method, path, body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert _call(client, method, path, body, **{"X-API-Key": "not-a-key"}).status_code == 401
    revoked = new_key(store, "admin", "revoked")
    engine = make_engine(store)
    with engine.begin() as connection:
        connection.execute(ApiKey.__table__.update().values(revoked_at=ApiKey.created_at))
    engine.dispose()
    assert _call(client, method, path, body, **{"X-API-Key": revoked}).status_code == 401

    predict, admin = new_key(store, "predict"), new_key(store, "admin")
    by_predict = _call(client, method, path, body, **{"X-API-Key": predict})
    by_admin = _call(client, method, path, body, Authorization=f"Bearer {admin}")
    if scope == "admin":
        assert by_predict.status_code == 403
        assert "lacks the scope 'admin'" in by_predict.json()["detail"]
    else:
        assert by_predict.status_code not in (401, 403), by_predict.text
    assert by_admin.status_code not in (401, 403), by_admin.text  # admin may call everything


@pytest.mark.parametrize(("method", "path"), ADMIN_MOVES)
def test_each_admin_move_is_refused_without_a_key_or_with_a_predict_key(
    client: TestClient, store: str, method: str, path: str
) -> None:
    assert client.request(method, path).status_code == 401
    predict = {"X-API-Key": new_key(store, "predict")}
    refused = client.request(method, path, headers=predict)
    assert refused.status_code == 403 and "lacks the scope 'admin'" in refused.json()["detail"]


@pytest.mark.parametrize("path", OPEN)
def test_health_ready_and_metrics_stay_open(client: TestClient, path: str) -> None:
    assert client.get(path).status_code in (200, 503)  # /ready: 503 until the model is in


def test_a_known_key_costs_no_database_round_trip_per_request(
    registry: Registry, store: str
) -> None:
    key = new_key(store, "predict")
    app = create_app(api_settings(registry, store, api_key_cache_seconds=600))
    statements: list[str] = []
    engine = app.state.service.engine

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    with TestClient(app) as client:
        for _ in range(5):
            assert client.get("/health", headers={"X-API-Key": key}).status_code == 200
            assert client.get("/models/history", headers={"X-API-Key": key}).status_code == 403
    key_reads = [s for s in statements if "api_keys" in s]
    # One look-up and one write of the last use, for five calls.
    assert len([s for s in key_reads if s.lstrip().upper().startswith("SELECT")]) == 1
    assert len([s for s in key_reads if s.lstrip().upper().startswith("UPDATE")]) == 1
    engine_check = make_engine(store)
    with engine_check.connect() as connection:
        assert connection.execute(select(ApiKey.last_used_at)).scalar_one() is not None
    engine_check.dispose()


def test_a_revoked_key_is_refused_once_its_cache_period_is_over(
    registry: Registry, store: str
) -> None:
    key = new_key(store, "predict")
    settings = api_settings(registry, store, api_key_cache_seconds=0.5)
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": key}
        assert client.get("/model", headers=headers).status_code != 401
        engine = make_engine(store)
        with engine.begin() as connection:
            connection.execute(ApiKey.__table__.update().values(revoked_at=ApiKey.created_at))
        engine.dispose()
        time.sleep(0.6)
        assert client.get("/model", headers=headers).status_code == 401


def test_the_openapi_document_shows_the_security_schemes(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key (`rakuten api-key create`)",
    }
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert {"APIKeyHeader": []} in document["paths"]["/predict"]["post"]["security"]
    assert "security" not in document["paths"]["/health"]["get"]


def test_auth_off_lets_anyone_in_and_says_so_loudly(
    registry: Registry, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        app = create_app(api_settings(registry, store, api_auth="off", api_key_secret=None))
    assert "RAKUTEN_API_AUTH=off: NO API KEY IS CHECKED" in caplog.text
    with TestClient(app) as client:
        assert client.get("/models/history").status_code == 200


def test_the_compose_deployment_cannot_run_the_api_without_keys() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["api"]["environment"]
    # Written in the file, not read from the environment: no .env can turn keys off.
    assert environment["RAKUTEN_API_AUTH"] == "on"
    assert re.fullmatch(
        r"\$\{RAKUTEN_API_KEY_SECRET:\?[^}]+\}", environment["RAKUTEN_API_KEY_SECRET"]
    )


def test_a_store_that_is_down_cannot_check_keys_503(registry: Registry) -> None:
    nowhere = "postgresql+psycopg://rakuten@127.0.0.1:1/rakuten?connect_timeout=2"
    with TestClient(create_app(api_settings(registry, nowhere))) as client:
        refused = client.get("/model", headers={"X-API-Key": "anything-at-all"})
        assert refused.status_code == 503 and "cannot be checked" in refused.json()["detail"]
