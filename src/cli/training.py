"""`rakuten train`, `fuse`, `evaluate`: the branches, their fusion, the test scores."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from src.cli.common import MODELS, PROCESSED, RAW, paths
from src.config import get_settings, load_params
from src.monitoring.push import monitored

app = typer.Typer()


@app.command("train")
def train(
    branch: list[str] = typer.Option(
        None, help="Branch to train (repeatable; default: all of params.yaml train.branches)."
    ),
    processed: Path = PROCESSED,
    raw: Path = RAW,
    models: Path = MODELS,
) -> None:
    """Train model branches on the train split (val for selection) into MODELS/branches/NAME.

    Without --branch, every enabled branch is trained and then fused (see `rakuten fuse`).
    """
    from src.models.train import fuse_branches, train_branches

    processed_dir, raw_dir, models_dir = paths(processed, raw, models)
    params = load_params()
    with monitored("train", branch=",".join(branch) if branch else "all") as run:
        summary: dict[str, object] = {
            "branches": train_branches(processed_dir, raw_dir, models_dir, params, branch or None)
        }
        if not branch:
            summary["fusion"] = fuse_branches(processed_dir, raw_dir, models_dir, params)
        run.summary(summary)
    typer.echo(json.dumps(summary, default=str))


@app.command("fuse")
def fuse(processed: Path = PROCESSED, raw: Path = RAW, models: Path = MODELS) -> None:
    """Fit the fusion weights of the trained branches on val; package it as an MLflow model."""
    from src.models.train import fuse_branches

    processed_dir, raw_dir, models_dir = paths(processed, raw, models)
    with monitored("fuse") as run:
        summary = fuse_branches(processed_dir, raw_dir, models_dir, load_params())
        run.summary(summary)
    typer.echo(json.dumps(summary))


@app.command("evaluate")
def evaluate(
    processed: Path = PROCESSED,
    raw: Path = RAW,
    models: Path = MODELS,
    reports: Path = typer.Option(None, help="Reports folder (default: RAKUTEN_REPORTS_DIR)."),
) -> None:
    """Score every branch and the fused model on the pinned test split; write the reports.

    Weighted F1 (the challenge metric), macro F1, accuracy and per-class scores go to
    REPORTS/metrics.json, one confusion matrix per model to REPORTS/confusion_NAME.png.
    """
    from src.models.train import evaluate_models

    processed_dir, raw_dir, models_dir = paths(processed, raw, models)
    reports_dir = reports or get_settings().reports_dir
    with monitored("evaluate") as run:
        summary = evaluate_models(processed_dir, raw_dir, models_dir, reports_dir)
        run.summary(summary)
    typer.echo(json.dumps(summary))
