"""Real servers that tests start: on a free port of 127.0.0.1, stopped even after a failure."""

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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_START_SECONDS = 180  # mlflow: ~30-50 s on the development machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def healthy(url: str, path: str = "/health") -> bool:
    """Whether `url` answers `path` with 200."""
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class Server:
    """A started server process, its URL and its log file."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path


@contextmanager
def started(
    command: list[str], log_path: Path, environ: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running in its own process group, its output in `log_path`; stopped when the
    block ends."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop(process)


@contextmanager
def started_mlflow_server(root: Path, template: Path) -> Iterator[Server]:
    """A real `mlflow server` (SQLite backend copied from `template`, proxied local artifacts
    under `root`), started without waiting for it; stopped when the block ends."""
    shutil.copy(template, root / "mlflow.db")
    port = free_port()
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
    with started(command, log_path, environ) as process:
        yield Server(process, f"http://127.0.0.1:{port}", log_path)


def wait_until_healthy(
    server: Server, path: str = "/health", seconds: float = SERVER_START_SECONDS
) -> str:
    """The server's URL once it answers `path`; the test fails with the server's log if not."""
    deadline = time.monotonic() + seconds
    while not healthy(server.url, path):
        if server.process.poll() is not None or time.monotonic() > deadline:
            tail = server.log.read_text(errors="replace")[-3000:]
            pytest.fail(f"server did not start (exit {server.process.returncode}):\n{tail}")
        time.sleep(0.5)
    return server.url


def stop(server: subprocess.Popen[bytes]) -> None:
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
