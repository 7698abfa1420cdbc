"""`rakuten run follow`: a real `airflow dags test` run, one terminal line per finished task."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.dags.conftest import AIRFLOW_BIN, PROJECT_BIN, airflow_environment, run_airflow

DAG = """
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def followed():
    @task.bash
    def first():
        return "echo one"

    @task.bash
    def nothing_to_do():
        return "exit 99"  # Airflow's bash tasks read 99 as skipped

    @task.bash(trigger_rule="none_failed")
    def last():
        return "{last}"

    first() >> nothing_to_do() >> last()


followed()
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """An Airflow home with two tiny DAGs (one that succeeds, one that fails), migrated."""
    if not (AIRFLOW_BIN / "airflow").is_file():
        pytest.skip(f"no Airflow environment at {AIRFLOW_BIN.parent}: run `make airflow-env`")
    home = tmp_path_factory.mktemp("airflow")
    dags = home / "dags"
    dags.mkdir()
    (dags / "passes.py").write_text(DAG.format(dag_id="passes", last="echo done"))
    (dags / "fails.py").write_text(DAG.format(dag_id="fails", last="exit 3"))
    environment = {**airflow_environment(home, {}), "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    migrated = run_airflow(environment, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return home, environment


def _follow(
    home: Path, environment: dict[str, str], dag_id: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(PROJECT_BIN / "rakuten"),
            "run",
            "follow",
            "--airflow-db",
            f"sqlite:///{home / 'airflow.db'}",
            "--log",
            str(home / f"{dag_id}.log"),
            "--dag",
            dag_id,
            "--interval",
            "0.2",
            "--",
            str(AIRFLOW_BIN / "airflow"),
            "dags",
            "test",
            dag_id,
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_each_task_is_one_line_with_its_state_and_airflows_log_goes_to_the_file(
    airflow_home: tuple[Path, dict[str, str]],
) -> None:
    home, environment = airflow_home
    result = _follow(home, environment, "passes")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"passes: Airflow's log goes to {home / 'passes.log'}"
    assert lines[1].startswith("passes, run manual__")
    tasks = [line.split()[:2] for line in lines[2:-1]]
    assert tasks == [["success", "first"], ["skipped", "nothing_to_do"], ["success", "last"]]
    assert all(line.rstrip().endswith(" s") for line in lines[2:-1])  # each with its duration
    assert lines[-1].startswith("passes: success in ")
    log = (home / "passes.log").read_text()
    assert "[DAG TEST] end task task_id=last" in log  # Airflow's own log: in the file only
    assert "[DAG TEST]" not in result.stdout


@pytest.mark.slow
def test_a_failed_run_is_shown_and_fails_the_command(
    airflow_home: tuple[Path, dict[str, str]],
) -> None:
    home, environment = airflow_home
    result = _follow(home, environment, "fails")
    assert result.returncode != 0
    states = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()[2:-1]}
    assert states["last"] == "failed"
    assert result.stdout.splitlines()[-1].startswith("fails: failed in ")
    assert f"Airflow's log: {home / 'fails.log'}" in result.stderr
