"""`rakuten serve`: the prediction API."""

from __future__ import annotations

import logging

import typer

from src.config import get_settings

app = typer.Typer()


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
