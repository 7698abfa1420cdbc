"""What the command groups share: default folders, options, output formats, the registry."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from src.config import get_settings
from src.errors import SKIPPED_EXIT_CODE as SKIPPED_EXIT_CODE

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from src.registry.tracking import TrainingPaths


def paths(processed: Path | None, raw: Path | None, models: Path | None) -> tuple[Path, Path, Path]:
    """The processed dataset, raw snapshot and models folders, defaulting to the settings."""
    settings = get_settings()
    return (
        processed or settings.data_root / "processed",
        raw or settings.data_root / "raw",
        models or settings.models_dir,
    )


PROCESSED = typer.Option(None, help="Processed dataset (default: RAKUTEN_DATA_ROOT/processed).")
RAW = typer.Option(None, help="Raw snapshot, for the photos (default: RAKUTEN_DATA_ROOT/raw).")
MODELS = typer.Option(None, help="Models folder (default: RAKUTEN_MODELS_DIR).")


class OutputFormat(StrEnum):
    """How the `db` queries print: JSON lines for scripts, or a table for people."""

    JSON = "json"
    TABLE = "table"


FORMAT = typer.Option(OutputFormat.JSON, "--format", help="json (JSON lines) or table.")
DATE = typer.Option(None, "--date", formats=["%Y-%m-%d"], help="Logical date (YYYY-MM-DD).")
MODEL = typer.Option(None, help="Registered model name (needed if several have that version).")


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def echo_rows(rows: Sequence[Mapping[str, object]], output: OutputFormat) -> None:
    """Print records as JSON lines, or as an aligned table."""
    if output is OutputFormat.JSON:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False, default=str))
        return
    if not rows:
        return
    columns = list(rows[0])
    cells = [[cell(row[column]) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    for line in [columns, *cells]:
        padded = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        typer.echo("  ".join(padded).rstrip())


def echo_record(record: Mapping[str, object], output: OutputFormat) -> None:
    """Print one record as a JSON line, or as `key: value` lines."""
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(record, ensure_ascii=False, default=str))
        return
    width = max(map(len, record))
    for key, value in record.items():
        typer.echo(f"{key.ljust(width)}  {cell(value)}")


REPORTS = typer.Option(None, help="Reports folder (default: RAKUTEN_REPORTS_DIR).")
BY = typer.Option(None, help="Who moves the alias (default: your user name, or the pipeline).")


def training_paths(
    processed: Path | None, raw: Path | None, models: Path | None, reports: Path | None
) -> TrainingPaths:
    """A pipeline run's folders, defaulting to the settings."""
    from src.registry.tracking import TrainingPaths

    processed_dir, raw_dir, models_dir = paths(processed, raw, models)
    return TrainingPaths(processed_dir, raw_dir, models_dir, reports or get_settings().reports_dir)


def registry() -> MlflowClient:
    """An MLflow client on RAKUTEN_MLFLOW_TRACKING_URI."""
    from src.registry.tracking import tracking_client

    return tracking_client(get_settings().mlflow_tracking_uri)
