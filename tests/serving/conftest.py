"""The registry the API tests serve from (a text model trained once for the package), and the
settings and API keys they call it with."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from src.config import Settings
from src.db.api_keys import create_key
from src.db.engine import make_engine
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
