"""Schemathesis over the API's OpenAPI document, called with an admin key: no answer is a server
error, and every answer conforms to the document (status, headers, body schema).

The lifecycle's moves (validate, promote, roll back), the uploads and the training runs change
the shared registry or need Airflow: their own tests drive them; every other route is fuzzed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from src.serving.app import create_app
from tests.serving.conftest import api_settings, new_key
from tests.trained_registry import Registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def admin_key(store_url: str) -> str:
    """A key that may call every route."""
    return new_key(store_url, "admin", "schemathesis")


@pytest.fixture(scope="module")
def api_schema(registry: Registry, store_url: str) -> Iterator[Any]:
    """The API's document, on an app started (lifespan run, model loaded) for the module."""
    app = create_app(api_settings(registry, store_url))
    with TestClient(app) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        yield schema.exclude(
            method="POST", path_regex=r"^/(models|datasets|training-runs)"
        ).exclude(path_regex=r"^/training-runs")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_error_and_every_answer_conforms(case: Any, admin_key: str) -> None:
    case.call_and_validate(headers={"X-API-Key": admin_key})
