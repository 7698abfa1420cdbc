"""Schemathesis over the API's OpenAPI document, called with an admin key, with valid and invalid
requests and all its checks: no answer is a server error, every status code is one the document
lists, and every answer conforms to it (headers, body schema).

The lifecycle's moves (validate, promote, roll back), the uploads and the training runs change
the shared registry or need Airflow: their own tests drive them; every other route is fuzzed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from src.serving.app import create_app
from tests.serving.conftest import api_settings, new_key
from tests.trained_registry import Registry

pytestmark = pytest.mark.slow
EXAMPLES = 25  # per operation


@pytest.fixture(scope="module")
def started(registry: Registry, store_url: str) -> Iterator[tuple[Any, str]]:
    """The API started (lifespan run, model loaded) and an admin key."""
    app = create_app(api_settings(registry, store_url))
    with TestClient(app) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield app, new_key(store_url, "admin", "schemathesis")


def _sends_a_file(case: Any) -> bool:
    """Whether a generated case sends a file whose content the schema cannot describe: a photo
    (the products of /predict, or the form's file) or a labels CSV (POST /labels)."""
    if case.path == "/labels":
        return True
    body = case.body if isinstance(case.body, dict) else {}
    products = body.get("products") if isinstance(body.get("products"), list) else []
    return "photo" in body or any(isinstance(p, dict) and "image" in p for p in products)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_and_every_answer_conforms(
    started: tuple[Any, str], mode: GenerationMode
) -> None:
    """All of schemathesis's checks, on valid and on invalid requests."""
    app, key = started
    schema = (
        schemathesis.openapi.from_asgi("/openapi.json", app)
        .exclude(method="POST", path_regex=r"^/(models|datasets|training-runs)")
        .exclude(path_regex=r"^/training-runs")
    )
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: Any) -> None:
            # A photo is base64 of a *readable JPEG or PNG*, a labels file a readable CSV, which
            # JSON Schema cannot say: random bytes that are neither are refused (422, test_app.py
            # and test_labels.py), as they should be.
            case.call_and_validate(
                headers={"X-API-Key": key},
                excluded_checks=[positive_data_acceptance] if _sends_a_file(case) else [],
            )

        try:
            conforms()
        except Unsatisfiable:  # no input of the operation can be invalid (GET /health)
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        tested.append(operation.label)
    assert {"POST /predict", "POST /predict/upload", "GET /models", "GET /datasets"} <= set(tested)
