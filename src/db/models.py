"""The store's tables: every input sent to a model and every output it produced, traceably.

One set of SQLAlchemy models serves SQLite (the embedded default) and PostgreSQL (production);
the Alembic revisions under `migrations/` create exactly these tables (a test compares them).
Rows are never updated: a rerun of a batch deletes the batch it replaces and inserts a new one.
The one exception is `api_keys`, whose last use and revocation are written on the key's row.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The Alembic revision (migrations/versions) that creates exactly these tables; a test keeps
# it equal to the newest revision, and the store refuses a database at another one.
SCHEMA_REVISION: Final = "0003"

# Deterministic constraint names, so that migrations can name what they alter or drop.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only numbers rows by itself for an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identity.
RowId = BigInteger().with_variant(Integer(), "sqlite")
Document = JSON().with_variant(JSONB(), "postgresql")


def _now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A UTC timestamp, read back timezone-aware on both backends (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store the instant in UTC."""
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read it back as UTC."""
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


class BatchStatus(StrEnum):
    """A batch is complete (its predictions are all stored) or failed (none are)."""

    COMPLETE = "complete"
    FAILED = "failed"


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DatasetVersion(Base):
    """A version of the data that products were read from (the raw snapshot's version id)."""

    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    version: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class ModelVersion(Base):
    """A registered model version in MLflow (name and version), as first used by the store."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class Product(Base):
    """A product's inputs exactly as received; a product whose text changes gets a new row."""

    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("productid", "input_sha256"),)

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    productid: Mapped[int] = mapped_column(BigInteger)
    imageid: Mapped[int | None] = mapped_column(BigInteger)
    designation: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    input_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class PredictionBatch(Base):
    """One scoring run: a model version over products, for one logical date."""

    __tablename__ = "prediction_batches"
    __table_args__ = (
        UniqueConstraint("logical_date", "model_version_id"),
        # Lets predictions reference (batch, model version) together, so they cannot disagree.
        UniqueConstraint("id", "model_version_id"),
        CheckConstraint(
            "status IN ('" + "', '".join(BatchStatus) + "')",
            name="status",
        ),
        CheckConstraint("prediction_count >= 0", name="prediction_count"),
        Index(None, "model_version_id", "status"),
        # A replaced batch's id is never given again (SQLite would reuse the largest one).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    logical_date: Mapped[date] = mapped_column(Date)
    model_version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("model_versions.id"))
    alias: Mapped[str | None] = mapped_column(String(64))
    dataset_version_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("dataset_versions.id")
    )
    status: Mapped[str] = mapped_column(String(16))
    prediction_count: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class Prediction(Base):
    """One product's predicted type in one batch: code, its probability and the top 3."""

    __tablename__ = "predictions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["batch_id", "model_version_id"],
            ["prediction_batches.id", "prediction_batches.model_version_id"],
        ),
        CheckConstraint("probability >= 0 AND probability <= 1", name="probability"),
        Index(None, "product_id"),
        Index(None, "model_version_id", "product_id"),
        Index(None, "batch_id", "prdtypecode"),
    )

    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    product_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("products.id"), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(BigInteger)
    prdtypecode: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Double)
    top3: Mapped[list[dict[str, Any]]] = mapped_column(Document)


class ApiKey(Base):
    """A key of the API: its HMAC-SHA256 (never the key), a short prefix to find it, its scopes."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(128))  # space separated, as OAuth writes them
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DatasetPurpose(StrEnum):
    """What an uploaded dataset is for: the next training run, or the gate's extra rows."""

    TRAINING = "training"
    VALIDATION = "validation"


class Dataset(Base):
    """A labelled dataset uploaded through the API, kept under the incoming folder."""

    __tablename__ = "datasets"
    __table_args__ = (
        CheckConstraint("purpose IN ('" + "', '".join(DatasetPurpose) + "')", name="purpose"),
        Index(None, "purpose", "created_at"),
    )

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))  # of its manifest, which names every file
    rows: Mapped[int] = mapped_column(Integer)  # rows that keep to the data contract
    quarantined: Mapped[int] = mapped_column(Integer)
    photos: Mapped[int] = mapped_column(Integer)
    api_key_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class ApiRequest(Base):
    """One call to the prediction API: the request as received and the response as sent."""

    __tablename__ = "api_requests"
    __table_args__ = (Index(None, "received_at"), Index(None, "model_version_id"))

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
    endpoint: Mapped[str] = mapped_column(String(128))
    model_version_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("model_versions.id")
    )
    request: Mapped[dict[str, Any]] = mapped_column(Document)
    response: Mapped[dict[str, Any] | None] = mapped_column(Document)
    status_code: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Double)
    # The key that called (never the key itself); None when RAKUTEN_API_AUTH is off.
    api_key_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("api_keys.id"))


class DriftReport(Base):
    """The drift check of one day's batch against its model's reference profile."""

    __tablename__ = "drift_reports"
    __table_args__ = (UniqueConstraint("logical_date", "model_version_id"),)

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    logical_date: Mapped[date] = mapped_column(Date)
    model_version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("model_versions.id"))
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(32))
    predicted_psi: Mapped[float | None] = mapped_column(Double)
    predicted_js: Mapped[float | None] = mapped_column(Double)
    report: Mapped[dict[str, Any]] = mapped_column(Document)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class LateLabel(Base):
    """A product's true type, learnt after its prediction: from which file, and when."""

    __tablename__ = "late_labels"
    __table_args__ = (UniqueConstraint("productid", "source"), Index(None, "arrived_at"))

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    productid: Mapped[int] = mapped_column(BigInteger)
    prdtypecode: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(512))
    arrived_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class RealisedPerformance(Base):
    """A model's scores on one batch day, from the late labels of its products."""

    __tablename__ = "realised_performance"
    __table_args__ = (UniqueConstraint("logical_date", "model_version_id"),)

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    logical_date: Mapped[date] = mapped_column(Date)
    model_version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("model_versions.id"))
    labelled: Mapped[int] = mapped_column(Integer)
    weighted_f1: Mapped[float] = mapped_column(Double)
    macro_f1: Mapped[float] = mapped_column(Double)
    accuracy: Mapped[float] = mapped_column(Double)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)


class RetrainRequest(Base):
    """A retraining the closed loop asked for on a batch day (one per day at most), and why."""

    __tablename__ = "retrain_requests"

    id: Mapped[int] = mapped_column(RowId, Identity(), primary_key=True)
    logical_date: Mapped[date] = mapped_column(Date, unique=True)
    reason: Mapped[str] = mapped_column(Text)
    dag_run_id: Mapped[str] = mapped_column(String(256))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, default=_now)
