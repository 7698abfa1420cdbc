"""Roles and grants on a real PostgreSQL server: the analyst reads only, the app records only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import ProgrammingError

from src.config import Settings
from src.db.engine import DatabaseError, make_engine
from src.db.migrate import upgrade
from src.db.queries import class_distribution, latest_prediction
from src.db.roles import grant_roles
from src.db.store import record_api_request, store_batch, unscored
from tests.db.batches import CHAMPION, DAY, scored, synthetic_predictions
from tests.db.postgres import SERVER_DSN, admin, fresh_database


@pytest.fixture(scope="module")
def owner_url(postgres_server: str) -> Iterator[str]:
    """A migrated store in a new database of the server, its owner's (superuser's) URL."""
    with fresh_database(postgres_server) as url:
        upgrade(url)
        yield url


def _drop_role(role: str, dbname: str) -> None:
    with psycopg.connect(SERVER_DSN, autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
            admin(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)), dbname)
            admin(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _role_settings(owner_url: str, suffix: str) -> Settings:
    """Settings whose roles are named for one test (roles are server-wide)."""
    return Settings(
        database_url=owner_url,
        database_admin_url=owner_url,
        database_app_role=f"rakuten_app_{suffix}",
        database_app_password=SecretStr("app-secret"),
        database_analyst_role=f"rakuten_analyst_{suffix}",
    )


@pytest.fixture
def settings(owner_url: str) -> Iterator[Settings]:
    """Settings naming roles of this test only; the roles are dropped afterwards."""
    settings = _role_settings(owner_url, uuid.uuid4().hex[:8])
    try:
        yield settings
    finally:
        dbname = str(make_url(owner_url).database)
        for role in (settings.database_app_role, settings.database_analyst_role):
            _drop_role(role, dbname)


def _login(owner_url: str, role: str) -> Engine:
    # The servers here and in CI trust local logins; production checks the password.
    return make_engine(make_url(owner_url).set(username=role, password="app-secret"))


def _denied(engine: Engine, statement: str) -> None:
    with pytest.raises(ProgrammingError) as error, engine.begin() as connection:
        connection.execute(text(statement))
    assert isinstance(error.value.orig, psycopg.errors.InsufficientPrivilege), error.value


def test_grant_creates_login_roles_without_powers(settings: Settings) -> None:
    summary = grant_roles(settings)
    assert summary["roles"] == {
        "app": {"role": settings.database_app_role, "created": True, "password_set": True},
        "analyst": {"role": settings.database_analyst_role, "created": True, "password_set": False},
    }
    assert grant_roles(settings)["roles"]["app"]["created"] is False  # a rerun updates
    with psycopg.connect(SERVER_DSN) as connection:
        found = connection.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin,"
            " rolpassword IS NOT NULL FROM pg_authid WHERE rolname IN (%s, %s) ORDER BY rolname",
            [settings.database_analyst_role, settings.database_app_role],
        ).fetchall()
    assert found == [
        (settings.database_analyst_role, False, False, False, True, False),
        (settings.database_app_role, False, False, False, True, True),
    ]


def test_the_analyst_reads_but_cannot_write(settings: Settings, owner_url: str) -> None:
    grant_roles(settings)
    store_batch(
        make_engine(owner_url),
        scored([1, 2], [10, 40]),
        model=CHAMPION,
        dataset_version="raw-v1",
        logical_date=DAY,
    )
    analyst = _login(owner_url, settings.database_analyst_role)
    try:
        assert latest_prediction(analyst, 2).prdtypecode == 40
        with analyst.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM products")).scalar_one() >= 2
        _denied(analyst, "INSERT INTO dataset_versions (version, created_at) VALUES ('x', now())")
        _denied(analyst, "UPDATE predictions SET prdtypecode = 10")
        _denied(analyst, "DELETE FROM prediction_batches")
        _denied(analyst, "CREATE TABLE notes (id int)")
    finally:
        analyst.dispose()


def test_the_app_records_and_replaces_batches_but_cannot_alter_the_store(
    settings: Settings, owner_url: str, tmp_path: Path
) -> None:
    grant_roles(settings)
    app = _login(owner_url, settings.database_app_role)
    try:
        first, second = (
            store_batch(
                app,
                synthetic_predictions(30),
                model=CHAMPION,
                dataset_version="raw-v1",
                logical_date=DAY,
                predictions_dir=tmp_path,
                chunk_rows=7,
            )
            for _ in range(2)
        )
        assert second.replaced_batch_id == first.batch_id
        assert sum(share.products for share in class_distribution(app, second.batch_id)) == 30
        assert unscored(app, synthetic_predictions(30), CHAMPION, DAY).shape[0] == 30
        record_api_request(
            app,
            endpoint="/predict",
            request={"designation": "x"},
            response=None,
            status_code=422,
            duration_ms=1.0,
            model=None,
        )
        _denied(app, "UPDATE predictions SET prdtypecode = 10")
        _denied(app, "DELETE FROM products")
        _denied(app, "CREATE TABLE notes (id int)")
        _denied(app, "DROP TABLE predictions")
        _denied(app, "ALTER TABLE products ADD COLUMN note text")
    finally:
        app.dispose()


def test_a_superuser_is_never_made_a_run_time_role(settings: Settings, owner_url: str) -> None:
    superuser = f"rakuten_super_{uuid.uuid4().hex[:8]}"
    admin(sql.SQL("CREATE ROLE {} SUPERUSER").format(sql.Identifier(superuser)))
    try:
        with pytest.raises(DatabaseError, match=f"role {superuser} is a superuser"):
            grant_roles(settings.model_copy(update={"database_analyst_role": superuser}))
        with psycopg.connect(SERVER_DSN) as connection:
            query = "SELECT rolsuper FROM pg_roles WHERE rolname = %s"
            assert connection.execute(query, [superuser]).fetchone() == (True,)
    finally:
        _drop_role(superuser, str(make_url(owner_url).database))


def test_the_schema_owner_is_never_made_a_run_time_role(settings: Settings) -> None:
    with pytest.raises(DatabaseError, match="is the schema owner"):
        grant_roles(settings.model_copy(update={"database_app_role": "postgres"}))


def test_a_schema_owner_without_superuser_powers_grants_again_and_again(
    postgres_server: str,
) -> None:
    # Production: the store's owner has CREATEROLE only; every deploy runs `rakuten db grant`.
    suffix = uuid.uuid4().hex[:8]
    owner = f"rakuten_owner_{suffix}"
    admin(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(owner)))
    try:
        with fresh_database(postgres_server) as url:
            dbname = str(make_url(url).database)
            admin(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    *map(sql.Identifier, (dbname, owner))
                )
            )
            admin(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)), dbname)
            owner_url = make_url(url).set(username=owner).render_as_string(hide_password=False)
            upgrade(owner_url)
            settings = _role_settings(owner_url, suffix)
            first, again = grant_roles(settings), grant_roles(settings)
            assert first["roles"]["app"]["created"] and not again["roles"]["app"]["created"]
            for role in (settings.database_app_role, settings.database_analyst_role):
                _drop_role(role, dbname)
            admin(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(owner)), dbname)
    finally:
        admin(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner)))


def test_the_two_roles_need_two_names(settings: Settings) -> None:
    same = settings.model_copy(update={"database_analyst_role": settings.database_app_role})
    with pytest.raises(DatabaseError, match="different names"):
        grant_roles(same)


def test_on_sqlite_there_are_no_roles_to_grant(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    summary = grant_roles(Settings(database_url=url))
    assert summary == {"database": url, "roles": None, "reason": "sqlite has no roles"}
    assert not (tmp_path / "predictions.db").exists()
