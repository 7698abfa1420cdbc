"""What the Rakuten DAGs share: how a task runs the project CLI, retries, and the champion Asset.

Wiring only: no project or ML import. A task is a bash command that runs `rakuten ...` from the
project environment, in the project folder `$RAKUTEN_HOME`, with the worker's `RAKUTEN_*`
settings; its last stdout line (the command's JSON summary) is the task's XCom. Exit code 99
means "nothing to do" and leaves the task skipped, its reason in the log.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Final

from airflow.sdk import Asset

logger = logging.getLogger(__name__)

# Moved by every promotion; schedules rakuten_batch_predict.
CHAMPION_ASSET: Final = Asset(
    "rakuten://models/rakuten-product-classifier/champion",
    group="model",
    extra={"registry": "MLflow", "alias": "champion"},
)
TIMEZONE: Final = "Europe/Paris"
GPU_QUEUE: Final = "gpu"  # a worker with a GPU takes it (`airflow celery worker --queues gpu`)
GPU_POOL: Final = "gpu"  # one slot per GPU worker: a training takes all of its host's GPUs

# A scheduled run that starts later than this after its slot missed it (the DAG was paused, or
# the scheduler down or busy): it does nothing, so that unpausing never starts work at once.
MISSED_SLOT: Final = timedelta(hours=1)

DEFAULT_ARGS: Final[dict[str, Any]] = {
    "owner": "catalogue-data-team",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
}

# The run's own ML parameters (params.yaml with the trigger form's changes), one file per run.
RUN_PARAMS: Final = (
    '"$RAKUTEN_DATA_ROOT/runs/{{ run_id | replace(":", "-") | replace("+", "-") }}/params.yaml"'
)
# The logical date of a run; an Asset-triggered run has none, so its day is when it runs.
RUN_DAY: Final = "{{ (dag_run.logical_date or dag_run.run_after).strftime('%Y-%m-%d') }}"


def rakuten(arguments: str, run_params: bool = False) -> str:
    """The bash command of a task that runs `rakuten ARGUMENTS` in the project folder."""
    setup = (
        'cd "${RAKUTEN_HOME:?RAKUTEN_HOME must name the project folder}" && '
        'export RAKUTEN_DATA_ROOT="${RAKUTEN_DATA_ROOT:-data}" && '
    )
    if run_params:
        setup += f"export RAKUTEN_PARAMS_FILE={RUN_PARAMS} && "
    return f"{setup}exec rakuten {arguments}"


def missed_slot(dag_run: Any, now: datetime) -> bool:
    """Whether a run is a scheduled one starting more than MISSED_SLOT after its slot (logged)."""
    late = now - dag_run.run_after
    if dag_run.run_type != "scheduled" or late <= MISSED_SLOT:
        return False
    logger.warning(
        "scheduled run for %s starts %s after its slot (more than %s): a missed slot, so this run "
        "does nothing; the next slot runs as scheduled, and a triggered run runs now",
        dag_run.run_after.isoformat(),
        str(late).split(".")[0],
        MISSED_SLOT,
    )
    return True
