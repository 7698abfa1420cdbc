"""Alembic environment: migrates the connection that `src.db.migrate` hands over (no alembic.ini).

Without one (a developer's `command.revision(..., autogenerate=True)`), it connects to the URL
of the settings (RAKUTEN_DATABASE_ADMIN_URL, else RAKUTEN_DATABASE_URL).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from src.config import get_settings
from src.db.engine import make_engine
from src.db.models import Base


def _migrate(connection: Connection) -> None:
    # Batch mode: SQLite cannot ALTER most things, so later revisions copy and swap its tables.
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given: Connection | None = context.config.attributes.get("connection")
if given is not None:
    _migrate(given)
else:
    settings = get_settings()
    engine = make_engine(settings.database_admin_url or settings.database_url)
    try:
        with engine.connect() as connection:
            _migrate(connection)
    finally:
        engine.dispose()
