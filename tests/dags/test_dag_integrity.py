"""DAG integrity: the DAG files import without errors, fast and without ML libraries, and their
schedules, retries, tags, params and task routing are as the operations guide says."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import DAGS

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def facts(airflow_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What tests/dags/dag_facts.py reads from the DAGs, in the Airflow environment."""
    out = tmp_path_factory.mktemp("dag-facts") / "facts.json"
    home = out.parent / "airflow"
    result = subprocess.run(
        [str(airflow_bin / "python"), str(HERE / "dag_facts.py"), str(DAGS), str(out)],
        env={
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def test_the_dag_files_import_without_errors_and_without_ml_libraries(
    facts: dict[str, Any],
) -> None:
    assert facts["import_errors"] == {}
    assert set(facts["dags"]) == {"rakuten_training", "rakuten_batch_predict"}
    # What keeps the scheduler's parse fast: no project, pandas, sklearn, keras, mlflow... at
    # parse time (a wall-clock bound failed under load and proved nothing more).
    assert facts["heavy_modules"] == []


@pytest.mark.parametrize("dag_id", ["rakuten_training", "rakuten_batch_predict"])
def test_every_dag_is_documented_retried_and_runs_alone(facts: dict[str, Any], dag_id: str) -> None:
    dag = facts["dags"][dag_id]
    assert dag["doc_md"] and "rakuten" in dag["tags"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    for task_id, task in dag["tasks"].items():
        assert task["retries"] >= 1 and task["retry_exponential_backoff"], task_id
        if "Bash" in task["type"]:
            assert task["skip_on_exit_code"] == [99], task_id  # the CLI's "nothing to do"


def test_training_runs_nightly_in_paris_with_a_trigger_form(facts: dict[str, Any]) -> None:
    dag = facts["dags"]["rakuten_training"]
    assert dag["cron"] == {
        "type": "CronTriggerTimetable",
        "expression": "0 2 * * *",
        "timezone": "Europe/Paris",
    }
    assert set(dag["params"]) == {
        "data_source",
        "data_revision",
        "sample_rows",
        "branches",
        "epochs",
        "promotion",
        "force",
        "reason",
    }
    branches = dag["params"]["branches"]
    assert branches["items"]["enum"] == ["text_tfidf", "text_cnn", "image_cnn"]
    # The form's multi-select needs the choices at the top level (examples or enum).
    assert branches["examples"] == branches["items"]["enum"]
    assert set(branches["values_display"]) == set(branches["examples"])
    promotion = dag["params"]["promotion"]
    assert promotion["enum"] == [None, "auto", "manual"]
    assert set(promotion["values_display"]) == {"null", "auto", "manual"}  # no bare "null" shown
    assert dag["params"]["force"]["type"] == "boolean"
    # Empty fields keep params.yaml and the settings: a scheduled run changes nothing, and the
    # form does not require them (it requires a field whose type does not allow null).
    assert dag["param_defaults"] == {
        "data_source": None,
        "data_revision": None,
        "sample_rows": None,
        "branches": None,
        "epochs": None,
        "promotion": None,
        "force": False,
        "reason": None,
    }
    for name, schema in dag["params"].items():
        assert name == "force" or "null" in schema["type"], name
        assert schema["title"] and dag["param_descriptions"][name], name


def test_training_tasks_run_in_order_with_neural_branches_on_the_gpu(
    facts: dict[str, Any],
) -> None:
    tasks = facts["dags"]["rakuten_training"]["tasks"]
    # A scheduled run that missed its slot does nothing (on_time skips all that follows).
    assert tasks["on_time"]["type"] == "_ShortCircuitDecoratedOperator"
    assert tasks["on_time"]["downstream"] == ["configure"]
    chain = ["configure", "ingest", "validate", "make_dataset", "changes"]
    for upstream, downstream in itertools.pairwise(chain):
        assert downstream in tasks[upstream]["downstream"]
    for train in ("train_cpu", "train_gpu"):
        assert tasks[train]["mapped"] and tasks[train]["downstream"] == ["fuse"]
    assert (tasks["train_gpu"]["queue"], tasks["train_gpu"]["pool"]) == ("gpu", "gpu")
    assert tasks["train_cpu"]["queue"] != "gpu"
    chain = ["fuse", "evaluate", "register", "gate", "promote", "batch_predict"]
    for upstream, downstream in itertools.pairwise(chain):
        assert tasks[upstream]["downstream"] == [downstream]
    assert tasks["promote"]["outlets"] == ["rakuten://models/rakuten-product-classifier/champion"]
    # Publishing runs whether training ran, was skipped (nothing changed) or failed the gate.
    assert tasks["batch_predict"]["trigger_rule"] == "TriggerRule.NONE_FAILED"


def test_batch_predictions_follow_promotions_and_run_daily(facts: dict[str, Any]) -> None:
    dag = facts["dags"]["rakuten_batch_predict"]
    assert dag["schedule"] == "AssetOrTimeSchedule"
    assert dag["assets"] == ["rakuten://models/rakuten-product-classifier/champion"]
    assert dag["cron"]["expression"] == "0 6 * * *"
    assert dag["cron"]["timezone"] == "Europe/Paris"
    tasks = dag["tasks"]
    assert tasks["score_champion"]["downstream"] == [
        "agreement",
        "drift",
        "performance",
        "score_challenger",
    ]
    assert tasks["score_challenger"]["downstream"] == ["agreement"]


def test_the_batch_dag_closes_the_loop_by_triggering_training(facts: dict[str, Any]) -> None:
    tasks = facts["dags"]["rakuten_batch_predict"]["tasks"]
    assert tasks["drift"]["downstream"] == tasks["performance"]["downstream"] == ["retrain"]
    assert tasks["retrain"]["downstream"] == ["training_request"]
    assert tasks["training_request"]["downstream"] == ["trigger_training"]
    trigger = tasks["trigger_training"]
    assert trigger["type"] == "TriggerDagRunOperator"
    assert trigger["trigger_dag_id"] == "rakuten_training"
    assert trigger["skip_when_already_exists"] is True
