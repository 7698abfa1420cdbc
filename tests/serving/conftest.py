"""The registry the API tests serve from: a text model trained once for the package."""

from __future__ import annotations

import pytest

from tests.trained_registry import TEXT_PARAMS, Registry, trained_registry


@pytest.fixture(scope="package")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """@champion is version 1, version 2 is the same model registered again (@challenger until
    a test promotes it); a test that promotes a version rolls @champion back to version 1."""
    return trained_registry(tmp_path_factory.mktemp("serving"), TEXT_PARAMS)
