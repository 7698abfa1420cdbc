"""Uploaded datasets: one row per dataset stored under the incoming folder (its manifest's hash,
its row counts, the key that sent it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, insert, select

from src.db.engine import require_current, transaction
from src.db.models import Dataset
from src.errors import RakutenError


@dataclass(frozen=True)
class DatasetRecord:
    """A stored dataset, as GET /datasets lists it."""

    id: int
    purpose: str
    path: str
    sha256: str
    rows: int
    quarantined: int
    photos: int
    api_key_id: int | None
    created_at: datetime


def _record(row: Row[Any]) -> DatasetRecord:
    return DatasetRecord(**{field: getattr(row, field) for field in DatasetRecord.__annotations__})


def record_dataset(
    engine: Engine,
    *,
    purpose: str,
    path: str,
    sha256: str,
    rows: int,
    quarantined: int,
    photos: int,
    api_key_id: int | None,
) -> DatasetRecord:
    """Record a dataset that was just stored; return its row."""
    with transaction(engine) as connection:
        require_current(connection)
        row = connection.execute(
            insert(Dataset)
            .values(
                purpose=purpose,
                path=path,
                sha256=sha256,
                rows=rows,
                quarantined=quarantined,
                photos=photos,
                api_key_id=api_key_id,
            )
            .returning(Dataset)
        ).one()
    return _record(row)


def list_datasets(engine: Engine, purpose: str | None = None) -> list[DatasetRecord]:
    """The stored datasets (of one purpose), newest first."""
    query = select(Dataset).order_by(Dataset.id.desc())
    if purpose is not None:
        query = query.where(Dataset.purpose == purpose)
    with transaction(engine) as connection:
        require_current(connection)
        return [_record(row) for row in connection.execute(query)]


def get_dataset(engine: Engine, dataset_id: int) -> DatasetRecord:
    """One stored dataset by id; a clear error when there is none."""
    with transaction(engine) as connection:
        row = connection.execute(select(Dataset).where(Dataset.id == dataset_id)).one_or_none()
    if row is None:
        raise RakutenError(f"no dataset {dataset_id} (GET /datasets lists them)")
    return _record(row)
