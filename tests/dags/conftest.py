"""Airflow for the DAG tests: the pinned Airflow environment (.venv-airflow) on this project's DAGs.

Airflow and the project live in two environments (DESIGN §4): the tests, in the project's, run
Airflow's CLI and scripts as subprocesses, with an AIRFLOW_HOME of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
PROJECT_BIN = ROOT / ".venv" / "bin"
DAGS = ROOT / "dags"

Airflow = Callable[..., subprocess.CompletedProcess[str]]


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
