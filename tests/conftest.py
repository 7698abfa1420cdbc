"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the project (../shared/data); tests skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared is not beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def rakuten_sample(shared_data: Path) -> Path:
    """357 real labelled train rows and 499 test rows in the hub's layout."""
    return shared_data / "rakuten_sample"
