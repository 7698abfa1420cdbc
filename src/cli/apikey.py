"""`rakuten api-key`: make, list and revoke the keys of the prediction API and its pages."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from src.cli.common import FORMAT, OutputFormat, echo_rows
from src.config import get_settings

app = typer.Typer(
    help="Keys of the API (scopes predict, admin): the key is shown once, stored as an HMAC.",
    no_args_is_help=True,
)


@app.command("create")
def api_key_create(
    name: str = typer.Option(..., "--name", help="Who or what uses the key (shown in the list)."),
    scope: list[str] = typer.Option(
        ..., "--scope", help="predict (classify, look up predictions) or admin (everything)."
    ),
) -> None:
    """Make a key and print it once, with its id and prefix, as JSON; only its HMAC is stored.

    Needs RAKUTEN_API_KEY_SECRET, the same secret as the API's.
    """
    from src.db.api_keys import create_key, server_secret
    from src.db.engine import make_engine

    settings = get_settings()
    created = create_key(make_engine(), name, scope, server_secret(settings))
    typer.echo(json.dumps({**asdict(created.record), "key": created.key}, default=str))
    typer.echo("Keep the key now: it cannot be shown again.", err=True)


@app.command("list")
def api_key_list(output: OutputFormat = FORMAT) -> None:
    """Every key (never the key itself): id, name, prefix, scopes, created, last used, revoked."""
    from src.db.api_keys import list_keys
    from src.db.engine import make_engine

    echo_rows([asdict(record) for record in list_keys(make_engine())], output)


@app.command("revoke")
def api_key_revoke(
    key_id: int = typer.Argument(..., help="The key's id (`api-key list`)."),
) -> None:
    """Revoke a key: the API refuses it within RAKUTEN_API_KEY_CACHE_SECONDS."""
    from src.db.api_keys import revoke_key
    from src.db.engine import make_engine

    typer.echo(json.dumps(asdict(revoke_key(make_engine(), key_id)), default=str))
