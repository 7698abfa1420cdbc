"""`rakuten model`: the registry's lifecycle: register, gate, promote, roll back, history, card."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from src.cli.common import (
    BY,
    FORMAT,
    MODELS,
    PROCESSED,
    RAW,
    REPORTS,
    SKIPPED_EXIT_CODE,
    OutputFormat,
    echo_rows,
    registry,
    training_paths,
)
from src.config import get_settings, load_params
from src.errors import RakutenError
from src.monitoring.push import monitored

app = typer.Typer(
    help="The model registry (MLflow): track and register, gate, promote, roll back, model cards.",
    no_args_is_help=True,
)


@app.command("changes")
def model_changes(
    raw: Path = RAW,
    force: bool = typer.Option(False, "--force", help="Train even if nothing changed."),
) -> None:
    """Say whether a pipeline run must train: exit 99 if a version was already registered from
    this data version with these params (Airflow skips training then), 0 otherwise.

    The decision and its reason also go to REPORTS/changes.json (for `rakuten run summary`)."""
    from datetime import UTC, datetime

    from src.data.io import write_json
    from src.registry.lifecycle import CHANGES_FILE, training_needed

    settings = get_settings()
    with monitored("changes") as run:
        summary = training_needed(
            registry(), raw or settings.data_root / "raw", load_params(), force
        )
        run.summary(summary)
        checked_at = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(settings.reports_dir / CHANGES_FILE, {**summary, "checked_at": checked_at})
        typer.echo(json.dumps(summary))
        if not summary["train"]:
            raise typer.Exit(SKIPPED_EXIT_CODE)


@app.command("register")
def model_register(
    processed: Path = PROCESSED,
    raw: Path = RAW,
    models: Path = MODELS,
    reports: Path = REPORTS,
    reason: str = typer.Option(
        None, help="Why this training ran (tag retrain_reason of the run and the version)."
    ),
) -> None:
    """Track the pipeline run in MLflow and register its model as a new version @challenger.

    One parent run with params, lineage tags (git commit, data version, params hash, Airflow
    run), test metrics and artifacts (reports, confusion matrices, data-quality report, the
    model); a nested run per branch (per-epoch metrics) and per search trial. Run it after
    `rakuten evaluate`. Under Airflow, a retried task reuses the version it registered.
    """
    from src.registry.lifecycle import register

    paths = training_paths(processed, raw, models, reports)
    with monitored("register") as run:
        summary = register(registry(), paths, load_params(), os.environ, reason or None)
        run.summary(summary)
    typer.echo(json.dumps(summary))


@app.command("validate")
def model_validate(
    version: str = typer.Option(None, help="Version to gate (default: @challenger)."),
    data: Path = typer.Option(
        None, help="Extra labelled data in the hub's layout (X_train, Y_train, images)."
    ),
    processed: Path = PROCESSED,
    raw: Path = RAW,
    reports: Path = REPORTS,
    fail: bool = typer.Option(
        True, "--fail/--no-fail", help="Exit 1 when the gate fails (--no-fail: only record it)."
    ),
) -> None:
    """Gate a version against @champion on the pinned test split (plus --data); exit 1 if failed.

    Checks (params.yaml `gate`): weighted F1 over a floor, no drop beyond a tolerance against the
    champion (with the paired bootstrap CI of the difference), no class under a per-class floor.
    The decision, numbers and reasons go on the version (tags gate.*), REPORTS/gate.json and a
    gate run in MLflow.
    """
    from src.registry.lifecycle import validate

    paths = training_paths(processed, raw, None, reports)
    with monitored("gate") as run:
        summary = validate(registry(), paths, load_params().gate, version, data)
        run.summary(summary)
    typer.echo(json.dumps(summary))
    if fail and summary["decision"] != "passed":
        reasons = "; ".join(summary["reasons"])
        raise RakutenError(f"version {summary['version']} failed the gate: {reasons}")


@app.command("promote")
def model_promote(
    version: str = typer.Option(None, help="Version to promote (default: @challenger)."),
    auto: bool = typer.Option(
        False, "--auto", help="The pipeline's step: under manual approval, only ask a person."
    ),
    skip_failed: bool = typer.Option(
        False,
        "--skip-failed",
        help=f"If the version failed the gate, say why and exit {SKIPPED_EXIT_CODE} (Airflow).",
    ),
    by: str = BY,
) -> None:
    """Move @champion to a version that passed the gate, recording the move in the audit log.

    With params.yaml `promote.approval: manual`, `--auto` leaves the champion and marks the
    version as awaiting approval; a person then runs `rakuten model promote --version V`.
    """
    from src.registry.lifecycle import GateNotPassedError, actor, promote

    approval = load_params().promote.approval
    who = by or actor(auto, os.environ)
    with monitored("promote") as run:
        try:
            summary = promote(registry(), approval, version, auto, who)
        except GateNotPassedError as error:
            if not skip_failed:
                raise
            typer.echo(json.dumps({"skipped": str(error)}))
            raise typer.Exit(SKIPPED_EXIT_CODE) from None
        run.summary(summary)
    typer.echo(json.dumps(summary))


@app.command("rollback")
def model_rollback(
    reason: str = typer.Option("manual rollback", help="Why, for the audit log."),
    by: str = BY,
) -> None:
    """Move @champion back to the previous champion in one step (recorded in the audit log)."""
    from src.registry.lifecycle import actor, rollback

    with monitored("rollback") as run:
        summary = rollback(registry(), by or actor(False, os.environ), reason)
        run.summary(summary)
    typer.echo(json.dumps(summary))


@app.command("history")
def model_history(output: OutputFormat = FORMAT) -> None:
    """Every move of @champion, oldest first: action, version, previous version, who, why, when."""
    from src.registry.lifecycle import champion_history

    echo_rows(champion_history(registry()), output)


@app.command("card")
def model_card(
    version: str = typer.Option(
        None, help="Version whose card to print (default: @champion, else @challenger)."
    ),
) -> None:
    """Print a version's model card (Markdown): intended use, data, scores per class with the
    confusion matrix, the gate's result and reasons, the fusion, known limits, retrain and
    roll back. The same card is an artifact of the version's run in MLflow (model_card.md)."""
    from src.registry.lifecycle import model_card

    typer.echo(model_card(registry(), version), nl=False)
