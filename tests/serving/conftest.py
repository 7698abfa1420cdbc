"""The registry the API tests serve from (a text model trained once for the package), and the
settings and API keys they call it with, and an admin client for the upload tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import delete

from src.config import Settings
from src.db.api_keys import create_key
from src.db.engine import make_engine
from src.db.models import Base
from src.serving.app import create_app
from tests.trained_registry import TEXT_PARAMS, Registry, trained_registry

API_KEY_SECRET = "a-test-secret-that-is-long-enough-for-the-hmac-of-keys"


@pytest.fixture(scope="package")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """@champion is version 1, version 2 is the same model registered again (@challenger until
    a test promotes it); a test that promotes a version rolls @champion back to version 1."""
    return trained_registry(tmp_path_factory.mktemp("serving"), TEXT_PARAMS)


def api_settings(registry: Registry, store_url: str, **changes: Any) -> Settings:
    """The API's settings on `registry` and the store, with the test's key secret."""
    settings = Settings(
        mlflow_tracking_uri=registry.uri,
        database_url=store_url,
        api_key_secret=SecretStr(API_KEY_SECRET),
        data_root=registry.paths.raw_dir.parent,
        models_dir=registry.paths.models_dir,
        reports_dir=registry.paths.reports_dir,
        params_file=registry.params_file,
    )
    return settings.model_copy(update=changes)


def new_key(store_url: str, scope: str, name: str = "test") -> str:
    """A new API key with `scope`, made as `rakuten api-key create` makes one."""
    engine = make_engine(store_url)
    try:
        return create_key(engine, name, [scope], API_KEY_SECRET.encode()).key
    finally:
        engine.dispose()


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    """The test's incoming folder."""
    return tmp_path / "incoming"


@pytest.fixture
def uploader(registry: Registry, store_url: str, incoming: Path) -> Iterator[TestClient]:
    """The API with an admin key, its uploads under the test's incoming folder; the store is
    emptied afterwards."""
    settings = api_settings(registry, store_url, incoming_dir=incoming)
    with TestClient(create_app(settings)) as client:
        client.headers["X-API-Key"] = new_key(store_url, "admin")
        yield client
    engine = make_engine(store_url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    engine.dispose()
