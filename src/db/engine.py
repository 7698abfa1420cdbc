"""Engines for the store: SQLite (the embedded default) or PostgreSQL, through one code path."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import OperationalError

from src.config import get_settings
from src.db.models import SCHEMA_REVISION
from src.errors import RakutenError

logger = logging.getLogger(__name__)


class DatabaseError(RakutenError):
    """The store cannot be reached, or its schema is not the one this code expects."""


def database_url(url: str | URL | None = None) -> URL:
    """The store's URL (RAKUTEN_DATABASE_URL unless given), with psycopg 3 for PostgreSQL."""
    parsed = make_url(url if url is not None else get_settings().database_url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def shown(url: URL) -> str:
    """The URL as logs and messages show it: the password masked."""
    return url.render_as_string(hide_password=True)


def make_engine(url: str | URL | None = None) -> Engine:
    """An engine on the store; on SQLite, with foreign keys enforced and real transactions."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    # pysqlite's own transaction handling commits before DDL; SQLAlchemy's BEGIN replaces it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    # WAL: readers (the API, the queries) are not blocked while a batch is being written.
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside one transaction: committed if the block ends, rolled back if it raises.

    An unreachable database is a `DatabaseError` that names it (password masked).
    """
    try:
        connection = engine.connect()
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise DatabaseError(
            f"cannot connect to the store at {shown(engine.url)}: {reason} (check "
            "RAKUTEN_DATABASE_URL, or RAKUTEN_DATABASE_ADMIN_URL for `rakuten db upgrade`/`grant`)"
        ) from error
    with connection, connection.begin():
        yield connection


def current_revision(connection: Connection) -> str | None:
    """The schema revision the database is at (None: never migrated)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def require_current(connection: Connection) -> None:
    """Stop with a clear error when the database is not at the schema this code expects."""
    current = current_revision(connection)
    if current != SCHEMA_REVISION:
        raise DatabaseError(
            f"the store at {shown(connection.engine.url)} is at schema revision {current}, "
            f"this code needs {SCHEMA_REVISION}: run `rakuten db upgrade`"
        )
