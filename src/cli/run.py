"""`rakuten run`: a pipeline run in a terminal: follow its Airflow tasks, then sum up what it did.

`make run` sends Airflow's own logs to a file and shows these two instead: `follow` prints one
line per task as it finishes (state, duration), read from Airflow's metadata database (its tables
`dag_run` and `task_instance`, the same in Airflow 2 and 3, on SQLite or PostgreSQL); `summary`
prints what the steps wrote (src/registry/summary.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import typer

from src.cli.common import registry
from src.config import get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(
    help="A pipeline run in the terminal: follow its Airflow tasks, then sum up what it did.",
    no_args_is_help=True,
)

FINISHED: Final = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
RUN_FINISHED: Final = frozenset({"success", "failed"})
# SQL on Airflow's metadata tables (SQLAlchemy is imported by the commands that run it, so that
# `rakuten` starts without it).
_NEWEST_RUN: Final = (
    "SELECT id, run_id, state, start_date, end_date FROM dag_run WHERE dag_id = :dag "
    "ORDER BY id DESC LIMIT 1"
)
_TASKS: Final = (
    "SELECT task_id, map_index, state, start_date, end_date, try_number FROM task_instance "
    "WHERE dag_id = :dag AND run_id = :run"
)


def _seconds(start: Any, end: Any) -> float | None:
    """Seconds between two timestamps as the database returns them (datetime or ISO text)."""
    if start is None or end is None:
        return None
    parse: Callable[[Any], datetime] = lambda v: (  # noqa: E731
        v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    )
    return (parse(end) - parse(start)).total_seconds()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{seconds:.1f} s"


def task_line(row: Any) -> str:
    """One finished task as the terminal shows it: state, name, duration, try."""
    name = row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]"
    tries = f" (try {row.try_number})" if (row.try_number or 0) > 1 else ""
    seconds = _seconds(row.start_date, row.end_date)
    return f"  {row.state:<16}{name:<22}{_duration(seconds):>12}{tries}"


def follow_run(
    engine: Engine,
    dag_id: str,
    echo: Callable[[str], None],
    *,
    alive: Callable[[], bool],
    interval: float = 1.0,
    after_id: int | None = None,
) -> str | None:
    """Print each task of the first run of `dag_id` above `after_id` as it finishes, until the run
    ends or `alive` says its process has gone; return the run's last state (None: no run)."""
    from sqlalchemy import text

    shown: set[tuple[str, int]] = set()
    run: Any = None
    while True:
        running = alive()  # read before the database, so a last poll sees what it left
        with engine.connect() as connection:
            newest = connection.execute(text(_NEWEST_RUN), {"dag": dag_id}).first()
            if newest is not None and (after_id is None or newest.id > after_id):
                if run is None:
                    echo(f"{dag_id}, run {newest.run_id}:")
                run = newest
                tasks = connection.execute(text(_TASKS), {"dag": dag_id, "run": run.run_id}).all()
                finished = [t for t in tasks if t.state in FINISHED]
                for task in sorted(finished, key=lambda t: (str(t.end_date), t.task_id)):
                    if (task.task_id, task.map_index) not in shown:
                        shown.add((task.task_id, task.map_index))
                        echo(task_line(task))
        if run is not None and run.state in RUN_FINISHED:
            echo(f"{dag_id}: {run.state} in {_duration(_seconds(run.start_date, run.end_date))}")
            return str(run.state)
        if not running:
            return None if run is None else str(run.state)
        time.sleep(interval)


def newest_run_id(engine: Engine, dag_id: str) -> int | None:
    """The database id of the newest run of `dag_id` (None when there is none)."""
    from sqlalchemy import text

    with engine.connect() as connection:
        newest = connection.execute(text(_NEWEST_RUN), {"dag": dag_id}).first()
    return None if newest is None else int(newest.id)


@app.command("follow", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def follow(
    ctx: typer.Context,
    airflow_db: str = typer.Option(
        ..., help="SQLAlchemy URL of Airflow's metadata database (sqlite:///.airflow/airflow.db)."
    ),
    log: Path = typer.Option(..., help="File that receives the command's own output."),
    dag: str = typer.Option("rakuten_training", help="The DAG the command runs."),
    interval: float = typer.Option(1.0, min=0.1, help="Seconds between two looks."),
) -> None:
    """Run a command that runs a DAG; print each of its tasks as it finishes, its log to a file.

    COMMAND (after --) writes its own output to LOG; this prints one line per task of the DAG
    run it starts (state, duration) and exits with COMMAND's status, 1 if the run failed.

    `make run`: rakuten run follow --airflow-db URL --log FILE -- airflow dags test DAG
    """
    if not ctx.args:
        raise typer.BadParameter("give the command to run after --")
    from sqlalchemy import create_engine

    engine = create_engine(airflow_db)
    before = newest_run_id(engine, dag)
    log.parent.mkdir(parents=True, exist_ok=True)
    typer.echo(f"{dag}: Airflow's log goes to {log}")
    with log.open("ab") as output:
        process = subprocess.Popen(ctx.args, stdout=output, stderr=subprocess.STDOUT)
        try:
            state = follow_run(
                engine,
                dag,
                typer.echo,
                alive=lambda: process.poll() is None,
                interval=interval,
                after_id=before,
            )
        finally:
            status = process.wait()
    if state is None:
        typer.echo(f"{dag}: no run started; see {log}", err=True)
    if status == 0 and state != "success":
        status = 1
    if status:
        typer.echo(f"{dag}: failed; Airflow's log: {log}", err=True)
    raise typer.Exit(status)


@app.command("summary")
def summary(
    output_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON line."),
) -> None:
    """Sum up the last pipeline run from what its steps wrote.

    The scores of each branch and of the fused model, the fusion weights, the gate's decision,
    the champion, the batch of predictions and where it is, and the commands that open MLflow,
    Airflow and the API.
    """
    from src.db.engine import make_engine
    from src.registry.summary import render, run_summary

    settings = get_settings()
    report = run_summary(
        registry(),
        make_engine(),
        reports_dir=settings.reports_dir,
        models_dir=settings.models_dir,
        predictions_dir=settings.data_root / "predictions",
    )
    if output_json:
        typer.echo(json.dumps(report, default=str))
        return
    for line in render(report):
        typer.echo(line)
