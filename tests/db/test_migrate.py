"""Migrations: from empty to head and back, matching the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from src.config import get_settings
from src.db.engine import DatabaseError, current_revision, make_engine, require_current
from src.db.migrate import alembic_config, downgrade, upgrade
from src.db.models import SCHEMA_REVISION, Base

TABLES = {
    "api_keys",
    "datasets",
    "api_requests",
    "dataset_versions",
    "drift_reports",
    "late_labels",
    "model_versions",
    "prediction_batches",
    "predictions",
    "products",
    "realised_performance",
    "retrain_requests",
}


def test_the_models_name_the_newest_revision() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == SCHEMA_REVISION


def test_upgrade_from_empty_creates_the_models_tables_and_downgrade_drops_them(
    database_url: str,
) -> None:
    downgrade(database_url, "base")
    assert upgrade(database_url) == {
        "database": make_engine(database_url).url.render_as_string(hide_password=True),
        "from": None,
        "to": SCHEMA_REVISION,
    }
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) >= TABLES
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            indexes = {i["name"] for i in inspect(connection).get_indexes("predictions")}
            assert indexes >= {
                "ix_predictions_product_id",
                "ix_predictions_model_version_id_product_id",
                "ix_predictions_batch_id_prdtypecode",
            }
        assert upgrade(database_url)["from"] == SCHEMA_REVISION  # a second upgrade: nothing to do

        assert downgrade(database_url, "base")["to"] is None
        with engine.connect() as connection:
            assert not TABLES & set(inspect(connection).get_table_names())
            assert current_revision(connection) is None
            with pytest.raises(DatabaseError, match="run `rakuten db upgrade`"):
                require_current(connection)
    finally:
        engine.dispose()
        upgrade(database_url)


def test_alembic_finds_no_model_change_without_a_revision(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a developer runs before writing a revision: env.py then connects by the settings.
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", store_url)
    monkeypatch.delenv("RAKUTEN_DATABASE_ADMIN_URL", raising=False)
    get_settings.cache_clear()
    try:
        command.check(alembic_config())
    finally:
        get_settings.cache_clear()


def test_an_unreachable_database_is_named_without_its_password() -> None:
    with pytest.raises(
        DatabaseError, match=r"cannot connect .*app:\*\*\*@127\.0\.0\.1:1/"
    ) as error:
        upgrade("postgresql://app:secret@127.0.0.1:1/rakuten")
    assert "secret" not in str(error.value)
