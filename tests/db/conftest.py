"""Stores for the db tests: SQLite in a tmp file and a fresh PostgreSQL database, both migrated.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, superuser `postgres`), there on the
development machines and in CI; each test module gets its own database, dropped afterwards
(also after a failure), and tests skip with the reason where no server answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from sqlalchemy import Engine, delete

from src.db.engine import make_engine
from src.db.migrate import upgrade
from src.db.models import Base
from src.db.store import StoredBatch, store_batch
from tests.db.batches import CHAMPION, DAY, StoreFn
from tests.db.postgres import SERVER_DSN, fresh_database

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server's superuser URL (database `postgres`); skip if no server answers."""
    try:
        psycopg.connect(SERVER_DSN).close()
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL server on 127.0.0.1:5432 ({str(error).strip()})")
    return "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database for the test module: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'predictions.db'}"
        return
    with fresh_database(request.getfixturevalue("postgres_server")) as url:
        yield url


@pytest.fixture(scope="module")
def store_url(database_url: str) -> str:
    """The module's database, migrated to the newest revision."""
    upgrade(database_url)
    return database_url


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
