"""Fixtures shared by the whole suite: the real data, and the predictions store's databases.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, superuser `postgres`), there on the
development machines and in CI; each test module gets its own database, dropped afterwards
(also after a failure), and tests skip with the reason where no server answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from src.db.migrate import upgrade
from src.models.tracking import tracking_client
from tests.db.postgres import SERVER_DSN, fresh_database

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
BACKENDS = ["sqlite", "postgresql"]  # the predictions store's two backends


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


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite database: creating one takes seconds, copying it none."""
    database = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    tracking_client(f"sqlite:///{database}").search_experiments()
    return database
