"""The tests' PostgreSQL server (127.0.0.1:5432, trust auth): new databases, admin statements."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

SERVER_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


def admin(statement: sql.Composable, dbname: str = "postgres") -> None:
    """Run one statement on the server as the `postgres` superuser, outside a transaction."""
    dsn = SERVER_DSN.replace("dbname=postgres", f"dbname={dbname}")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(statement)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server (its superuser URL), dropped when the block ends."""
    name = f"rakuten_test_{uuid.uuid4().hex[:12]}"
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
