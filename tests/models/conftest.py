"""MLflow backends for the tracking and lifecycle tests: the embedded SQLite default and a real
`mlflow server` process on a free port of 127.0.0.1, stopped at the end even after a failure."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from src.models.tracking import tracking_client

SERVER_START_SECONDS = 180  # ~30-50 s on the development machine


@pytest.fixture(autouse=True)
def _restore_mlflow_uris() -> Iterator[None]:
    """A test that points MLflow's process default somewhere puts it back afterwards."""
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite database: creating one takes seconds, copying it none."""
    database = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    tracking_client(f"sqlite:///{database}").search_experiments()
    return database


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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class MlflowServer:
    """A started `mlflow server` process, its URL and its log file."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path


@pytest.fixture(scope="session")
def mlflow_server_process(
    tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path
) -> Iterator[MlflowServer]:
    """Start a real `mlflow server` (SQLite backend, proxied local artifacts) without waiting
    for it: it boots in ~30 s, which a fixture can spend on other work."""
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(mlflow_template, root / "mlflow.db")
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield MlflowServer(process, f"http://127.0.0.1:{port}", log_path)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_process: MlflowServer) -> str:
    """The URL of the real `mlflow server`, once it answers /health."""
    server = mlflow_server_process
    deadline = time.monotonic() + SERVER_START_SECONDS
    while not _healthy(server.url):
        if server.process.poll() is not None or time.monotonic() > deadline:
            tail = server.log.read_text(errors="replace")[-3000:]
            pytest.fail(f"mlflow server did not start (exit {server.process.returncode}):\n{tail}")
        time.sleep(0.5)
    return server.url


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group: politely, then for good."""
    for sent, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(server.pid, sent)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
