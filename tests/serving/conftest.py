"""The registry the API tests serve from: a text model trained once for the package."""

from __future__ import annotations

import pytest

from tests.registry import TEXT_PARAMS, Registry, trained_registry


@pytest.fixture(scope="package")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """@champion is version 1, @challenger version 2 (the same model registered again); a test
    that moves the aliases puts them back."""
    return trained_registry(tmp_path_factory.mktemp("serving"), TEXT_PARAMS)
