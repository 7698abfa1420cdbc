"""MLflow backends for the tracking and lifecycle tests: the embedded SQLite default and a real
`mlflow server` process on a free port of 127.0.0.1, stopped at the end even after a failure."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from src.models.tracking import tracking_client
from tests.servers import Server, started_mlflow_server, wait_until_healthy


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
