"""The closed loop end to end: real Airflow (`airflow dags test`), a real `mlflow server`, the
real PostgreSQL store and a real Pushgateway, on synthetic data.

A training run makes a champion (with its reference profile). The batch DAG then scores, on one
day, new listings from the same catalogue: no drift and no retraining; on a later day, a shifted
catalogue (skewed classes, most descriptions gone): drift, and `rakuten_training` triggered once
with the reason, and a rerun of that day triggers nothing more. Late labels of the first day's
products give the champion's realised F1, stored and pushed. Last, the training DAG run with the
triggered run's conf records the reason on its MLflow run and registered version.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from sqlalchemy import select

from src.data.synth import Shift, synthesize
from src.db.engine import make_engine
from src.db.migrate import upgrade
from src.db.models import DriftReport, RealisedPerformance
from src.models.packaged import MODEL_NAME
from tests.dags.conftest import (
    _json_rows,
    airflow_environment,
    latest_run_id,
    run_airflow,
    task_states,
)
from tests.db.postgres import fresh_database
from tests.servers import started_mlflow_server, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PARAMS = {
    "synthetic": {"rows": 2000, "test_rows": 100, "images": False, "seed": 21},
    "train": {"branches": ["text_tfidf"], "seed": 0},
    "text_tfidf": {"trials": 0, "max_features": 5000, "n_jobs": 1},
    "fusion": {"weight_step": 0.5},
    "gate": {
        "min_weighted_f1": 0.05,
        "tolerance": 0.5,
        "per_class_f1_floor": 0.0,
        "bootstrap_samples": 200,
    },
}
SAME_DAY = date.today() + timedelta(days=3)
SHIFTED_DAY = SAME_DAY + timedelta(days=1)
TRIGGERED = f"retrain__{SHIFTED_DAY.isoformat()}"


@dataclass(frozen=True)
class Loop:
    """An embedded deployment: Airflow's environment, the registry, the store, the gateway."""

    root: Path
    environment: dict[str, str]
    tracking_uri: str
    store_url: str
    pushgateway: str

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


@pytest.fixture(scope="module")
def loop(
    airflow_bin: Path,
    postgres_server: str,
    mlflow_template: Path,
    pushgateway: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Loop]:
    """Airflow (SQLite metadata), a real MLflow server, a migrated PostgreSQL store."""
    root = tmp_path_factory.mktemp("loop")
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
            "RAKUTEN_PUSHGATEWAY_URL": pushgateway,
        }
        environment = airflow_environment(root / "airflow", settings)
        migrated = run_airflow(environment, "db", "migrate")
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        yield Loop(root, environment, mlflow_server.url, store_url, pushgateway)


def _dag_test(loop: Loop, dag_id: str, *arguments: str) -> tuple[dict[str, str], str]:
    # A DAG run is a dozen `rakuten` processes: minutes, more on a shared machine.
    result = run_airflow(loop.environment, "dags", "test", dag_id, *arguments, timeout=2400)
    run_id = latest_run_id(loop.environment, dag_id)
    states = task_states(loop.environment, dag_id, run_id)
    assert result.returncode == 0, (states, result.stdout[-6000:])
    return states, result.stdout


def _training_runs(loop: Loop) -> list[dict]:
    result = run_airflow(loop.environment, "dags", "list-runs", "rakuten_training", "-o", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    return _json_rows(result.stdout)


def _conf(loop: Loop, run: dict) -> dict:
    """A run's conf, from Airflow's metadata database (`dags list-runs` does not print it)."""
    with sqlite3.connect(loop.root / "airflow" / "airflow.db") as connection:
        [(conf,)] = connection.execute(
            "SELECT conf FROM dag_run WHERE dag_id = ? AND run_id = ?",
            (run["dag_id"], run["run_id"]),
        ).fetchall()
    return dict(json.loads(conf) if isinstance(conf, str | bytes) else conf)


def _incoming(loop: Loop, shift: Shift, seed: int) -> pd.DataFrame:
    """Replace the incoming listings with 400 synthetic ones; return them with their labels."""
    made = loop.root / f"made-{seed}"
    synthesize(
        made, rows=400, test_rows=0, images=False, seed=seed, workers=1, shift=shift, overwrite=True
    )
    listings = pd.read_csv(made / "X_train_update.csv", index_col=0)
    labels = pd.read_csv(made / "Y_train_CVw08PX.csv", index_col=0)
    incoming = loop.root / "data" / "incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    listings.to_csv(incoming / "listings.csv")
    return listings.assign(prdtypecode=labels["prdtypecode"])


def _drift_verdicts(store_url: str) -> dict[date, str]:
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(DriftReport.logical_date, DriftReport.verdict)).all()
    finally:
        engine.dispose()
    return dict(rows)


def test_a_training_run_makes_a_champion_with_its_reference_profile(loop: Loop) -> None:
    states, _ = _dag_test(loop, "rakuten_training")
    assert states["register"] == states["promote"] == "success", states
    assert dict(loop.client().get_registered_model(MODEL_NAME).aliases) == {"champion": "1"}


def test_a_batch_like_the_training_data_is_no_drift_and_triggers_nothing(loop: Loop) -> None:
    _incoming(loop, Shift(), seed=31)
    states, _ = _dag_test(loop, "rakuten_batch_predict", SAME_DAY.isoformat())
    assert states["drift"] == states["performance"] == "success", states
    assert states["retrain"] == states["trigger_training"] == "skipped", states
    assert _drift_verdicts(loop.store_url)[SAME_DAY] == "no_drift"
    assert not [run for run in _training_runs(loop) if run["run_id"].startswith("retrain__")]


def test_a_shifted_batch_is_drift_and_triggers_training_exactly_once(loop: Loop) -> None:
    _incoming(loop, Shift((10, 40, 50), 0.8, no_description=0.95), seed=41)
    states, _ = _dag_test(loop, "rakuten_batch_predict", SHIFTED_DAY.isoformat())
    assert states["drift"] == states["retrain"] == states["trigger_training"] == "success", states
    report = json.loads(
        (loop.root / "reports" / "drift" / f"{SHIFTED_DAY.isoformat()}.json").read_text()
    )
    assert report["verdict"] == "drift" and _drift_verdicts(loop.store_url)[SHIFTED_DAY] == "drift"
    [triggered] = [run for run in _training_runs(loop) if run["run_id"].startswith("retrain__")]
    assert triggered["run_id"] == TRIGGERED
    conf = _conf(loop, triggered)
    assert conf["force"] is True and conf["reason"].startswith(f"drift on {SHIFTED_DAY}")

    states, _ = _dag_test(loop, "rakuten_batch_predict", SHIFTED_DAY.isoformat())  # a rerun
    assert states["retrain"] == "success" and states["trigger_training"] == "skipped", states
    assert [r["run_id"] for r in _training_runs(loop) if r["run_id"].startswith("retrain__")] == [
        TRIGGERED
    ]


def test_late_labels_give_the_realised_f1_stored_and_pushed(loop: Loop) -> None:
    listings = _incoming(loop, Shift(), seed=31)  # the same-day products, with their labels
    labels = loop.root / "data" / "incoming" / "labels"
    labels.mkdir()
    listings[["prdtypecode", "productid"]].to_csv(labels / "Y_late.csv")
    (loop.root / "data" / "incoming" / "listings.csv").unlink()  # nothing new to score
    result = run_airflow(
        loop.environment,
        "tasks",
        "test",
        "rakuten_batch_predict",
        "performance",
        SAME_DAY.isoformat(),
    )
    assert result.returncode == 0, result.stdout[-6000:]
    engine = make_engine(loop.store_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                select(
                    RealisedPerformance.logical_date,
                    RealisedPerformance.labelled,
                    RealisedPerformance.weighted_f1,
                )
            ).all()
    finally:
        engine.dispose()
    [(day, labelled, weighted_f1)] = stored
    assert day == SAME_DAY and labelled == 400 and 0.2 < weighted_f1 <= 1
    with urllib.request.urlopen(f"{loop.pushgateway}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("rakuten_realised_f1_ratio{")
        and all(label in line for label in ('step="performance"', 'average="weighted"'))
    )
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(weighted_f1)


def test_the_triggered_training_run_records_its_reason(loop: Loop) -> None:
    [triggered] = [run for run in _training_runs(loop) if run["run_id"] == TRIGGERED]
    conf = _conf(loop, triggered)
    states, _ = _dag_test(loop, "rakuten_training", "--conf", json.dumps(conf))
    assert states["changes"] == states["register"] == "success", states  # forced
    client = loop.client()
    version = client.get_model_version(MODEL_NAME, "2")
    assert version.tags["retrain_reason"] == conf["reason"]
    assert client.get_run(version.run_id).data.tags["retrain_reason"] == conf["reason"]
