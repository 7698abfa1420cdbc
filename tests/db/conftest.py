"""Engines and `store_batch` on the migrated stores of tests/conftest.py (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, delete

from src.db.engine import make_engine
from src.db.models import Base
from src.db.store import StoredBatch, store_batch
from tests.db.batches import CHAMPION, DAY, StoreFn


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """An engine on the migrated store; every row is deleted after the test."""
    engine = make_engine(store_url)
    try:
        yield engine
    finally:
        with engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(delete(table))
        engine.dispose()


@pytest.fixture
def store(engine: Engine, tmp_path: Path) -> StoreFn:
    """`store_batch` on the test's store, champion on DAY, Parquet under tmp_path, by default."""

    def call(predictions: pd.DataFrame, **options: object) -> StoredBatch:
        arguments: dict[str, object] = {
            "model": CHAMPION,
            "dataset_version": "raw-v1",
            "logical_date": DAY,
            "predictions_dir": tmp_path / "predictions",
            **options,
        }
        return store_batch(engine, predictions, **arguments)

    return call
