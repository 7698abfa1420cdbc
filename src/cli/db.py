"""`rakuten db`: migrations, roles, and queries on the predictions store."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime

import typer

from src.cli.common import DATE, FORMAT, MODEL, OutputFormat, echo_record, echo_rows
from src.config import get_settings

app = typer.Typer(
    help="The predictions store: migrations, roles, and queries on the recorded predictions.",
    no_args_is_help=True,
)


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


@app.command("upgrade")
def db_upgrade(
    revision: str = typer.Option("head", help="Alembic revision to migrate to."),
) -> None:
    """Create or migrate the store's tables (as the schema owner: RAKUTEN_DATABASE_ADMIN_URL).

    One transaction; prints the revisions before and after as JSON.
    """
    from src.db.migrate import upgrade

    settings = get_settings()
    typer.echo(json.dumps(upgrade(settings.database_admin_url or settings.database_url, revision)))


@app.command("grant")
def db_grant() -> None:
    """Create or update the app and analyst roles and their grants (PostgreSQL; run after upgrade).

    Names and passwords come from RAKUTEN_DATABASE_APP_* and RAKUTEN_DATABASE_ANALYST_*. On SQLite
    there are no roles: it says so and changes nothing.
    """
    from src.db.roles import grant_roles

    typer.echo(json.dumps(grant_roles(get_settings())))


@app.command("batches")
def db_batches(logical_date: datetime = DATE, output: OutputFormat = FORMAT) -> None:
    """List prediction batches (of one logical date), newest first, failed ones included."""
    from src.db.engine import make_engine
    from src.db.queries import batches

    found = batches(make_engine(), None if logical_date is None else logical_date.date())
    echo_rows([asdict(batch) for batch in found], output)


@app.command("latest")
def db_latest(
    productid: int = typer.Option(..., help="Rakuten product id."),
    alias: str = typer.Option("champion", help="Only batches of a model used under this alias."),
    any_alias: bool = typer.Option(False, "--any-alias", help="Any batch, shadow ones included."),
    output: OutputFormat = FORMAT,
) -> None:
    """The latest prediction for a product, with the inputs it was made from and its batch."""
    from src.db.engine import make_engine
    from src.db.queries import latest_prediction

    found = latest_prediction(make_engine(), productid, None if any_alias else alias)
    echo_record(asdict(found), output)


@app.command("distribution")
def db_distribution(
    batch: int = typer.Option(None, help="Batch id (see `rakuten db batches`)."),
    logical_date: datetime = DATE,
    version: str = typer.Option(None, help="Model version of the batch, with --date."),
    model: str = MODEL,
    output: OutputFormat = FORMAT,
) -> None:
    """Class distribution of a complete batch: products, share and mean probability per type."""
    from src.db.engine import make_engine
    from src.db.queries import class_distribution

    shares = class_distribution(make_engine(), _batch_id(batch, logical_date, version, model))
    echo_rows([asdict(share) for share in shares], output)


@app.command("agreement")
def db_agreement(
    logical_date: datetime = DATE,
    champion: str = typer.Option(None, help="Champion's model version, with --date."),
    challenger: str = typer.Option(None, help="Challenger's model version, with --date."),
    model: str = MODEL,
    champion_batch: int = typer.Option(None, help="Champion's batch id (instead of --date)."),
    challenger_batch: int = typer.Option(None, help="Challenger's batch id (instead of --date)."),
    output: OutputFormat = FORMAT,
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
        echo_record({**summary, "by_class": by_class}, output)
        return
    echo_record(summary, output)
    typer.echo("")
    echo_rows(by_class, output)


@app.command("counts")
def db_counts(output: OutputFormat = FORMAT) -> None:
    """Per model version: aliases used, batches, predictions, products scored, first/last date."""
    from src.db.engine import make_engine
    from src.db.queries import model_version_counts

    echo_rows([asdict(counts) for counts in model_version_counts(make_engine())], output)
