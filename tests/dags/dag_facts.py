"""Run in the Airflow environment (.venv-airflow): load dags/ and write what the tests check.

The project environment has no Airflow (DESIGN §4), so the DAG integrity tests ask this script.
Usage: .venv-airflow/bin/python tests/dags/dag_facts.py DAGS_FOLDER OUT.json
(Airflow logs on stdout, so the facts go to a file.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import airflow.sdk  # noqa: F401  (imported before timing: every DAG file pays it once anyway)
from airflow.dag_processing.dagbag import DagBag

HEAVY = ("src", "pandas", "numpy", "sklearn", "keras", "tensorflow", "torch", "jax", "mlflow")


def _task(task: Any) -> dict[str, Any]:
    return {
        "type": type(task).__name__,
        "queue": task.queue,
        "pool": task.pool,
        "trigger_rule": str(task.trigger_rule),
        "mapped": bool(getattr(task, "is_mapped", False)),
        "outlets": [getattr(outlet, "uri", str(outlet)) for outlet in task.outlets],
        "downstream": sorted(task.downstream_task_ids),
        "retries": task.retries,
        "retry_exponential_backoff": bool(task.retry_exponential_backoff),
        "skip_on_exit_code": sorted(getattr(task, "skip_on_exit_code", None) or []),
        "trigger_dag_id": getattr(task, "trigger_dag_id", None),
        "skip_when_already_exists": getattr(task, "skip_when_already_exists", None),
    }


def _cron(timetable: Any) -> dict[str, str]:
    """A cron timetable's expression and time zone."""
    return {
        "type": type(timetable).__name__,
        "expression": str(getattr(timetable, "expression", "")),
        "timezone": str(getattr(timetable, "timezone", "")),
    }


def _assets(condition: Any) -> list[str]:
    """The URIs of the Assets a schedule waits for (one Asset, or any/all of several)."""
    if condition is None:
        return []
    if hasattr(condition, "uri"):
        return [condition.uri]
    return [uri for part in condition.objects for uri in _assets(part)]


def main() -> None:
    """Parse the DAG folder, then describe every DAG into OUT.json."""
    folder = Path(sys.argv[1])
    sys.path.insert(0, str(folder))  # as Airflow does for its DAGs folder
    bag = DagBag(dag_folder=str(folder), bundle_name="dags-folder")
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))  # what parsing imported
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "schedule": type(dag.timetable).__name__,
            "cron": _cron(getattr(dag.timetable, "timetable", dag.timetable)),
            "assets": _assets(getattr(dag.timetable, "asset_condition", None)),
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "tags": sorted(dag.tags),
            "doc_md": bool(dag.doc_md),
            "params": {name: param.schema for name, param in dag.params.items()},
            "param_defaults": dag.params.dump(),
            "param_descriptions": {name: param.description for name, param in dag.params.items()},
            "tasks": {task.task_id: _task(task) for task in dag.tasks},
        }
    Path(sys.argv[2]).write_text(
        json.dumps(
            {
                "import_errors": bag.import_errors,
                "heavy_modules": heavy,
                "dags": dags,
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
