"""The `rakuten` command line: one command per pipeline step (also what DVC and Airflow run).

One module per command group (typer sub-apps); this one puts them together."""

from __future__ import annotations

import logging

import typer

from src.cli import apikey, data, db, model, monitor, params, predict, serve, training
from src.cli import run as run_commands
from src.config import get_settings
from src.errors import RakutenError

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="Rakuten France product-type classifier: data, training, registry and predictions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


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


app.add_typer(data.app, name="data")
app.add_typer(training.app)
app.add_typer(predict.app)
app.add_typer(serve.app)
app.add_typer(model.app, name="model")
app.add_typer(db.app, name="db")
app.add_typer(params.app, name="params")
app.add_typer(run_commands.app, name="run")
app.add_typer(apikey.app, name="api-key")
app.add_typer(monitor.app, name="monitor")
