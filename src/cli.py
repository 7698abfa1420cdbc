"""The `rakuten` command line: one command per pipeline step (also what DVC and Airflow run)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import typer

from src.config import get_settings, load_params
from src.errors import RakutenError

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="Rakuten France product-type classifier: data, training, registry and predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Data steps: make synthetic data, ingest, validate, build datasets.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def run() -> None:
    """Entry point of `rakuten`: expected failures end with one line on stderr and exit 1."""
    try:
        app()
    except RakutenError as error:
        logger.debug("failed", exc_info=True)
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None


@app.callback()
def main(
    log_level: str = typer.Option(None, help="Logging level (default: RAKUTEN_LOG_LEVEL or INFO)."),
) -> None:
    """Configure logging for every command."""
    logging.basicConfig(
        level=(log_level or get_settings().log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write, in the hub's layout."),
    rows: int = typer.Option(None, min=1, help="Labelled train rows (default: params.yaml)."),
    test_rows: int = typer.Option(None, min=0, help="Test rows (default: params.yaml)."),
    images: bool = typer.Option(None, "--images/--no-images", help="Write product photos."),
    image_size: int = typer.Option(None, min=8, help="Photo side in pixels (real: 500)."),
    images_zip: bool = typer.Option(False, "--zip/--no-zip", help="Also pack images_low.zip."),
    seed: int = typer.Option(None, help="Random seed; the same seed gives the same bytes."),
    workers: int = typer.Option(None, min=1, help="Processes (default: one per core)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it is not empty."),
) -> None:
    """Write a synthetic Rakuten catalogue (CSVs and photos) exactly in the hub's layout.

    Options left out come from the `synthetic` block of params.yaml.
    """
    from src.data.synth import synthesize

    defaults = load_params().synthetic
    summary = synthesize(
        out,
        rows=rows or defaults.rows,
        test_rows=defaults.test_rows if test_rows is None else test_rows,
        images=defaults.images if images is None else images,
        image_size=image_size or defaults.image_size,
        seed=defaults.seed if seed is None else seed,
        images_zip=images_zip,
        workers=workers,
        overwrite=overwrite,
    )
    typer.echo(json.dumps(asdict(summary)))
