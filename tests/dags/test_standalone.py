"""`make airflow` and `make mlflow` as a person uses them, in a real headless browser.

One `airflow standalone` (the session fixture `standalone`) serves the whole file, in order: its
components listen on 127.0.0.1 but for Airflow's two log servers; a person signs in, opens the
trigger form of rakuten_training, triggers it with one branch and a small sample, and the run
trains, registers and promotes a champion (the scheduled run that unpausing makes for the missed
night does nothing); the MLflow UI shows that pipeline run with its branch runs; last, the batch
DAG takes a run through the REST API. Screenshots go under reports/ui/.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psutil
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from src.registry.tracking import experiment_address
from tests.browser import screenshot
from tests.dags.conftest import Standalone, batches

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TRAINING = "rakuten_training"
SAMPLE_ROWS = 200
MISSED_SLOT = timedelta(hours=1)  # dags/rakuten_common.py


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


def _runs(standalone: Standalone, run_type: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = standalone.api(f"/dags/{TRAINING}/dagRuns?run_type={run_type}")[
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
    while not (manual := _runs(standalone, "manual")):
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
    for scheduled in _runs(standalone, "scheduled"):
        done = standalone.wait_for_run(TRAINING, scheduled["dag_run_id"], seconds=300)
        slot = datetime.fromisoformat(scheduled["run_after"])
        if triggered_at - slot > MISSED_SLOT:  # a missed night: nothing but the check ran
            skipped = standalone.task_states(TRAINING, scheduled["dag_run_id"])
            assert skipped.pop("on_time") == "success" and done["state"] == "success"
            assert set(skipped.values()) == {"skipped"}, skipped


def test_the_mlflow_ui_shows_the_pipeline_run_with_its_branch_runs(
    standalone: Standalone, chromium: webdriver.Chrome
) -> None:
    [run] = _runs(standalone, "manual")
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
    dag = "rakuten_batch_predict"
    standalone.api(f"/dags/{dag}", {"is_paused": False}, "PATCH")
    # The scheduler starts no run whose logical date is in the future.
    day = date.today() - timedelta(days=7)
    run = standalone.api(
        f"/dags/{dag}/dagRuns", {"logical_date": f"{day.isoformat()}T00:00:00Z"}, "POST"
    )
    finished = standalone.wait_for_run(dag, run["dag_run_id"], seconds=600)
    assert finished["state"] == "success", standalone.task_states(dag, run["dag_run_id"])
    # Everything was scored on other days: the champion's batch of that day is empty.
    assert (day, "1", "champion", 0) in batches(standalone.store_url)
