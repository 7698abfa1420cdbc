"""`rakuten predict` (a CSV of listings) and `predict-batch` (the day's batch, into the store)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer

from src.cli.common import RAW, SKIPPED_EXIT_CODE, registry
from src.config import get_settings
from src.monitoring.push import monitored

app = typer.Typer()


@app.command("predict")
def predict(
    input_csv: Path = typer.Option(..., "--input", help="Listings in the hub's X layout (CSV)."),
    output: Path = typer.Option(..., help="Predictions CSV to write."),
    images: Path = typer.Option(
        None, help="Folder of image_<imageid>_product_<productid>.jpg photos."
    ),
    model: str = typer.Option(
        None, help="Model path or MLflow URI (default: the registry's champion)."
    ),
    batch_size: int = typer.Option(2048, min=1, help="Products per model call."),
) -> None:
    """Predict the product type of every listing in INPUT; write OUTPUT with the top 3.

    OUTPUT has productid, prdtypecode, label, probability and top3 (JSON) per listing.
    """
    from src.models.predict import predict_listings

    summary = predict_listings(
        input_csv, output, images, model, get_settings().mlflow_tracking_uri, batch_size
    )
    typer.echo(json.dumps(summary))


@app.command("predict-batch")
def predict_batch(
    logical_date: datetime = typer.Option(
        ..., "--date", formats=["%Y-%m-%d"], help="Logical date of the batch (YYYY-MM-DD)."
    ),
    alias: str = typer.Option(
        "champion", help="Registry alias of the model: champion, or challenger (shadow scoring)."
    ),
    skip_missing: bool = typer.Option(
        False,
        "--skip-missing",
        help=f"If the alias is not set, say so and exit {SKIPPED_EXIT_CODE} (Airflow: skipped).",
    ),
    raw: Path = RAW,
    incoming: Path = typer.Option(
        None, help="New listings, X layout CSVs (default: RAKUTEN_INCOMING_DIR)."
    ),
    batch_size: int = typer.Option(2048, min=1, help="Products per model call."),
) -> None:
    """Score the listings the model has not scored yet; store them as the batch of DATE.

    The listings are RAW/X_test_update.csv and every CSV in INCOMING. A rerun of a date replaces
    that date's batch in one transaction. Also writes
    RAKUTEN_DATA_ROOT/predictions/DATE/NAME-vVERSION.parquet.
    """
    from src.db.engine import make_engine
    from src.models.batch_predict import predict_batch as run_batch
    from src.registry.lifecycle import NoModelError, model_ref

    settings = get_settings()
    with monitored("predict_batch", alias=alias) as run:
        try:
            model = model_ref(registry(), alias)
        except NoModelError as error:
            if not skip_missing:
                raise
            typer.echo(json.dumps({"skipped": f"{error}: nothing to score"}))
            raise typer.Exit(SKIPPED_EXIT_CODE) from None
        summary = run_batch(
            logical_date.date(),
            model=model,
            raw_dir=raw or settings.data_root / "raw",
            incoming_dir=incoming or settings.incoming,
            predictions_dir=settings.data_root / "predictions",
            engine=make_engine(),
            tracking_uri=settings.mlflow_tracking_uri,
            batch_size=batch_size,
        )
        run.summary(summary)
    typer.echo(json.dumps(summary))
