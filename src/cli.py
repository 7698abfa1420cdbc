"""The `rakuten` command line: one command per pipeline step (also what DVC and Airflow run)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from src.config import get_settings

app = typer.Typer(
    help="Rakuten France product-type classifier: data, training, registry and predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Data steps: make synthetic data, ingest, validate, build datasets.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.callback()
def main(
    log_level: str = typer.Option(None, help="Logging level (default: RAKUTEN_LOG_LEVEL or INFO)."),
) -> None:
    """Configure logging for every command."""
    logging.basicConfig(
        level=(log_level or get_settings().log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
