"""Fixtures shared by the whole suite: the real data, the predictions store's databases, and MLflow
backends (the embedded SQLite default and a real `mlflow server` on a free port of 127.0.0.1), and
a real Pushgateway.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, superuser `postgres`), there on the
development machines and in CI; each test module gets its own database, dropped afterwards
(also after a failure), and tests skip with the reason where no server answers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import psycopg
import pytest
from mlflow import MlflowClient
from selenium import webdriver

from src.db.migrate import upgrade
from src.registry.tracking import tracking_client
from tests import browser
from tests.db.postgres import SERVER_DSN, fresh_database
from tests.servers import Server, free_port, started, started_mlflow_server, wait_until_healthy

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


@pytest.fixture(autouse=True)
def _restore_mlflow_uris() -> Iterator[None]:
    """A test that points MLflow's process default somewhere puts it back afterwards."""
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


@pytest.fixture
def embedded_uri(tmp_path: Path, mlflow_template: Path) -> str:
    """The embedded default in a tmp dir: a fresh SQLite backend, artifacts beside it."""
    database = tmp_path / "mlruns" / "mlflow.db"
    database.parent.mkdir()
    shutil.copy(mlflow_template, database)
    return f"sqlite:///{database}"


@pytest.fixture
def embedded(embedded_uri: str) -> MlflowClient:
    """A client on a fresh embedded backend."""
    return tracking_client(embedded_uri)


@pytest.fixture(scope="session")
def mlflow_server_process(
    tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path
) -> Iterator[Server]:
    """Start a real `mlflow server` (SQLite backend, proxied local artifacts) without waiting
    for it: it boots in ~30 s, which a fixture can spend on other work."""
    with started_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), mlflow_template) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_process: Server) -> str:
    """The URL of the real `mlflow server`, once it answers /health."""
    return wait_until_healthy(mlflow_server_process)


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Pushgateway (Debian's prometheus-pushgateway) on a free port of 127.0.0.1."""
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway not installed (Debian's package; .ci/run installs it)")
    root = tmp_path_factory.mktemp("pushgateway")
    port = free_port()
    # Debian's build persists to /var/lib/prometheus by default: keep the tests' metrics apart.
    command = [
        binary,
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={root / 'pushgateway.metrics'}",
    ]
    with started(command, root / "pushgateway.log", dict(os.environ)) as process:
        server = Server(process, f"http://127.0.0.1:{port}", root / "pushgateway.log")
        yield wait_until_healthy(server, "/-/ready")


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the session's page tests (tests/browser.py); skip without one."""
    if reason := browser.missing():
        pytest.skip(reason)
    with browser.chromium() as driver:
        yield driver
