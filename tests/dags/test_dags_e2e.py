"""Both DAGs end to end on synthetic data, with a real `mlflow server` and a real PostgreSQL store.

The DAGs run in process (`airflow dags test`, what `make run` does), each task running the
`rakuten` CLI of the project environment, in order: a first training run promotes a champion and
publishes its predictions; a second one finds nothing changed and skips training; a forced run on
a small sample fails the gate, which leaves promote skipped with its reason; the batch DAG then
scores new listings with the champion and shadow-scores with the challenger. Last, a running
`airflow standalone` takes a run of the batch DAG through its REST API.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from sqlalchemy import select

from src.db.engine import make_engine
from src.db.migrate import upgrade
from src.db.models import ModelVersion, PredictionBatch
from src.models.packaged import MODEL_NAME
from tests.dags.conftest import (
    airflow_environment,
    latest_run_id,
    run_airflow,
    task_states,
)
from tests.db.postgres import fresh_database
from tests.servers import Server, free_port, started_mlflow_server, stop, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

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
NEW_DAY = date.today() + timedelta(days=3)  # a later day than the training runs


@dataclass(frozen=True)
class Deployment:
    """An embedded deployment: Airflow's home and environment, the registry, the store."""

    root: Path
    environment: dict[str, str]
    tracking_uri: str
    store_url: str

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def aliases(self) -> dict[str, str]:
        return dict(self.client().get_registered_model(MODEL_NAME).aliases)


@pytest.fixture(scope="module")
def deployment(
    airflow_bin: Path,
    postgres_server: str,
    mlflow_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """Airflow (SQLite metadata), a real MLflow server and a migrated PostgreSQL store."""
    root = tmp_path_factory.mktemp("deployment")
    (root / "mlflow").mkdir()
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(PARAMS))
    with (
        started_mlflow_server(root / "mlflow", mlflow_template) as mlflow_server,
        fresh_database(postgres_server) as store_url,
    ):
        upgrade(store_url)
        settings = {
            "RAKUTEN_DATA_SOURCE": "synthetic",
            "RAKUTEN_DATA_ROOT": str(root / "data"),
            "RAKUTEN_MODELS_DIR": str(root / "models"),
            "RAKUTEN_REPORTS_DIR": str(root / "reports"),
            "RAKUTEN_PARAMS_FILE": str(params_file),
            "RAKUTEN_MLFLOW_TRACKING_URI": wait_until_healthy(mlflow_server),
            "RAKUTEN_DATABASE_URL": store_url,
        }
        environment = airflow_environment(root / "airflow", settings)
        migrated = run_airflow(environment, "db", "migrate")
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        yield Deployment(root, environment, mlflow_server.url, store_url)


def _dag_test(deployment: Deployment, dag_id: str, *arguments: str) -> tuple[dict[str, str], str]:
    """`airflow dags test DAG_ID ARGUMENTS`: the states of its tasks, and its tasks' logs."""
    result = run_airflow(deployment.environment, "dags", "test", dag_id, *arguments)
    run_id = latest_run_id(deployment.environment, dag_id)
    states = task_states(deployment.environment, dag_id, run_id)
    assert result.returncode == 0, (states, result.stdout[-6000:])
    return states, result.stdout


def _batches(store_url: str) -> list[tuple[date, str, str | None, int]]:
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


def test_a_first_run_trains_promotes_a_champion_and_publishes_its_predictions(
    deployment: Deployment,
) -> None:
    states, _ = _dag_test(deployment, "rakuten_training")
    assert set(states.values()) == {"success"}, states
    assert {"train_cpu[0]", "train_gpu[0]"} <= set(states)  # one mapped task per branch
    assert deployment.aliases() == {"champion": "1"}
    test_rows = PARAMS["synthetic"]["test_rows"]
    [(_, version, alias, count)] = _batches(deployment.store_url)
    assert (version, alias, count) == ("1", "champion", test_rows)
    published = list((deployment.root / "data" / "predictions").glob("*/*.parquet"))
    assert len(published) == 1 and len(pd.read_parquet(published[0])) == test_rows


def test_unchanged_data_and_params_skip_training_and_say_why(deployment: Deployment) -> None:
    states, logs = _dag_test(deployment, "rakuten_training")
    assert states["changes"] == "skipped"
    trained = ("train_cpu", "train_gpu", "fuse", "evaluate", "register", "gate", "promote")
    assert all(states[task] == "skipped" for task in trained), states
    assert states["batch_predict"] == "success"
    assert "are unchanged: training skipped" in logs
    assert deployment.aliases() == {"champion": "1"}


def test_a_challenger_that_fails_the_gate_is_not_promoted_and_the_log_says_why(
    deployment: Deployment,
) -> None:
    conf = {"force": True, "sample_rows": 60, "branches": ["text_tfidf"]}
    states, logs = _dag_test(deployment, "rakuten_training", "--conf", json.dumps(conf))
    assert states["changes"] == states["register"] == states["gate"] == "success"
    assert "train_gpu" not in states or states["train_gpu"] == "skipped"  # no neural branch
    assert states["promote"] == "skipped" and states["batch_predict"] == "success"
    assert deployment.aliases() == {"champion": "1", "challenger": "2"}
    tags = deployment.client().get_model_version(MODEL_NAME, "2").tags
    assert tags["gate.decision"] == "failed"
    assert f"version 2 did not pass the gate ({tags['gate.reasons']})" in logs


def test_the_batch_dag_scores_new_listings_and_shadow_scores_with_the_challenger(
    deployment: Deployment,
) -> None:
    incoming = deployment.root / "data" / "incoming"
    incoming.mkdir()
    new = pd.DataFrame(
        {
            "designation": ["Lot de 3 romans policiers", "Tondeuse thermique autotractée"],
            "description": ["", "<p>Moteur 140 cm3</p>"],
            "productid": [990_000_001, 990_000_002],
            "imageid": [880_000_001, 880_000_002],
        }
    )
    new.to_csv(incoming / "new-products.csv")
    states, logs = _dag_test(deployment, "rakuten_batch_predict", NEW_DAY.isoformat())
    # Two new listings are too few to speak of drift: the loop asks for no retraining.
    loop = {"retrain", "training_request", "trigger_training"}
    assert {state for task, state in states.items() if task not in loop} == {"success"}, states
    assert {states[task] for task in loop} == {"skipped"}, states
    on_new_day = [b for b in _batches(deployment.store_url) if b[0] == NEW_DAY]
    test_rows = PARAMS["synthetic"]["test_rows"]
    # The champion scores only what it has not scored yet; the challenger, new, scores it all.
    assert sorted(on_new_day) == [
        (NEW_DAY, "1", "champion", 2),
        (NEW_DAY, "2", "challenger", test_rows + 2),
    ]
    assert '"common": 2' in logs  # the agreement task's summary


@pytest.fixture
def standalone(deployment: Deployment, airflow_bin: Path) -> Iterator[Server]:
    """`airflow standalone` on the deployment, its API on a free port; stopped afterwards."""
    port = free_port()
    environment = {
        **deployment.environment,
        "AIRFLOW__API__PORT": str(port),
        # Where the executor's task processes report: the API server, on that port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    log = deployment.root / "standalone.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(airflow_bin / "airflow"), "standalone"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Server(process, f"http://127.0.0.1:{port}", log)
    finally:
        stop(process)


def _api(
    url: str, token: str | None = None, body: dict[str, Any] | None = None, method: str = "GET"
) -> Any:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_run_triggered_through_the_rest_api_of_airflow_standalone_succeeds(
    deployment: Deployment, standalone: Server
) -> None:
    wait_until_healthy(standalone, "/api/v2/monitor/health")
    passwords = deployment.root / "airflow" / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + 120
    while not passwords.is_file() and time.monotonic() < deadline:
        time.sleep(1)
    password = json.loads(passwords.read_text())["admin"]
    token = _api(
        f"{standalone.url}/auth/token",
        body={"username": "admin", "password": password},
        method="POST",
    )["access_token"]
    dag = f"{standalone.url}/api/v2/dags/rakuten_batch_predict"
    deadline = time.monotonic() + 120
    while True:  # the dag-processor parses the DAG files first
        try:
            _api(dag, token)
            break
        except urllib.error.HTTPError as error:
            if error.code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(2)
    _api(dag, token, {"is_paused": False}, "PATCH")
    # The scheduler starts no run whose logical date is in the future.
    day = date.today() - timedelta(days=7)
    run = _api(f"{dag}/dagRuns", token, {"logical_date": f"{day.isoformat()}T00:00:00Z"}, "POST")
    deadline = time.monotonic() + 600
    state = run["state"]
    while state not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run {run['dag_run_id']} still {state}"
        time.sleep(3)
        state = _api(f"{dag}/dagRuns/{run['dag_run_id']}", token)["state"]
    assert state == "success", standalone.log.read_text(errors="replace")[-5000:]
    # Everything was scored on other days: the champion's batch of that day is empty.
    assert (day, "1", "champion", 0) in _batches(deployment.store_url)
