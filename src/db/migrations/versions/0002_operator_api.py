"""The operators' API: API keys (HMAC, scopes), uploaded datasets, the key of each API call.

Revision ID: 0002_operator_api
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_operator_api"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the models' column types: a revision must not change when the models do.
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column[int]:
    return sa.Column("id", _ROW_ID, sa.Identity(always=False), nullable=False)


def _timestamp(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create `api_keys` and `datasets`; give `api_requests` the id of the key that called."""
    op.create_table(
        "api_keys",
        _id(),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=128), nullable=False),
        _timestamp("created_at"),
        _timestamp("last_used_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_table(
        "datasets",
        _id(),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("photos", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.BigInteger(), nullable=True),
        _timestamp("created_at"),
        sa.CheckConstraint("purpose IN ('training', 'validation')", name="ck_datasets_purpose"),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name="fk_datasets_api_key_id_api_keys"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
    )
    op.create_index("ix_datasets_purpose_created_at", "datasets", ["purpose", "created_at"])
    with op.batch_alter_table("api_requests") as batch:
        batch.add_column(sa.Column("api_key_id", sa.BigInteger(), nullable=True))
        batch.create_foreign_key(
            "fk_api_requests_api_key_id_api_keys", "api_keys", ["api_key_id"], ["id"]
        )


def downgrade() -> None:
    """Drop what `upgrade` added."""
    with op.batch_alter_table("api_requests") as batch:
        batch.drop_constraint("fk_api_requests_api_key_id_api_keys", type_="foreignkey")
        batch.drop_column("api_key_id")
    op.drop_table("datasets")
    op.drop_table("api_keys")
