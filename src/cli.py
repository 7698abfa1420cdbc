"""The `rakuten` command line: one command per pipeline step (also what DVC and Airflow run)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from src.config import get_settings, load_params, parse_data_source
from src.errors import RakutenError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from src.registry.tracking import TrainingPaths

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
db_app = typer.Typer(
    help="The predictions store: migrations, roles, and queries on the recorded predictions.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
params_app = typer.Typer(
    help="ML parameters (params.yaml): write a run's own copy with some values changed.",
    no_args_is_help=True,
)
app.add_typer(params_app, name="params")
model_app = typer.Typer(
    help="The model registry (MLflow): track and register, gate, promote, roll back.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")


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


def _data_source(value: str | None) -> str | None:
    """Check `--source` early, so that a typo is a usage error."""
    if value is not None:
        try:
            parse_data_source(value)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    return value


@data_app.command("ingest")
def data_ingest(
    source: str = typer.Option(
        None,
        callback=_data_source,
        help="hf | hf://OWNER/REPO@REVISION | DIR | synthetic (default: RAKUTEN_DATA_SOURCE).",
    ),
    revision: str = typer.Option(
        None, help="Branch, tag or commit of a hub source (default: the source's own, or main)."
    ),
    out: Path = typer.Option(None, help="Raw snapshot folder (default: RAKUTEN_DATA_ROOT/raw)."),
) -> None:
    """Fetch the raw data into a versioned snapshot with MANIFEST.json; unchanged data is skipped.

    Prints a JSON summary (folder, version id, whether anything changed) on stdout.
    """
    from dataclasses import replace

    from src.config import HubSource
    from src.data.ingest import ingest

    settings = get_settings()
    data_source = parse_data_source(source) if source else settings.source
    if revision:
        if not isinstance(data_source, HubSource):
            raise typer.BadParameter("--revision needs a hub source (hf or hf://OWNER/REPO)")
        data_source = replace(data_source, revision=revision)
    summary = ingest(data_source, out or settings.data_root / "raw", load_params())
    typer.echo(json.dumps(summary))


@data_app.command("validate")
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
    typer.echo(json.dumps(validate(raw_dir, interim, report, workers)))


@data_app.command("make-dataset")
def data_make_dataset(
    raw_dir: Path = typer.Argument(..., help="Raw snapshot folder (what `ingest` writes)."),
    out_dir: Path = typer.Argument(..., help="Processed folder: Parquet splits and report."),
    interim_dir: Path = typer.Option(
        None, help="Quarantine and photo checks (default: RAKUTEN_DATA_ROOT/interim)."
    ),
    workers: int = typer.Option(None, min=1, help="Processes decoding photos (default: per core)."),
) -> None:
    """Validate, clean and split raw data into train/val/test/unlabelled Parquet files.

    The split is pinned by a hash of productid (params.yaml `make_dataset`). Prints a JSON summary.
    """
    from src.data.make_dataset import make_dataset

    interim = interim_dir or get_settings().data_root / "interim"
    summary = make_dataset(raw_dir, out_dir, load_params().make_dataset, interim, workers)
    typer.echo(json.dumps(summary))


def _paths(
    processed: Path | None, raw: Path | None, models: Path | None
) -> tuple[Path, Path, Path]:
    """The processed dataset, raw snapshot and models folders, defaulting to the settings."""
    settings = get_settings()
    return (
        processed or settings.data_root / "processed",
        raw or settings.data_root / "raw",
        models or settings.models_dir,
    )


_PROCESSED = typer.Option(None, help="Processed dataset (default: RAKUTEN_DATA_ROOT/processed).")
_RAW = typer.Option(None, help="Raw snapshot, for the photos (default: RAKUTEN_DATA_ROOT/raw).")
_MODELS = typer.Option(None, help="Models folder (default: RAKUTEN_MODELS_DIR).")


@app.command("train")
def train(
    branch: list[str] = typer.Option(
        None, help="Branch to train (repeatable; default: all of params.yaml train.branches)."
    ),
    processed: Path = _PROCESSED,
    raw: Path = _RAW,
    models: Path = _MODELS,
) -> None:
    """Train model branches on the train split (val for selection) into MODELS/branches/NAME.

    Without --branch, every enabled branch is trained and then fused (see `rakuten fuse`).
    """
    from src.models.train import fuse_branches, train_branches

    processed_dir, raw_dir, models_dir = _paths(processed, raw, models)
    params = load_params()
    summary: dict[str, object] = {
        "branches": train_branches(processed_dir, raw_dir, models_dir, params, branch or None)
    }
    if not branch:
        summary["fusion"] = fuse_branches(processed_dir, raw_dir, models_dir, params)
    typer.echo(json.dumps(summary, default=str))


@app.command("fuse")
def fuse(processed: Path = _PROCESSED, raw: Path = _RAW, models: Path = _MODELS) -> None:
    """Fit the fusion weights of the trained branches on val; package it as an MLflow model."""
    from src.models.train import fuse_branches

    processed_dir, raw_dir, models_dir = _paths(processed, raw, models)
    typer.echo(json.dumps(fuse_branches(processed_dir, raw_dir, models_dir, load_params())))


@app.command("evaluate")
def evaluate(
    processed: Path = _PROCESSED,
    raw: Path = _RAW,
    models: Path = _MODELS,
    reports: Path = typer.Option(None, help="Reports folder (default: RAKUTEN_REPORTS_DIR)."),
) -> None:
    """Score every branch and the fused model on the pinned test split; write the reports.

    Weighted F1 (the challenge metric), macro F1, accuracy and per-class scores go to
    REPORTS/metrics.json, one confusion matrix per model to REPORTS/confusion_NAME.png.
    """
    from src.models.train import evaluate_models

    processed_dir, raw_dir, models_dir = _paths(processed, raw, models)
    reports_dir = reports or get_settings().reports_dir
    typer.echo(json.dumps(evaluate_models(processed_dir, raw_dir, models_dir, reports_dir)))


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


SKIPPED_EXIT_CODE = 99  # what Airflow's bash tasks read as "skipped" (skip_on_exit_code)


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
    raw: Path = _RAW,
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
    try:
        model = model_ref(_registry(), alias)
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
    typer.echo(json.dumps(summary))


@app.command("serve")
def serve(
    host: str = typer.Option(None, help="Address to listen on (default: RAKUTEN_API_HOST)."),
    port: int = typer.Option(
        None, min=1, max=65535, help="Port to listen on (default: RAKUTEN_API_PORT)."
    ),
    alias: str = typer.Option(
        None, help="Registry alias to serve (default: RAKUTEN_API_MODEL_ALIAS)."
    ),
) -> None:
    """Serve the prediction API (POST /predict, docs at /docs) for the model ALIAS points to.

    It follows the alias: a promotion or a rollback is served within RAKUTEN_API_REFRESH_SECONDS.
    """
    import uvicorn

    from src.serving.app import create_app

    settings = get_settings()
    if alias:
        settings = settings.model_copy(update={"api_model_alias": alias})
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        # The level `--log-level` or RAKUTEN_LOG_LEVEL gave (its access log is at INFO).
        log_level=logging.getLogger().getEffectiveLevel(),
    )


class OutputFormat(StrEnum):
    """How the `db` queries print: JSON lines for scripts, or a table for people."""

    JSON = "json"
    TABLE = "table"


_FORMAT = typer.Option(OutputFormat.JSON, "--format", help="json (JSON lines) or table.")
_DATE = typer.Option(None, "--date", formats=["%Y-%m-%d"], help="Logical date (YYYY-MM-DD).")
_MODEL = typer.Option(None, help="Registered model name (needed if several have that version).")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _echo_rows(rows: Sequence[Mapping[str, object]], output: OutputFormat) -> None:
    """Print records as JSON lines, or as an aligned table."""
    if output is OutputFormat.JSON:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False, default=str))
        return
    if not rows:
        return
    columns = list(rows[0])
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    for line in [columns, *cells]:
        padded = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        typer.echo("  ".join(padded).rstrip())


def _echo_record(record: Mapping[str, object], output: OutputFormat) -> None:
    """Print one record as a JSON line, or as `key: value` lines."""
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(record, ensure_ascii=False, default=str))
        return
    width = max(map(len, record))
    for key, value in record.items():
        typer.echo(f"{key.ljust(width)}  {_cell(value)}")


def _batch_id(
    batch: int | None, logical_date: datetime | None, version: str | None, model: str | None
) -> int:
    """A batch given by its id, or by its date and model version."""
    from src.db.engine import make_engine
    from src.db.queries import find_batch

    if batch is not None:
        return batch
    if logical_date is None or version is None:
        raise typer.BadParameter("give --batch, or --date and --version")
    return find_batch(make_engine(), logical_date.date(), version, model)


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Option("head", help="Alembic revision to migrate to."),
) -> None:
    """Create or migrate the store's tables (as the schema owner: RAKUTEN_DATABASE_ADMIN_URL).

    One transaction; prints the revisions before and after as JSON.
    """
    from src.db.migrate import upgrade

    settings = get_settings()
    typer.echo(json.dumps(upgrade(settings.database_admin_url or settings.database_url, revision)))


@db_app.command("grant")
def db_grant() -> None:
    """Create or update the app and analyst roles and their grants (PostgreSQL; run after upgrade).

    Names and passwords come from RAKUTEN_DATABASE_APP_* and RAKUTEN_DATABASE_ANALYST_*. On SQLite
    there are no roles: it says so and changes nothing.
    """
    from src.db.roles import grant_roles

    typer.echo(json.dumps(grant_roles(get_settings())))


@db_app.command("batches")
def db_batches(logical_date: datetime = _DATE, output: OutputFormat = _FORMAT) -> None:
    """List prediction batches (of one logical date), newest first, failed ones included."""
    from src.db.engine import make_engine
    from src.db.queries import batches

    found = batches(make_engine(), None if logical_date is None else logical_date.date())
    _echo_rows([asdict(batch) for batch in found], output)


@db_app.command("latest")
def db_latest(
    productid: int = typer.Option(..., help="Rakuten product id."),
    alias: str = typer.Option("champion", help="Only batches of a model used under this alias."),
    any_alias: bool = typer.Option(False, "--any-alias", help="Any batch, shadow ones included."),
    output: OutputFormat = _FORMAT,
) -> None:
    """The latest prediction for a product, with the inputs it was made from and its batch."""
    from src.db.engine import make_engine
    from src.db.queries import latest_prediction

    found = latest_prediction(make_engine(), productid, None if any_alias else alias)
    _echo_record(asdict(found), output)


@db_app.command("distribution")
def db_distribution(
    batch: int = typer.Option(None, help="Batch id (see `rakuten db batches`)."),
    logical_date: datetime = _DATE,
    version: str = typer.Option(None, help="Model version of the batch, with --date."),
    model: str = _MODEL,
    output: OutputFormat = _FORMAT,
) -> None:
    """Class distribution of a complete batch: products, share and mean probability per type."""
    from src.db.engine import make_engine
    from src.db.queries import class_distribution

    shares = class_distribution(make_engine(), _batch_id(batch, logical_date, version, model))
    _echo_rows([asdict(share) for share in shares], output)


@db_app.command("agreement")
def db_agreement(
    logical_date: datetime = _DATE,
    champion: str = typer.Option(None, help="Champion's model version, with --date."),
    challenger: str = typer.Option(None, help="Challenger's model version, with --date."),
    model: str = _MODEL,
    champion_batch: int = typer.Option(None, help="Champion's batch id (instead of --date)."),
    challenger_batch: int = typer.Option(None, help="Challenger's batch id (instead of --date)."),
    output: OutputFormat = _FORMAT,
) -> None:
    """Agreement of challenger with champion on the inputs both scored (shadow scoring)."""
    from src.db.engine import make_engine
    from src.db.queries import agreement

    result = agreement(
        make_engine(),
        _batch_id(champion_batch, logical_date, champion, model),
        _batch_id(challenger_batch, logical_date, challenger, model),
    )
    summary = asdict(result)
    by_class = summary.pop("by_class")
    if output is OutputFormat.JSON:
        _echo_record({**summary, "by_class": by_class}, output)
        return
    _echo_record(summary, output)
    typer.echo("")
    _echo_rows(by_class, output)


@db_app.command("counts")
def db_counts(output: OutputFormat = _FORMAT) -> None:
    """Per model version: aliases used, batches, predictions, products scored, first/last date."""
    from src.db.engine import make_engine
    from src.db.queries import model_version_counts

    _echo_rows([asdict(counts) for counts in model_version_counts(make_engine())], output)


@params_app.command("write")
def params_write(
    out: Path = typer.Option(..., help="Parameters file to write (YAML)."),
    assignments: list[str] = typer.Option(
        [],
        "--set",
        help="BLOCK.KEY=VALUE, the value in YAML (e.g. train.branches=[text_tfidf]); repeatable.",
    ),
) -> None:
    """Write RAKUTEN_PARAMS_FILE's parameters with some values changed, validated, to OUT.

    What a pipeline run trains with, when its trigger form changes some values; point
    RAKUTEN_PARAMS_FILE at OUT for the run's steps. Prints OUT, its params hash, and the
    branches to train split into CPU and GPU (neural) ones.
    """
    import yaml

    from src.config import override_params, params_hash
    from src.data.io import write_atomic
    from src.models.branch import ACCELERATED, BRANCHES

    changes = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals:
            raise typer.BadParameter(f"{assignment!r}: expected BLOCK.KEY=VALUE")
        changes[name.strip()] = yaml.safe_load(value)
    params = override_params(load_params(), changes)
    text = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    write_atomic(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    names = params.train.branches
    unknown = sorted(set(names) - set(BRANCHES))
    if unknown:
        raise RakutenError(f"unknown branch(es) {', '.join(unknown)}; known: {', '.join(BRANCHES)}")
    summary = {
        "params_file": str(out),
        "params_sha256": params_hash(params),
        "changed": changes,
        "branches": {
            "cpu": [name for name in names if name not in ACCELERATED],
            "gpu": [name for name in names if name in ACCELERATED],
        },
    }
    typer.echo(json.dumps(summary))


_REPORTS = typer.Option(None, help="Reports folder (default: RAKUTEN_REPORTS_DIR).")
_BY = typer.Option(None, help="Who moves the alias (default: your user name, or the pipeline).")


def _training_paths(
    processed: Path | None, raw: Path | None, models: Path | None, reports: Path | None
) -> TrainingPaths:
    """A pipeline run's folders, defaulting to the settings."""
    from src.registry.tracking import TrainingPaths

    processed_dir, raw_dir, models_dir = _paths(processed, raw, models)
    return TrainingPaths(processed_dir, raw_dir, models_dir, reports or get_settings().reports_dir)


def _registry() -> MlflowClient:
    """An MLflow client on RAKUTEN_MLFLOW_TRACKING_URI."""
    from src.registry.tracking import tracking_client

    return tracking_client(get_settings().mlflow_tracking_uri)


@model_app.command("changes")
def model_changes(
    raw: Path = _RAW,
    force: bool = typer.Option(False, "--force", help="Train even if nothing changed."),
) -> None:
    """Say whether a pipeline run must train: exit 99 if a version was already registered from
    this data version with these params (Airflow skips training then), 0 otherwise."""
    from src.registry.lifecycle import training_needed

    raw_dir = raw or get_settings().data_root / "raw"
    summary = training_needed(_registry(), raw_dir, load_params(), force)
    typer.echo(json.dumps(summary))
    if not summary["train"]:
        raise typer.Exit(SKIPPED_EXIT_CODE)


@model_app.command("register")
def model_register(
    processed: Path = _PROCESSED, raw: Path = _RAW, models: Path = _MODELS, reports: Path = _REPORTS
) -> None:
    """Track the pipeline run in MLflow and register its model as a new version @challenger.

    One parent run with params, lineage tags (git commit, data version, params hash, Airflow
    run), test metrics and artifacts (reports, confusion matrices, data-quality report, the
    model); a nested run per branch (per-epoch metrics) and per search trial. Run it after
    `rakuten evaluate`. Under Airflow, a retried task reuses the version it registered.
    """
    from src.registry.lifecycle import register

    paths = _training_paths(processed, raw, models, reports)
    typer.echo(json.dumps(register(_registry(), paths, load_params(), os.environ)))


@model_app.command("validate")
def model_validate(
    version: str = typer.Option(None, help="Version to gate (default: @challenger)."),
    data: Path = typer.Option(
        None, help="Extra labelled data in the hub's layout (X_train, Y_train, images)."
    ),
    processed: Path = _PROCESSED,
    raw: Path = _RAW,
    reports: Path = _REPORTS,
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

    paths = _training_paths(processed, raw, None, reports)
    summary = validate(_registry(), paths, load_params().gate, version, data)
    typer.echo(json.dumps(summary))
    if fail and summary["decision"] != "passed":
        reasons = "; ".join(summary["reasons"])
        raise RakutenError(f"version {summary['version']} failed the gate: {reasons}")


@model_app.command("promote")
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
    by: str = _BY,
) -> None:
    """Move @champion to a version that passed the gate, recording the move in the audit log.

    With params.yaml `promote.approval: manual`, `--auto` leaves the champion and marks the
    version as awaiting approval; a person then runs `rakuten model promote --version V`.
    """
    from src.registry.lifecycle import GateNotPassedError, actor, promote

    approval = load_params().promote.approval
    who = by or actor(auto, os.environ)
    try:
        summary = promote(_registry(), approval, version, auto, who)
    except GateNotPassedError as error:
        if not skip_failed:
            raise
        typer.echo(json.dumps({"skipped": str(error)}))
        raise typer.Exit(SKIPPED_EXIT_CODE) from None
    typer.echo(json.dumps(summary))


@model_app.command("rollback")
def model_rollback(
    reason: str = typer.Option("manual rollback", help="Why, for the audit log."),
    by: str = _BY,
) -> None:
    """Move @champion back to the previous champion in one step (recorded in the audit log)."""
    from src.registry.lifecycle import actor, rollback

    typer.echo(json.dumps(rollback(_registry(), by or actor(False, os.environ), reason)))


@model_app.command("history")
def model_history(output: OutputFormat = _FORMAT) -> None:
    """Every move of @champion, oldest first: action, version, previous version, who, why, when."""
    from src.registry.lifecycle import champion_history

    _echo_rows(champion_history(_registry()), output)
