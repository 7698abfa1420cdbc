"""`rakuten monitor`: drift of a day's batch, realised performance from late labels, retraining."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from src.cli.common import RAW, REPORTS, SKIPPED_EXIT_CODE, registry
from src.config import get_settings, load_params
from src.monitoring.push import monitored

app = typer.Typer(
    help="The closed loop: drift checks, realised performance from late labels, retraining.",
    no_args_is_help=True,
)

DAY = typer.Option(..., "--date", formats=["%Y-%m-%d"], help="Batch day (YYYY-MM-DD).")
ALIAS = typer.Option("champion", help="Alias whose batch is checked.")


@app.command("drift")
def monitor_drift(
    logical_date: datetime = DAY,
    alias: str = ALIAS,
    raw: Path = RAW,
    incoming: Path = typer.Option(None, help="Incoming listings (default: RAKUTEN_INCOMING_DIR)."),
    reports: Path = REPORTS,
) -> None:
    """Compare the day's batch with its model's reference profile (params.yaml `drift`).

    Writes REPORTS/drift/DATE.json, a row of the store's drift_reports and pushes the scores.
    A drifted batch is a finding: the command succeeds and says so in its summary.
    """
    from src.db.engine import make_engine
    from src.models.batch_predict import batch_image_dirs
    from src.monitoring.loop import drift

    settings = get_settings()
    with monitored("drift", alias=alias) as run:
        summary = drift(
            logical_date.date(),
            alias,
            engine=make_engine(),
            client=registry(),
            params=load_params(),
            reports_dir=reports or settings.reports_dir,
            image_dirs=batch_image_dirs(
                raw or settings.data_root / "raw", incoming or settings.incoming
            ),
        )
        run.summary(summary)
    typer.echo(json.dumps(summary))


@app.command("performance")
def monitor_performance(
    since: datetime = typer.Option(
        None, "--since", formats=["%Y-%m-%d"], help="First batch day to score (default: all)."
    ),
    alias: str = ALIAS,
    labels: Path = typer.Option(
        None, help="Late labels, CSVs (default: RAKUTEN_INCOMING_DIR/labels)."
    ),
) -> None:
    """Store the late labels that arrived, then score each batch day on its labelled products.

    Label files are in the hub's Y layout (unnamed index, prdtypecode) with a productid column;
    a file is read again each time, its labels stored once. Stores and pushes weighted F1, macro
    F1 and accuracy per day.
    """
    from src.db.engine import make_engine
    from src.monitoring.loop import LABELS_DIR, performance

    settings = get_settings()
    with monitored("performance", alias=alias) as run:
        summary = performance(
            alias,
            None if since is None else since.date(),
            engine=make_engine(),
            labels_dir=labels or settings.incoming / LABELS_DIR,
            params=load_params(),
        )
        run.summary(summary)
    typer.echo(json.dumps(summary))


@app.command("retrain")
def monitor_retrain(logical_date: datetime = DAY, alias: str = ALIAS) -> None:
    """Say whether the day asks for a retraining (drift, or realised F1 under the gate's floor).

    Prints the reason and the training run id to trigger; exits 99 when there is none (within
    drift.cooldown_hours of the previous request, or nothing to retrain for).
    """
    from src.db.engine import make_engine
    from src.monitoring.loop import retrain_decision

    # One group for the loop's requests, whichever alias asked: the count is of them all.
    with monitored("retrain") as run:
        decision = retrain_decision(
            logical_date.date(),
            alias,
            engine=make_engine(),
            params=load_params(),
            now=datetime.now(UTC),
        )
        run.summary(decision)
        typer.echo(json.dumps(decision))
        if not decision["retrain"]:
            raise typer.Exit(SKIPPED_EXIT_CODE)
