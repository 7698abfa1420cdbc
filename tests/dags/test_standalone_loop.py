"""The closed loop end to end in the session's running `airflow standalone` (the fixture of
tests/dags/conftest.py), with its real `mlflow server`, PostgreSQL store and Pushgateway, on
synthetic data.

This file runs after test_standalone.py (file order, and the same worker shares its session
fixture) and takes the champion that file trained from the UI; run alone, it trains one the same
way. The batch DAG then scores, on one day, new listings from the training catalogue: no drift, no
retraining. Their labels arrive late, with the next day's listings, a shifted catalogue (skewed
classes, most descriptions gone): that day's run stores the labels and pushes the champion's
realised F1 on the first day, finds drift, and triggers `rakuten_training` once with the reason;
a rerun of the day triggers nothing more. The scheduler runs the triggered training, which
records the reason on its MLflow run and registered version.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from datetime import date, timedelta
from typing import Any

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sqlalchemy import select

from src.data.synth import Shift, synthesize
from src.db.engine import make_engine
from src.db.models import DriftReport, RealisedPerformance
from src.models.packaged import MODEL_NAME
from src.registry.lifecycle import RETRAIN_REASON_TAG
from tests.dags.conftest import PARAMS, Standalone

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TRAINING = "rakuten_training"
BATCH = "rakuten_batch_predict"
# Past days (the scheduler starts no run whose logical date is in the future), after the one of
# test_standalone.py's batch run.
SAME_DAY = date.today() - timedelta(days=5)
SHIFTED_DAY = SAME_DAY + timedelta(days=1)
TRIGGERED = f"retrain__{SHIFTED_DAY.isoformat()}"
LISTINGS = 400


def _runs(standalone: Standalone, dag_id: str, query: str = "") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = standalone.api(f"/dags/{dag_id}/dagRuns?limit=100{query}")[
        "dag_runs"
    ]
    return found


def _retrain_runs(standalone: Standalone) -> list[dict[str, Any]]:
    return [r for r in _runs(standalone, TRAINING) if r["dag_run_id"].startswith("retrain__")]


def _wait_until_idle(standalone: Standalone, dag_id: str, seconds: float = 900) -> None:
    """Until no run of the DAG is queued or running (twice in a row: the scheduler may be about
    to queue one), so that new listings are scored on the day the test gives them."""
    deadline = time.monotonic() + seconds
    idle = 0
    while idle < 2:
        busy = _runs(standalone, dag_id, "&state=queued&state=running")
        idle = 0 if busy else idle + 1
        assert time.monotonic() < deadline, f"{dag_id} still busy: {busy}"
        time.sleep(5)


def _run_day(standalone: Standalone, day: date) -> dict[str, str]:
    """A batch DAG run for `day`, through the REST API; the states of its tasks."""
    run = standalone.api(
        f"/dags/{BATCH}/dagRuns", {"logical_date": f"{day.isoformat()}T00:00:00Z"}, "POST"
    )
    finished = standalone.wait_for_run(BATCH, run["dag_run_id"])
    states = standalone.task_states(BATCH, run["dag_run_id"])
    assert finished["state"] == "success", states
    return states


def _incoming(standalone: Standalone, shift: Shift, seed: int) -> pd.DataFrame:
    """Replace the incoming listings (and their photos) with synthetic ones; return them with
    their labels."""
    made = standalone.root / f"made-{seed}"
    synthesize(
        made,
        rows=LISTINGS,
        test_rows=0,
        image_size=PARAMS["synthetic"]["image_size"],
        seed=seed,
        workers=1,
        shift=shift,
        overwrite=True,
    )
    incoming = standalone.root / "data" / "incoming"
    shutil.rmtree(incoming / "images", ignore_errors=True)
    incoming.mkdir(parents=True, exist_ok=True)
    for listings in incoming.glob("*.csv"):
        listings.unlink()
    shutil.copytree(made / "images" / "image_train", incoming / "images")
    shutil.copy(made / "X_train_update.csv", incoming / "listings.csv")
    listings = pd.read_csv(made / "X_train_update.csv", index_col=0)
    labels = pd.read_csv(made / "Y_train_CVw08PX.csv", index_col=0)
    return listings.assign(prdtypecode=labels["prdtypecode"])


def _drift_verdicts(store_url: str) -> dict[date, str]:
    engine = make_engine(store_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(DriftReport.logical_date, DriftReport.verdict)).all()
    finally:
        engine.dispose()
    return dict(rows)


@pytest.fixture(scope="module")
def champion(standalone: Standalone) -> str:
    """The champion's version: test_standalone.py's, or one trained the same way."""
    for dag_id in (TRAINING, BATCH):
        standalone.api(f"/dags/{dag_id}", {"is_paused": False}, "PATCH")
    try:
        return standalone.aliases()["champion"]
    except (MlflowException, KeyError):
        pass
    conf = {"branches": ["text_tfidf"], "sample_rows": 200}
    run = standalone.api(f"/dags/{TRAINING}/dagRuns", {"logical_date": None, "conf": conf}, "POST")
    finished = standalone.wait_for_run(TRAINING, run["dag_run_id"])
    assert finished["state"] == "success", standalone.task_states(TRAINING, run["dag_run_id"])
    return standalone.aliases()["champion"]


def test_a_batch_like_the_training_data_is_no_drift_and_triggers_nothing(
    standalone: Standalone, champion: str
) -> None:
    _wait_until_idle(standalone, BATCH)  # runs queued by unpausing score nothing of ours
    _incoming(standalone, Shift(), seed=31)
    states = _run_day(standalone, SAME_DAY)
    assert states["drift"] == states["performance"] == "success", states
    assert states["retrain"] == states["trigger_training"] == "skipped", states
    assert _drift_verdicts(standalone.store_url)[SAME_DAY] == "no_drift"
    assert not _retrain_runs(standalone)


def test_late_labels_and_a_shifted_batch_give_realised_f1_drift_and_one_training(
    standalone: Standalone, champion: str
) -> None:
    first_day = _incoming(standalone, Shift(), seed=31)  # the same-day products, with labels
    labels = standalone.root / "data" / "incoming" / "labels"
    labels.mkdir(exist_ok=True)
    first_day[["prdtypecode", "productid"]].to_csv(labels / "Y_late.csv")
    _incoming(standalone, Shift((10, 40, 50), 0.8, no_description=0.95), seed=41)
    states = _run_day(standalone, SHIFTED_DAY)

    # The late labels: the champion's realised F1 on the first day, stored and pushed.
    assert states["performance"] == "success", states
    engine = make_engine(standalone.store_url)
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
    assert day == SAME_DAY and labelled == LISTINGS and 0.2 < weighted_f1 <= 1
    pushgateway = standalone.environment["RAKUTEN_PUSHGATEWAY_URL"]
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("rakuten_realised_f1_ratio{")
        and all(label in line for label in ('step="performance"', 'average="weighted"'))
    )
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(weighted_f1)

    # The shifted batch: drift, and one training triggered with the reason.
    assert states["drift"] == states["retrain"] == states["trigger_training"] == "success", states
    report = standalone.root / "reports" / "drift" / f"{SHIFTED_DAY.isoformat()}.json"
    assert json.loads(report.read_text())["verdict"] == "drift"
    assert _drift_verdicts(standalone.store_url)[SHIFTED_DAY] == "drift"
    [triggered] = _retrain_runs(standalone)
    assert triggered["dag_run_id"] == TRIGGERED
    assert triggered["conf"]["force"] is True
    assert triggered["conf"]["reason"].startswith(f"drift on {SHIFTED_DAY}")


def test_a_rerun_of_the_drifted_day_triggers_nothing_more(
    standalone: Standalone, champion: str
) -> None:
    [run] = [
        r for r in _runs(standalone, BATCH) if (r["logical_date"] or "")[:10] == str(SHIFTED_DAY)
    ]
    standalone.api(f"/dags/{BATCH}/dagRuns/{run['dag_run_id']}/clear", {"dry_run": False}, "POST")
    finished = standalone.wait_for_run(BATCH, run["dag_run_id"])
    states = standalone.task_states(BATCH, run["dag_run_id"])
    assert finished["state"] == "success", states
    assert states["retrain"] == "success" and states["trigger_training"] == "skipped", states
    assert [r["dag_run_id"] for r in _retrain_runs(standalone)] == [TRIGGERED]


def test_the_triggered_training_run_records_its_reason(
    standalone: Standalone, champion: str
) -> None:
    finished = standalone.wait_for_run(TRAINING, TRIGGERED)
    states = standalone.task_states(TRAINING, TRIGGERED)
    assert finished["state"] == "success", states
    assert states["changes"] == states["register"] == "success", states  # forced
    reason = finished["conf"]["reason"]
    client = standalone.client()
    versions = [
        client.get_model_version(MODEL_NAME, v.version)
        for v in client.search_model_versions(f"name='{MODEL_NAME}'")
    ]
    [version] = [v for v in versions if RETRAIN_REASON_TAG in v.tags]
    assert version.version != champion and version.tags[RETRAIN_REASON_TAG] == reason
    assert client.get_run(version.run_id).data.tags[RETRAIN_REASON_TAG] == reason
