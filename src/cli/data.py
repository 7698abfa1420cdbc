"""`rakuten data`: synthetic data, ingest, validate, make-dataset."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from src.config import at_revision, get_settings, load_params, parse_data_source
from src.monitoring.push import monitored

app = typer.Typer(
    help="Data steps: make synthetic data, ingest, validate, build datasets.",
    no_args_is_help=True,
)


@app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write, in the hub's layout."),
    rows: int = typer.Option(None, min=1, help="Labelled train rows (default: params.yaml)."),
    test_rows: int = typer.Option(None, min=0, help="Test rows (default: params.yaml)."),
    images: bool = typer.Option(None, "--images/--no-images", help="Write product photos."),
    image_size: int = typer.Option(None, min=8, help="Photo side in pixels (real: 500)."),
    images_zip: bool = typer.Option(False, "--zip/--no-zip", help="Also pack images_low.zip."),
    seed: int = typer.Option(None, help="Random seed; the same seed gives the same bytes."),
    copies: float = typer.Option(
        None,
        min=0,
        max=0.99,
        help="Share of rows that copy an earlier listing's title (and half the time its "
        "description) under a new productid, as the real catalogue does (default: params.yaml).",
    ),
    workers: int = typer.Option(None, min=1, help="Processes (default: one per core)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it is not empty."),
    skew: str = typer.Option(
        None, help="Drift: comma-separated prdtypecodes that get --skew-share of the rows."
    ),
    skew_share: float = typer.Option(0.8, min=0, max=1, help="Share of rows in the --skew types."),
    no_description: float = typer.Option(
        None, min=0, max=1, help="Drift: share of rows without description (real: 0.35)."
    ),
    missing_photos: float = typer.Option(
        None, min=0, max=1, help="Drift: share of rows without photo (real: 0.015)."
    ),
) -> None:
    """Write a synthetic Rakuten catalogue (CSVs and photos) exactly in the hub's layout.

    Options left out come from the `synthetic` block of params.yaml. --skew, --no-description
    and --missing-photos make a shifted catalogue, to produce a drifted batch on purpose.
    """
    from src.data.synth import Shift, synthesize

    try:
        classes = tuple(int(code) for code in skew.split(",")) if skew else ()
    except ValueError:
        raise typer.BadParameter(f"--skew takes prdtypecodes like 10,40 (got {skew!r})") from None

    defaults = load_params().synthetic
    summary = synthesize(
        out,
        rows=rows or defaults.rows,
        test_rows=defaults.test_rows if test_rows is None else test_rows,
        images=defaults.images if images is None else images,
        image_size=image_size or defaults.image_size,
        seed=defaults.seed if seed is None else seed,
        copies=defaults.copies if copies is None else copies,
        images_zip=images_zip,
        workers=workers,
        overwrite=overwrite,
        shift=Shift(classes, skew_share, no_description, missing_photos),
    )
    typer.echo(json.dumps(asdict(summary)))


def _data_source(value: str | None) -> str | None:
    """Check `--source` early, so that a typo is a usage error."""
    if value is not None:
        try:
            parse_data_source(value)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    return value


@app.command("ingest")
def data_ingest(
    source: str = typer.Option(
        None,
        callback=_data_source,
        help="hf | hf://OWNER/REPO@REVISION | DIR | synthetic (default: RAKUTEN_DATA_SOURCE).",
    ),
    revision: str = typer.Option(
        None,
        help="Branch, tag or commit of a hub source (default: the source's own, or main); "
        "ignored, with a warning, for a folder or synthetic source.",
    ),
    out: Path = typer.Option(None, help="Raw snapshot folder (default: RAKUTEN_DATA_ROOT/raw)."),
) -> None:
    """Fetch the raw data into a versioned snapshot with MANIFEST.json; unchanged data is skipped.

    The training datasets uploaded over the API (RAKUTEN_INCOMING_DIR/datasets/training/) are
    added to the source's train rows. Prints a JSON summary (folder, version id, whether anything
    changed, the datasets added) on stdout.
    """
    from src.data.ingest import ingest, training_datasets

    settings = get_settings()
    data_source = at_revision(parse_data_source(source) if source else settings.source, revision)
    uploads = training_datasets(settings.incoming)
    with monitored("ingest") as run:
        summary = ingest(data_source, out or settings.data_root / "raw", load_params(), uploads)
        run.summary(summary)
    typer.echo(json.dumps(summary))


@app.command("validate")
def data_validate(
    raw_dir: Path = typer.Argument(..., help="Raw snapshot folder (what `ingest` writes)."),
    interim_dir: Path = typer.Option(
        None, help="Quarantine and photo checks (default: RAKUTEN_DATA_ROOT/interim)."
    ),
    report: Path = typer.Option(
        None, help="Quality report JSON (default: INTERIM_DIR/quality_report.json)."
    ),
    workers: int = typer.Option(None, min=1, help="Processes decoding photos (default: per core)."),
) -> None:
    """Check raw data against the data contract; write the quality report and the quarantine.

    Rows that break a row rule go to INTERIM_DIR/quarantine.csv with the reason; a structural
    break (missing column, labels not aligned) exits 1 naming it. Prints a JSON summary.
    """
    from src.data.validate import validate

    interim = interim_dir or get_settings().data_root / "interim"
    with monitored("validate") as run:
        summary = validate(raw_dir, interim, report, workers)
        run.summary(summary)
    typer.echo(json.dumps(summary))


@app.command("make-dataset")
def data_make_dataset(
    raw_dir: Path = typer.Argument(..., help="Raw snapshot folder (what `ingest` writes)."),
    out_dir: Path = typer.Argument(..., help="Processed folder: Parquet splits and report."),
    interim_dir: Path = typer.Option(
        None, help="Quarantine and photo checks (default: RAKUTEN_DATA_ROOT/interim)."
    ),
    workers: int = typer.Option(None, min=1, help="Processes decoding photos (default: per core)."),
) -> None:
    """Validate, clean and split raw data into train/val/test/unlabelled Parquet files.

    The split is pinned by a hash of each listing's group key: copies of a product (same normalised
    title) land together (params.yaml `make_dataset`). Prints a JSON summary.
    """
    from src.data.make_dataset import make_dataset

    interim = interim_dir or get_settings().data_root / "interim"
    with monitored("make_dataset") as run:
        summary = make_dataset(raw_dir, out_dir, load_params().make_dataset, interim, workers)
        run.summary(summary)
    typer.echo(json.dumps(summary))
