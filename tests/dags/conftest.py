"""Airflow for the DAG tests: the pinned Airflow environment (.venv-airflow) on this project's DAGs.

Airflow and the project live in two environments (DESIGN §4): the tests, in the project's, run
Airflow's CLI and scripts as subprocesses, with an AIRFLOW_HOME of their own. `standalone` is
what `make airflow` starts, once per session: `airflow standalone` on free ports of 127.0.0.1,
with a real `mlflow server`, a PostgreSQL predictions store and a real Pushgateway, on small
synthetic data.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from sqlalchemy import select

from src.db.engine import make_engine
from src.db.migrate import upgrade
from src.db.models import ModelVersion, PredictionBatch
from src.models.packaged import MODEL_NAME
from tests.db.postgres import fresh_database
from tests.servers import Server, free_port, started, started_mlflow_server, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
PROJECT_BIN = ROOT / ".venv" / "bin"
DAGS = ROOT / "dags"

Airflow = Callable[..., subprocess.CompletedProcess[str]]

# ML parameters small enough for a pipeline run of a few minutes on 2 cores.
PARAMS = {
    "synthetic": {"rows": 400, "test_rows": 60, "images": True, "image_size": 32, "seed": 11},
    "train": {"branches": ["text_tfidf", "text_cnn"], "seed": 0},
    "text_tfidf": {"trials": 0, "max_features": 5000, "n_jobs": 1},
    "text_cnn": {"epochs": 2, "vocab_size": 3000, "sequence_length": 32, "filters": 32},
    "fusion": {"weight_step": 0.5},
    "gate": {
        "min_weighted_f1": 0.05,
        "tolerance": 0.02,
        "per_class_f1_floor": 0.0,
        "bootstrap_samples": 200,
    },
}


@pytest.fixture(scope="session")
def airflow_bin() -> Path:
    """The Airflow environment's bin/ (`make airflow-env` builds it)."""
    if not (AIRFLOW_BIN / "airflow").is_file():
        pytest.skip(f"no Airflow environment at {AIRFLOW_BIN.parent}: run `make airflow-env`")
    return AIRFLOW_BIN


def airflow_environment(home: Path, settings: dict[str, str]) -> dict[str, str]:
    """What `make run` gives Airflow: its home, the DAGs, and `rakuten` of .venv on PATH."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "RAKUTEN_", "MLFLOW_", "VIRTUAL_ENV"))
    }
    return {
        **inherited,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "PATH": f"{AIRFLOW_BIN}:{PROJECT_BIN}:{os.environ['PATH']}",
        "RAKUTEN_HOME": str(ROOT),
        **settings,
    }


def run_airflow(
    environment: dict[str, str], *arguments: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`airflow ARGUMENTS` in `environment`; its output is kept for the assertion messages."""
    return subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _json_rows(stdout: str) -> list[dict[str, Any]]:
    """The JSON list an `airflow ... -o json` command prints among its log lines."""
    lines = [line for line in stdout.splitlines() if line.startswith(("[{", "[]"))]
    assert lines, f"no JSON list in:\n{stdout[-3000:]}"
    rows: list[dict[str, Any]] = json.loads(lines[-1])
    return rows


def task_states(environment: dict[str, str], dag_id: str, run_id: str) -> dict[str, str]:
    """task_id (with `[map index]` for mapped ones) -> state, of one DAG run."""
    result = run_airflow(environment, "tasks", "states-for-dag-run", dag_id, run_id, "-o", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _json_rows(result.stdout)
    states = {}
    for row in rows:
        value = row.get("map_index")
        index = -1 if value in (None, "") else int(value)
        name = row["task_id"] if index < 0 else f"{row['task_id']}[{index}]"
        states[name] = row["state"]
    return states


def latest_run_id(environment: dict[str, str], dag_id: str) -> str:
    """The run id of the DAG's newest run."""
    result = run_airflow(environment, "dags", "list-runs", dag_id, "-o", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _json_rows(result.stdout)
    return str(max(runs, key=lambda run: run["start_date"] or "")["run_id"])


def batches(store_url: str) -> list[tuple[date, str, str | None, int]]:
    """(day, model version, alias, predictions) of each batch in the store, oldest first."""
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    PredictionBatch.logical_date,
                    ModelVersion.version,
                    PredictionBatch.alias,
                    PredictionBatch.prediction_count,
                )
                .join(ModelVersion, ModelVersion.id == PredictionBatch.model_version_id)
                .order_by(PredictionBatch.id)
            ).all()
    finally:
        engine.dispose()
    return [tuple(row) for row in rows]


def deployment_settings(root: Path, tracking_uri: str, store_url: str) -> dict[str, str]:
    """The tasks' `RAKUTEN_*` settings of a test deployment under `root`, on PARAMS."""
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(PARAMS))
    return {
        "RAKUTEN_DATA_SOURCE": "synthetic",
        "RAKUTEN_DATA_ROOT": str(root / "data"),
        "RAKUTEN_MODELS_DIR": str(root / "models"),
        "RAKUTEN_REPORTS_DIR": str(root / "reports"),
        "RAKUTEN_PARAMS_FILE": str(params_file),
        "RAKUTEN_MLFLOW_TRACKING_URI": tracking_uri,
        "RAKUTEN_DATABASE_URL": store_url,
    }


def api(
    url: str, token: str | None = None, body: dict[str, Any] | None = None, method: str = "GET"
) -> Any:
    """One call of a JSON REST API (Airflow's), with a bearer token."""
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class Standalone:
    """A running `airflow standalone` with its MLflow server and predictions store."""

    server: Server
    root: Path
    environment: dict[str, str]
    password: str
    token: str
    tracking_uri: str
    store_url: str

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, path: str, body: dict[str, Any] | None = None, method: str = "GET") -> Any:
        """Airflow's REST API (`/api/v2` + path) as the admin."""
        return api(f"{self.url}/api/v2{path}", self.token, body, method)

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def aliases(self) -> dict[str, str]:
        return dict(self.client().get_registered_model(MODEL_NAME).aliases)

    def wait_for_run(self, dag_id: str, run_id: str, seconds: float = 1800) -> dict[str, Any]:
        """The DAG run once it has finished; the test fails with Airflow's log if it does not."""
        deadline = time.monotonic() + seconds
        state = "unknown"
        while True:
            try:
                run: dict[str, Any] = self.api(f"/dags/{dag_id}/dagRuns/{run_id}")
                state = run["state"]
                if state in ("success", "failed"):
                    return run
            except urllib.error.HTTPError as error:
                if error.code < 500:
                    raise
            except OSError:  # the API server too busy to answer in time: ask again
                pass
            if time.monotonic() > deadline:
                tail = self.server.log.read_text(errors="replace")[-5000:]
                pytest.fail(f"{dag_id} run {run_id} still {state}:\n{tail}")
            time.sleep(3)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """task_id (with `[map index]` for mapped ones) -> state, through the REST API."""
        rows = self.api(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {
            row["task_id"] if row["map_index"] < 0 else f"{row['task_id']}[{row['map_index']}]": (
                row["state"]
            )
            for row in rows
        }


@pytest.fixture(scope="session")
def standalone(
    airflow_bin: Path,
    mlflow_template: Path,
    postgres_server: str,
    pushgateway: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Standalone]:
    """`make airflow` for the tests: `airflow standalone` on free ports of 127.0.0.1, signed in,
    its tasks on a PostgreSQL store and pushing to the session's Pushgateway."""
    root = tmp_path_factory.mktemp("standalone")
    (root / "mlflow").mkdir()
    with (
        started_mlflow_server(root / "mlflow", mlflow_template) as mlflow_server,
        fresh_database(postgres_server) as store_url,
    ):
        upgrade(store_url)
        port = free_port()
        environment = {
            **airflow_environment(
                root / "airflow", deployment_settings(root, mlflow_server.url, store_url)
            ),
            "RAKUTEN_PUSHGATEWAY_URL": pushgateway,
            "AIRFLOW__API__PORT": str(port),
            # Where the executor's task processes report: the API server, on that port.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            # The two log servers Airflow binds to every interface (docs/operations.md).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        for command in (["db", "migrate"], ["pools", "set", "gpu", "1", "one slot per GPU"]):
            result = run_airflow(environment, *command)
            assert result.returncode == 0, result.stderr[-3000:]
        airflow = [str(airflow_bin / "airflow"), "standalone"]
        with started(airflow, root / "standalone.log", environment) as process:
            server = Server(process, f"http://127.0.0.1:{port}", root / "standalone.log")
            # Four Airflow processes start at once: minutes on a busy 2-core machine.
            wait_until_healthy(server, "/api/v2/monitor/health", seconds=600)
            passwords = root / "airflow" / "simple_auth_manager_passwords.json.generated"
            deadline = time.monotonic() + 120
            while not passwords.is_file() and time.monotonic() < deadline:
                time.sleep(1)
            password = json.loads(passwords.read_text())["admin"]
            token = api(
                f"{server.url}/auth/token",
                body={"username": "admin", "password": password},
                method="POST",
            )["access_token"]
            running = Standalone(
                server,
                root,
                environment,
                password,
                token,
                wait_until_healthy(mlflow_server),
                store_url,
            )
            _wait_for_dags(running, ["rakuten_training", "rakuten_batch_predict"])
            yield running


def _wait_for_dags(standalone: Standalone, dag_ids: list[str], seconds: float = 180) -> None:
    """Wait until the dag-processor has parsed the DAG files."""
    deadline = time.monotonic() + seconds
    for dag_id in dag_ids:
        while True:
            try:
                standalone.api(f"/dags/{dag_id}")
                break
            except urllib.error.HTTPError as error:
                if error.code != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(2)
