"""Initial schema: products, dataset and model versions, prediction batches, predictions, API calls.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the models' column types: a revision must not change when the models do.
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _id() -> sa.Column[int]:
    return sa.Column("id", _ROW_ID, sa.Identity(always=False), nullable=False)


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    """Create the six tables, their constraints and the indexes of the store's queries."""
    op.create_table(
        "dataset_versions",
        _id(),
        sa.Column("version", sa.String(length=128), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_versions"),
        sa.UniqueConstraint("version", name="uq_dataset_versions_version"),
    )
    op.create_table(
        "model_versions",
        _id(),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
    )
    op.create_table(
        "products",
        _id(),
        sa.Column("productid", sa.BigInteger(), nullable=False),
        sa.Column("imageid", sa.BigInteger(), nullable=True),
        sa.Column("designation", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("input_sha256", sa.String(length=64), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        sa.UniqueConstraint("productid", "input_sha256", name="uq_products_productid_input_sha256"),
    )
    op.create_table(
        "api_requests",
        _id(),
        _timestamp("received_at"),
        sa.Column("endpoint", sa.String(length=128), nullable=False),
        sa.Column("model_version_id", sa.BigInteger(), nullable=True),
        sa.Column("request", _DOCUMENT, nullable=False),
        sa.Column("response", _DOCUMENT, nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name="fk_api_requests_model_version_id_model_versions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_requests"),
    )
    op.create_index("ix_api_requests_received_at", "api_requests", ["received_at"])
    op.create_index("ix_api_requests_model_version_id", "api_requests", ["model_version_id"])
    op.create_table(
        "prediction_batches",
        _id(),
        sa.Column("logical_date", sa.Date(), nullable=False),
        sa.Column("model_version_id", sa.BigInteger(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=True),
        sa.Column("dataset_version_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("prediction_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("created_at"),
        sa.CheckConstraint("status IN ('complete', 'failed')", name="ck_prediction_batches_status"),
        sa.CheckConstraint("prediction_count >= 0", name="ck_prediction_batches_prediction_count"),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name="fk_prediction_batches_dataset_version_id_dataset_versions",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name="fk_prediction_batches_model_version_id_model_versions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_prediction_batches"),
        sa.UniqueConstraint(
            "id", "model_version_id", name="uq_prediction_batches_id_model_version_id"
        ),
        sa.UniqueConstraint(
            "logical_date",
            "model_version_id",
            name="uq_prediction_batches_logical_date_model_version_id",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_prediction_batches_model_version_id_status",
        "prediction_batches",
        ["model_version_id", "status"],
    )
    op.create_table(
        "predictions",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("model_version_id", sa.BigInteger(), nullable=False),
        sa.Column("prdtypecode", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Double(), nullable=False),
        sa.Column("top3", _DOCUMENT, nullable=False),
        sa.CheckConstraint(
            "probability >= 0 AND probability <= 1", name="ck_predictions_probability"
        ),
        sa.ForeignKeyConstraint(
            ["batch_id", "model_version_id"],
            ["prediction_batches.id", "prediction_batches.model_version_id"],
            name="fk_predictions_batch_id_model_version_id_prediction_batches",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name="fk_predictions_product_id_products"
        ),
        sa.PrimaryKeyConstraint("batch_id", "product_id", name="pk_predictions"),
    )
    op.create_index("ix_predictions_product_id", "predictions", ["product_id"])
    op.create_index(
        "ix_predictions_model_version_id_product_id",
        "predictions",
        ["model_version_id", "product_id"],
    )
    op.create_index(
        "ix_predictions_batch_id_prdtypecode", "predictions", ["batch_id", "prdtypecode"]
    )


def downgrade() -> None:
    """Drop every table of the store (their indexes go with them)."""
    for table in (
        "predictions",
        "prediction_batches",
        "api_requests",
        "products",
        "model_versions",
        "dataset_versions",
    ):
        op.drop_table(table)
