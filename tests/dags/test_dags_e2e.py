"""Both DAGs end to end on synthetic data, with a real `mlflow server` and a real PostgreSQL store.

The DAGs run in process (`airflow dags test`, what `make run` does), each task running the
`rakuten` CLI of the project environment, in order: a first training run promotes a champion and
publishes its predictions; a second one finds nothing changed and skips training; a forced run on
a small sample fails the gate, which leaves promote skipped with its reason; the batch DAG then
scores new listings with the champion and shadow-scores with the challenger. (A running
`airflow standalone`, its UI and REST API, is tested in test_standalone.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from src.db.migrate import upgrade
from src.models.packaged import MODEL_NAME
from tests.dags.conftest import (
    PARAMS,
    airflow_environment,
    batches,
    deployment_settings,
    latest_run_id,
    run_airflow,
    task_states,
)
from tests.db.postgres import fresh_database
from tests.servers import started_mlflow_server, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

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
    with (
        started_mlflow_server(root / "mlflow", mlflow_template) as mlflow_server,
        fresh_database(postgres_server) as store_url,
    ):
        upgrade(store_url)
        settings = deployment_settings(root, wait_until_healthy(mlflow_server), store_url)
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


def test_a_first_run_trains_promotes_a_champion_and_publishes_its_predictions(
    deployment: Deployment,
) -> None:
    states, _ = _dag_test(deployment, "rakuten_training")
    assert set(states.values()) == {"success"}, states
    assert {"train_cpu[0]", "train_gpu[0]"} <= set(states)  # one mapped task per branch
    assert deployment.aliases() == {"champion": "1"}
    test_rows = PARAMS["synthetic"]["test_rows"]
    [(_, version, alias, count)] = batches(deployment.store_url)
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
    on_new_day = [b for b in batches(deployment.store_url) if b[0] == NEW_DAY]
    test_rows = PARAMS["synthetic"]["test_rows"]
    # The champion scores only what it has not scored yet; the challenger, new, scores it all.
    assert sorted(on_new_day) == [
        (NEW_DAY, "1", "champion", 2),
        (NEW_DAY, "2", "challenger", test_rows + 2),
    ]
    assert '"common": 2' in logs  # the agreement task's summary
