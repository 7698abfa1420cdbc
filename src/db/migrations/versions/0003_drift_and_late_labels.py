"""Drift reports, late labels, realised performance and retrain requests (the closed loop).

Revision ID: 0003
Revises: 0002_operator_api
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002_operator_api"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the models' column types: a revision must not change when the models do.
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _id() -> sa.Column[int]:
    return sa.Column("id", _ROW_ID, sa.Identity(always=False), nullable=False)


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _model_version(table: str) -> list[Any]:
    return [
        sa.Column("model_version_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=f"fk_{table}_model_version_id_model_versions",
        ),
        sa.UniqueConstraint(
            "logical_date", "model_version_id", name=f"uq_{table}_logical_date_model_version_id"
        ),
    ]


def upgrade() -> None:
    """Create the four tables of drift, late labels and the retraining they lead to."""
    op.create_table(
        "drift_reports",
        _id(),
        sa.Column("logical_date", sa.Date(), nullable=False),
        *_model_version("drift_reports"),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("predicted_psi", sa.Double(), nullable=True),
        sa.Column("predicted_js", sa.Double(), nullable=True),
        sa.Column("report", _DOCUMENT, nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_drift_reports"),
    )
    op.create_table(
        "late_labels",
        _id(),
        sa.Column("productid", sa.BigInteger(), nullable=False),
        sa.Column("prdtypecode", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        _timestamp("arrived_at"),
        sa.PrimaryKeyConstraint("id", name="pk_late_labels"),
        sa.UniqueConstraint("productid", "source", name="uq_late_labels_productid_source"),
    )
    op.create_index("ix_late_labels_arrived_at", "late_labels", ["arrived_at"])
    op.create_table(
        "realised_performance",
        _id(),
        sa.Column("logical_date", sa.Date(), nullable=False),
        *_model_version("realised_performance"),
        sa.Column("labelled", sa.Integer(), nullable=False),
        sa.Column("weighted_f1", sa.Double(), nullable=False),
        sa.Column("macro_f1", sa.Double(), nullable=False),
        sa.Column("accuracy", sa.Double(), nullable=False),
        _timestamp("computed_at"),
        sa.PrimaryKeyConstraint("id", name="pk_realised_performance"),
    )
    op.create_table(
        "retrain_requests",
        _id(),
        sa.Column("logical_date", sa.Date(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("dag_run_id", sa.String(length=256), nullable=False),
        _timestamp("requested_at"),
        sa.PrimaryKeyConstraint("id", name="pk_retrain_requests"),
        sa.UniqueConstraint("logical_date", name="uq_retrain_requests_logical_date"),
    )


def downgrade() -> None:
    """Drop the four tables (their indexes go with them)."""
    for table in ("retrain_requests", "realised_performance", "late_labels", "drift_reports"):
        op.drop_table(table)
