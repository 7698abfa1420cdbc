"""PostgreSQL roles of the store: an app role that records and reads, an analyst role that reads.

Nothing runs as a superuser at run time: the schema owner migrates and grants (deploy time),
the pipeline and the API log in as the app role, people as analysts. The app role may INSERT
and SELECT everywhere; it may DELETE only from the tables a rerun replaces (REPLACED_TABLES: a
day's batch, its drift report, its realised scores; delete, then insert, in one transaction); rows
are never updated, so nobody gets UPDATE, except on `api_keys`, where the API writes a key's last
use and `rakuten api-key revoke` its revocation. Role names and passwords come from the settings
(environment), never from code. SQLite has no roles: there, this does nothing and says so.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from psycopg import sql
from pydantic import SecretStr
from sqlalchemy import Connection, text

from src.config import Settings
from src.db.engine import DatabaseError, make_engine, require_current, shown, transaction
from src.db.models import (
    ApiKey,
    Base,
    DriftReport,
    Prediction,
    PredictionBatch,
    RealisedPerformance,
)

logger = logging.getLogger(__name__)

# Tables whose rows a rerun replaces (a day's batch, drift report, realised scores).
REPLACED_TABLES: Final = (
    PredictionBatch.__tablename__,
    Prediction.__tablename__,
    DriftReport.__tablename__,
    RealisedPerformance.__tablename__,
)
# What the schema owner (CREATEROLE, not a superuser) may set; superuser, replication and
# bypass-RLS are PostgreSQL's defaults and only a superuser could grant or revoke them: checked.
_ATTRIBUTES: Final = "LOGIN NOCREATEDB NOCREATEROLE"


def app_privileges() -> dict[str, tuple[str, ...]]:
    """The app role's privileges, table by table."""
    privileges = {
        name: ("SELECT", "INSERT", "DELETE") if name in REPLACED_TABLES else ("SELECT", "INSERT")
        for name in Base.metadata.tables
    }
    privileges[ApiKey.__tablename__] = ("SELECT", "INSERT", "UPDATE")
    return {**privileges, "alembic_version": ("SELECT",)}  # to check the schema revision


def analyst_privileges() -> dict[str, tuple[str, ...]]:
    """The analyst role's privileges: reading every table of the store."""
    return {name: ("SELECT",) for name in (*Base.metadata.tables, "alembic_version")}


def _execute(connection: Connection, statement: sql.Composable) -> None:
    raw = connection.connection.driver_connection
    connection.exec_driver_sql(statement.as_string(raw))


def _ensure_role(connection: Connection, role: str, password: SecretStr | None) -> bool:
    """Create the login role, or reset its attributes; return whether it was created."""
    row = connection.execute(
        text("SELECT rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = :role"),
        {"role": role},
    ).first()
    if row is not None and (row.rolsuper or row.rolreplication or row.rolbypassrls):
        raise DatabaseError(
            f"role {role} is a superuser or may replicate or bypass row security; the store's "
            "run-time roles must not be"
        )
    verb = "CREATE" if row is None else "ALTER"
    _execute(connection, sql.SQL(f"{verb} ROLE {{}} {_ATTRIBUTES}").format(sql.Identifier(role)))
    if password is not None:
        _execute(
            connection,
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password.get_secret_value())
            ),
        )
    return row is None


def _grant(
    connection: Connection, role: str, schema_name: str, privileges: dict[str, tuple[str, ...]]
) -> None:
    """Give `role` exactly `privileges` on the store's tables, and nothing else there."""
    ident, schema = sql.Identifier(role), sql.Identifier(schema_name)
    database = sql.Identifier(connection.execute(text("SELECT current_database()")).scalar_one())
    for statement in (
        "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}",
        "GRANT CONNECT ON DATABASE {database} TO {role}",
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
    ):
        _execute(
            connection, sql.SQL(statement).format(schema=schema, role=ident, database=database)
        )
    for table, granted in privileges.items():
        _execute(
            connection,
            sql.SQL("GRANT {} ON TABLE {}.{} TO {}").format(
                sql.SQL(", ").join(map(sql.SQL, granted)), schema, sql.Identifier(table), ident
            ),
        )


def grant_roles(settings: Settings) -> dict[str, Any]:
    """Create or update the app and analyst roles and their grants (schema owner's URL)."""
    roles = {
        "app": (settings.database_app_role, settings.database_app_password, app_privileges()),
        "analyst": (
            settings.database_analyst_role,
            settings.database_analyst_password,
            analyst_privileges(),
        ),
    }
    if settings.database_app_role == settings.database_analyst_role:
        raise DatabaseError("the app and analyst roles must have different names")
    engine = make_engine(settings.database_admin_url or settings.database_url)
    summary: dict[str, Any] = {"database": shown(engine.url)}
    try:
        if engine.dialect.name != "postgresql":
            logger.warning("%s has no roles: nothing to grant", engine.dialect.name)
            return {**summary, "roles": None, "reason": f"{engine.dialect.name} has no roles"}
        with transaction(engine) as connection:
            require_current(connection)
            owner = connection.execute(text("SELECT current_user")).scalar_one()
            schema = connection.execute(text("SELECT current_schema()")).scalar_one()
            # Before PostgreSQL 15 anybody may create tables in `public`: the roles must not.
            _execute(
                connection,
                sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema)),
            )
            summary["roles"] = {}
            for kind, (role, password, privileges) in roles.items():
                if role == owner:
                    raise DatabaseError(
                        f"the {kind} role {role} is the schema owner that grants; give it "
                        f"another name (RAKUTEN_DATABASE_{kind.upper()}_ROLE)"
                    )
                created = _ensure_role(connection, role, password)
                _grant(connection, role, schema, privileges)
                summary["roles"][kind] = {
                    "role": role,
                    "created": created,
                    "password_set": password is not None,
                }
                logger.info("role %s %s, grants applied", role, "created" if created else "updated")
    finally:
        engine.dispose()
    return summary
