"""`make airflow` and `make mlflow` as a person uses them, in a real headless browser, and the
closed loop they run.

One `airflow standalone` (the session fixture `standalone`: a real `mlflow server`, a PostgreSQL
store, a Pushgateway) serves the whole file, in order: its components listen on 127.0.0.1 but
for Airflow's two log servers; a person signs in, opens the trigger form of rakuten_training,
triggers it with one branch and a small sample, and the run trains, registers and promotes a
champion (the scheduled run that unpausing makes for the missed night does nothing); the MLflow
UI shows that pipeline run with its branch runs; the batch DAG takes a run through the REST API.
Screenshots go under reports/ui/.

Then the closed loop, on that champion: the batch DAG scores, on one day, new listings from the
training catalogue: no drift, no retraining. Their labels arrive late, with the next day's
listings, a shifted catalogue (skewed classes, most descriptions gone): that day's run stores
the labels and pushes the champion's realised F1 on the first day, finds drift, and triggers
rakuten_training once with the reason; a rerun of the day triggers nothing more. The scheduler
runs the triggered training, which records the reason on its MLflow run and registered version.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import psutil
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from src.data.synth import Shift, synthesize
from src.db.engine import make_engine
from src.db.models import DriftReport, RealisedPerformance
from src.models.packaged import MODEL_NAME
from src.registry.lifecycle import RETRAIN_REASON_TAG
from src.registry.tracking import experiment_address
from tests.browser import screenshot
from tests.dags.conftest import PARAMS, Standalone, batches

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TRAINING = "rakuten_training"
SAMPLE_ROWS = 200
MISSED_SLOT = timedelta(hours=1)  # dags/rakuten_common.py

BATCH = "rakuten_batch_predict"
# Past days (the scheduler starts no run whose logical date is in the future), after the one of
# the REST API's batch run.
SAME_DAY = date.today() - timedelta(days=5)
SHIFTED_DAY = SAME_DAY + timedelta(days=1)
TRIGGERED = f"retrain__{SHIFTED_DAY.isoformat()}"
LISTINGS = 400  # new listings a day


def _wait(driver: webdriver.Chrome, seconds: float = 60) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(driver, seconds)


def _visible(driver: webdriver.Chrome, xpath: str, seconds: float = 60) -> WebElement:
    element: WebElement = _wait(driver, seconds).until(
        expected_conditions.visibility_of_element_located((By.XPATH, xpath))
    )
    return element


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that a process and its descendants listen on."""
    root = psutil.Process(pid)
    sockets = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        sockets |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == "LISTEN"}
    return sockets


def test_airflow_listens_on_127_0_0_1_but_for_its_two_log_servers(standalone: Standalone) -> None:
    log_servers = {
        int(standalone.environment["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]),
        int(standalone.environment["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"]),
    }
    deadline = time.monotonic() + 60
    sockets = _listening(standalone.server.process.pid)
    while {port for _, port in sockets} < log_servers and time.monotonic() < deadline:
        time.sleep(1)  # the scheduler and the triggerer start their log servers last
        sockets = _listening(standalone.server.process.pid)
    api_port = int(standalone.environment["AIRFLOW__API__PORT"])
    assert ("127.0.0.1", api_port) in sockets
    # Airflow 3 binds its log servers to every interface, with no setting (docs/operations.md).
    assert {port for address, port in sockets if address != "127.0.0.1"} == log_servers, sockets


def _sign_in(driver: webdriver.Chrome, standalone: Standalone) -> None:
    driver.get(f"{standalone.url}/")
    username = _visible(driver, "//input[@name='username']")
    screenshot(driver, "airflow-1-sign-in")
    username.send_keys("admin")
    driver.find_element(By.XPATH, "//input[@name='password']").send_keys(standalone.password)
    driver.find_element(By.XPATH, "//button[@type='submit']").click()
    _wait(driver).until(lambda d: "/auth/login" not in d.current_url)


def _trigger_button(driver: webdriver.Chrome) -> WebElement:
    """The form's own Trigger button (the dialog's, not the page's)."""
    return _visible(driver, "//*[@role='dialog']//button[normalize-space(.)='Trigger']")


def _runs(standalone: Standalone, dag_id: str, query: str = "") -> list[dict[str, Any]]:
    """The DAG's runs (at most 100), filtered by the REST API's `query` (`&run_type=manual`)."""
    found: list[dict[str, Any]] = standalone.api(f"/dags/{dag_id}/dagRuns?limit=100{query}")[
        "dag_runs"
    ]
    return found


def test_a_person_trains_from_the_trigger_form_of_the_airflow_ui(
    standalone: Standalone, chromium: webdriver.Chrome
) -> None:
    _sign_in(chromium, standalone)
    chromium.get(f"{standalone.url}/dags/{TRAINING}")
    _visible(chromium, "//button[normalize-space(.)='Trigger']").click()
    branches = _visible(chromium, "//*[@id='element_branches']//input")
    screenshot(chromium, "airflow-2-trigger-form")
    # Every field may stay empty (params.yaml and the settings): Trigger works as it opens.
    assert _trigger_button(chromium).is_enabled()
    assert not chromium.find_elements(By.XPATH, "//*[text()='This field is required']")

    branches.send_keys("text_tfidf")
    branches.send_keys(Keys.ENTER)  # the multi-select's first match
    sample = chromium.find_element(
        By.XPATH, "//*[contains(@id, 'element_sample_rows')]/descendant-or-self::input"
    )
    sample.send_keys(str(SAMPLE_ROWS))
    label = "text_tfidf: TF-IDF + linear SVM (CPU)"  # the branch's label (values_display)
    chosen = _visible(chromium, f"//*[@id='element_branches']//*[text()='{label}']")
    chromium.execute_script("arguments[0].scrollIntoView({block: 'center'})", chosen)
    screenshot(chromium, "airflow-3-trigger-form-filled")
    triggered_at = datetime.now(UTC)
    _trigger_button(chromium).click()

    deadline = time.monotonic() + 60
    while not (manual := _runs(standalone, TRAINING, "&run_type=manual")):
        assert time.monotonic() < deadline, "no run was triggered"
        time.sleep(1)
    [run] = manual
    chromium.get("about:blank")  # the open grid would poll the API server all along the run
    assert run["conf"]["branches"] == ["text_tfidf"]
    assert run["conf"]["sample_rows"] == SAMPLE_ROWS
    assert run["conf"]["data_source"] is None and run["conf"]["promotion"] is None
    finished = standalone.wait_for_run(TRAINING, run["dag_run_id"])
    states = standalone.task_states(TRAINING, run["dag_run_id"])
    chromium.get(f"{standalone.url}/dags/{TRAINING}/runs/{run['dag_run_id']}")
    _visible(chromium, "//*[contains(normalize-space(.), 'promote')]")
    time.sleep(2)  # the grid draws its boxes after the names
    screenshot(chromium, "airflow-4-run-succeeded")
    assert finished["state"] == "success", states
    assert states["train_cpu[0]"] == states["promote"] == "success", states
    assert standalone.aliases() == {"champion": "1"}

    # "Unpause on trigger" (checked by default) made the scheduler start the last night's run.
    for scheduled in _runs(standalone, TRAINING, "&run_type=scheduled"):
        done = standalone.wait_for_run(TRAINING, scheduled["dag_run_id"], seconds=300)
        slot = datetime.fromisoformat(scheduled["run_after"])
        if triggered_at - slot > MISSED_SLOT:  # a missed night: nothing but the check ran
            skipped = standalone.task_states(TRAINING, scheduled["dag_run_id"])
            assert skipped.pop("on_time") == "success" and done["state"] == "success"
            assert set(skipped.values()) == {"skipped"}, skipped


def test_the_mlflow_ui_shows_the_pipeline_run_with_its_branch_runs(
    standalone: Standalone, chromium: webdriver.Chrome
) -> None:
    [run] = _runs(standalone, TRAINING, "&run_type=manual")
    name = f"pipeline {run['dag_run_id']}"
    experiment = standalone.client().get_experiment_by_name("rakuten-product-classifier")
    assert experiment is not None
    # The address the run summary and the model cards give: it opens the model-training view (the
    # runs), not the GenAI one (traces). MLflow 3.17's UI takes the view from `?workflowType=` or
    # the browser's localStorage `mlflow.workflowType` (GenAI when unset), not from the tag.
    chromium.get(experiment_address(standalone.tracking_uri, experiment.experiment_id))
    runs = f"//*[normalize-space(text())='{name}']"
    genai = "//*[normalize-space(text())='Traces' or normalize-space(text())='Detect Issues']"
    # Wait for the run's row itself: on a loaded machine the GenAI view's words were seen on a
    # page whose address was the training view's, before its runs list had loaded.
    try:
        _wait(chromium, 90).until(lambda d: d.find_elements(By.XPATH, runs))
    except TimeoutException:
        screenshot(chromium, "mlflow-1-experiment")
        view = "the GenAI view" if chromium.find_elements(By.XPATH, genai) else "a page"
        pytest.fail(f"the experiment opened in {view} without its runs ({chromium.current_url})")
    time.sleep(2)  # let the page settle into its view before the screenshot
    screenshot(chromium, "mlflow-1-experiment")
    parent = chromium.find_element(By.XPATH, runs)
    cell = parent.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]")
    cell.find_element(By.XPATH, ".//button").click()  # the expander, before the name
    _visible(chromium, "//*[normalize-space(text())='text_tfidf']")
    screenshot(chromium, "mlflow-2-nested-branch-runs")


def test_a_run_triggered_through_the_rest_api_of_airflow_standalone_succeeds(
    standalone: Standalone,
) -> None:
    standalone.api(f"/dags/{BATCH}", {"is_paused": False}, "PATCH")
    # The scheduler starts no run whose logical date is in the future.
    day = date.today() - timedelta(days=7)
    run = standalone.api(
        f"/dags/{BATCH}/dagRuns", {"logical_date": f"{day.isoformat()}T00:00:00Z"}, "POST"
    )
    finished = standalone.wait_for_run(BATCH, run["dag_run_id"], seconds=600)
    assert finished["state"] == "success", standalone.task_states(BATCH, run["dag_run_id"])
    # Everything was scored on other days: the champion's batch of that day is empty.
    assert (day, "1", "champion", 0) in batches(standalone.store_url)


# The closed loop, on the champion trained from the form.


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
    for earlier in incoming.glob("*.csv"):
        earlier.unlink()
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


def test_a_batch_like_the_training_data_is_no_drift_and_triggers_nothing(
    standalone: Standalone,
) -> None:
    _wait_until_idle(standalone, BATCH)  # runs queued by unpausing score nothing of ours
    _incoming(standalone, Shift(), seed=31)
    states = _run_day(standalone, SAME_DAY)
    assert states["drift"] == states["performance"] == "success", states
    assert states["retrain"] == states["trigger_training"] == "skipped", states
    assert _drift_verdicts(standalone.store_url)[SAME_DAY] == "no_drift"
    assert not _retrain_runs(standalone)


def test_late_labels_and_a_shifted_batch_give_realised_f1_drift_and_one_training(
    standalone: Standalone,
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
    standalone: Standalone,
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
    standalone: Standalone,
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
    assert version.version == "2" and version.tags[RETRAIN_REASON_TAG] == reason
    assert client.get_run(str(version.run_id)).data.tags[RETRAIN_REASON_TAG] == reason
