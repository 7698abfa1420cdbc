"""Schema migrations with Alembic, configured in code: the revisions live in `migrations/`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine

from src.db.engine import current_revision, make_engine, shown, transaction

logger = logging.getLogger(__name__)

MIGRATIONS: Final = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built here rather than read from an alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _migrate(url: str | URL | None, revision: str, downgrade: bool) -> dict[str, str | None]:
    engine: Engine = make_engine(url)
    try:
        with transaction(engine) as connection:
            before = current_revision(connection)
            config = alembic_config(connection)
            if downgrade:
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)
            after = current_revision(connection)
    finally:
        engine.dispose()
    logger.info("store at %s migrated from %s to %s", shown(engine.url), before, after)
    return {"database": shown(engine.url), "from": before, "to": after}


def upgrade(url: str | URL | None = None, revision: str = "head") -> dict[str, str | None]:
    """Migrate the store up to `revision` in one transaction; return the revisions before/after."""
    return _migrate(url, revision, downgrade=False)


def downgrade(url: str | URL | None, revision: str) -> dict[str, str | None]:
    """Migrate the store down to `revision` ("base": no tables) in one transaction."""
    return _migrate(url, revision, downgrade=True)
