"""The write path: a batch's inputs, model version and predictions, recorded in one transaction.

`rakuten predict-batch` is: load the champion, keep the `unscored` listings, score them with the
packaged model (its output columns are `prdtypecode`, `probability`, `top3`), `store_batch`.
A batch is keyed by (logical date, model version): storing it again replaces it, so a rerun of a
day stores its rows once. Readers only ever see complete batches: the old batch and the new one
are swapped in the same transaction, and a run that fails leaves the previous batch untouched
(and, where there was none, a `failed` batch row with its error and no predictions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, cast

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, Executable, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from src.db.engine import require_current, transaction
from src.db.models import (
    ApiRequest,
    Base,
    BatchStatus,
    DatasetVersion,
    ModelVersion,
    Prediction,
    PredictionBatch,
    Product,
)
from src.errors import RakutenError

logger = logging.getLogger(__name__)

INPUT_COLUMNS: Final = ("productid", "imageid", "designation", "description")
OUTPUT_COLUMNS: Final = ("prdtypecode", "probability", "top3")
CHUNK_ROWS: Final = 5_000  # rows per executemany; also bounds an IN (...) list
_PARQUET_SCHEMA: Final = pa.schema(
    [
        ("batch_id", pa.int64()),
        ("logical_date", pa.date32()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("model_alias", pa.string()),
        ("dataset_version", pa.string()),
        ("productid", pa.int64()),
        ("imageid", pa.int64()),
        ("designation", pa.string()),
        ("description", pa.string()),
        ("prdtypecode", pa.int64()),
        ("probability", pa.float64()),
        ("top3", pa.string()),  # JSON, as the packaged model writes it
    ]
)


@dataclass(frozen=True)
class ModelRef:
    """A registered model version as MLflow names it, and the alias it is used under."""

    name: str
    version: str
    alias: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class StoredBatch:
    """What `store_batch` recorded: the JSON summary for the CLI and Airflow's XCom."""

    batch_id: int
    logical_date: str
    model: str
    version: str
    alias: str | None
    dataset_version: str
    predictions: int
    replaced_batch_id: int | None
    parquet: str | None


def product_inputs(listings: pd.DataFrame) -> pd.DataFrame:
    """Listings' inputs as the store keeps them, with `input_sha256`, which tells a changed product.

    `productid` and `designation` are required; `imageid` and `description` may be absent or
    missing. Ids may come as text (the raw CSVs are read as text).
    """
    missing = [column for column in ("productid", "designation") if column not in listings]
    if missing:
        raise ValueError(f"listings lack column(s) {', '.join(missing)}")
    if listings["designation"].isna().any():
        raise ValueError("every listing needs a designation")
    absent = pd.Series(None, index=listings.index, dtype=object)

    def exact(values: list[Any]) -> pd.Series:
        # object dtype: None stays None (not NaN) and ids beside a missing one stay exact ints.
        return pd.Series(values, index=listings.index, dtype=object)

    imageid = pd.to_numeric(listings.get("imageid", absent)).astype("Int64")
    description = listings.get("description", absent)
    inputs = pd.DataFrame(
        {
            "productid": pd.to_numeric(listings["productid"]).astype("int64"),
            "imageid": exact([None if pd.isna(v) else int(v) for v in imageid]),
            "designation": exact([str(v) for v in listings["designation"]]),
            "description": exact([None if pd.isna(v) else str(v) for v in description]),
        },
        index=listings.index,
    )
    inputs["input_sha256"] = [
        hashlib.sha256(json.dumps(row, ensure_ascii=False).encode()).hexdigest()
        for row in zip(inputs["designation"], inputs["description"], inputs["imageid"], strict=True)
    ]
    return inputs


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _insert_chunks(
    connection: Connection, statement: Executable, rows: list[dict[str, Any]], chunk_rows: int
) -> None:
    """Bulk insert: one executemany per chunk (multi-row VALUES), never a round trip per row."""
    for chunk in _chunks(rows, chunk_rows):
        connection.execute(statement, list(chunk))


def _insert_or_keep(connection: Connection, entity: type[Base]) -> Executable:
    """INSERT that leaves an existing row (same unique key) as it is."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(entity).on_conflict_do_nothing()
    return sqlite.insert(entity).on_conflict_do_nothing()


def _model_version_id(connection: Connection, model: ModelRef) -> int:
    values = {"name": model.name, "version": model.version, "run_id": model.run_id}
    connection.execute(_insert_or_keep(connection, ModelVersion), [values])
    query = select(ModelVersion.id).where(
        ModelVersion.name == model.name, ModelVersion.version == model.version
    )
    return connection.execute(query).scalar_one()


def _dataset_version_id(connection: Connection, version: str) -> int:
    connection.execute(_insert_or_keep(connection, DatasetVersion), [{"version": version}])
    query = select(DatasetVersion.id).where(DatasetVersion.version == version)
    return connection.execute(query).scalar_one()


def _existing_batch(
    connection: Connection, logical_date: date, model_version_id: int
) -> tuple[int, str] | None:
    row = connection.execute(
        select(PredictionBatch.id, PredictionBatch.status).where(
            PredictionBatch.logical_date == logical_date,
            PredictionBatch.model_version_id == model_version_id,
        )
    ).first()
    return None if row is None else (row.id, row.status)


def _delete_batch(connection: Connection, batch_id: int) -> None:
    connection.execute(delete(Prediction).where(Prediction.batch_id == batch_id))
    connection.execute(delete(PredictionBatch).where(PredictionBatch.id == batch_id))


def _product_ids(connection: Connection, inputs: pd.DataFrame, chunk_rows: int) -> list[int]:
    """Record the inputs not yet known; return the row id of every input, in order."""
    now = datetime.now(UTC)
    columns = [*INPUT_COLUMNS, "input_sha256"]
    records = cast(list[dict[str, Any]], inputs[columns].to_dict("records"))
    rows = [{**row, "created_at": now} for row in records]
    _insert_chunks(connection, _insert_or_keep(connection, Product), rows, chunk_rows)
    ids: dict[tuple[int, str], int] = {}
    productids = inputs["productid"].tolist()
    for chunk in _chunks(productids, chunk_rows):
        query = select(Product.id, Product.productid, Product.input_sha256).where(
            Product.productid.in_(chunk)
        )
        ids.update({(r.productid, r.input_sha256): r.id for r in connection.execute(query)})
    return [ids[key] for key in zip(productids, inputs["input_sha256"], strict=True)]


def _top3(value: object) -> list[dict[str, Any]]:
    """The top 3 as a list (the packaged model writes it as JSON text)."""
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, list):
        raise ValueError(f"top3 must be a list (or its JSON), not {value!r}")
    return parsed


def parquet_path(directory: Path, logical_date: date, model: ModelRef) -> Path:
    """data/predictions/<logical date>/<model name>-v<version>.parquet"""
    name = re.sub(r"[^\w.-]", "_", f"{model.name}-v{model.version}")
    return directory / logical_date.isoformat() / f"{name}.parquet"


@contextmanager
def _staged(path: Path | None) -> Iterator[Path | None]:
    """A temporary sibling of `path` that the caller renames into place; removed if left."""
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _write_parquet(
    tmp: Path, frame: pd.DataFrame, batch: StoredBatch, logical_date: date, model: ModelRef
) -> None:
    table = frame.assign(
        batch_id=batch.batch_id,
        logical_date=logical_date,
        model_name=model.name,
        model_version=model.version,
        model_alias=model.alias,
        dataset_version=batch.dataset_version,
        imageid=frame["imageid"].astype("Int64"),
        top3=frame["top3"].map(lambda top3: json.dumps(top3, ensure_ascii=False)),
    )
    pq.write_table(pa.Table.from_pandas(table, schema=_PARQUET_SCHEMA, preserve_index=False), tmp)


def store_batch(
    engine: Engine,
    predictions: pd.DataFrame,
    *,
    model: ModelRef,
    dataset_version: str,
    logical_date: date,
    predictions_dir: Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> StoredBatch:
    """Record a batch (inputs as received, model version, predictions) in one transaction.

    `predictions` has one row per product: `productid`, `designation`, optional `description`
    and `imageid` (as received), and the model's `prdtypecode`, `probability` and `top3`. The
    batch of the same (logical date, model version) is replaced. With `predictions_dir`, the
    batch is also written to `<dir>/<date>/<model>-v<version>.parquet`, renamed into place once
    the transaction has committed.
    """
    missing = [column for column in OUTPUT_COLUMNS if column not in predictions]
    if missing:
        raise ValueError(f"predictions lack column(s) {', '.join(missing)}")
    inputs = product_inputs(predictions)
    duplicated = inputs["productid"][inputs["productid"].duplicated()]
    if not duplicated.empty:
        raise ValueError(f"productid {duplicated.iloc[0]} appears twice in the batch")
    probability = predictions["probability"].astype("float64")
    # Float noise of a fused average (1 + 1e-16) is no model error; more than that is refused.
    probability = probability.mask((probability > 1) & (probability <= 1 + 1e-9), 1.0)
    frame = inputs.assign(
        prdtypecode=predictions["prdtypecode"].astype("int64"),
        probability=probability,
        top3=predictions["top3"].map(_top3),
    )
    with transaction(engine) as connection:
        require_current(connection)
    try:
        return _store(
            engine, frame, model, dataset_version, logical_date, predictions_dir, chunk_rows
        )
    except Exception as error:
        _record_failure(engine, model, dataset_version, logical_date, error)
        raise


def _store(
    engine: Engine,
    frame: pd.DataFrame,
    model: ModelRef,
    dataset_version: str,
    logical_date: date,
    predictions_dir: Path | None,
    chunk_rows: int,
) -> StoredBatch:
    path = None if predictions_dir is None else parquet_path(predictions_dir, logical_date, model)
    with _staged(path) as tmp:
        with transaction(engine) as connection:
            model_id = _model_version_id(connection, model)
            dataset_id = _dataset_version_id(connection, dataset_version)
            existing = _existing_batch(connection, logical_date, model_id)
            if existing is not None:
                _delete_batch(connection, existing[0])
            result = connection.execute(
                insert(PredictionBatch)
                .values(
                    logical_date=logical_date,
                    model_version_id=model_id,
                    alias=model.alias,
                    dataset_version_id=dataset_id,
                    status=BatchStatus.COMPLETE,
                    prediction_count=len(frame),
                )
                .returning(PredictionBatch.id)
            )
            batch_id = result.scalar_one()
            rows = [
                {
                    "batch_id": batch_id,
                    "product_id": product_id,
                    "model_version_id": model_id,
                    "prdtypecode": prdtypecode,
                    "probability": probability,
                    "top3": top3,
                }
                for product_id, prdtypecode, probability, top3 in zip(
                    _product_ids(connection, frame, chunk_rows),
                    frame["prdtypecode"].tolist(),
                    frame["probability"].tolist(),
                    frame["top3"],
                    strict=True,
                )
            ]
            _insert_chunks(connection, insert(Prediction), rows, chunk_rows)
            batch = StoredBatch(
                batch_id=batch_id,
                logical_date=logical_date.isoformat(),
                model=model.name,
                version=model.version,
                alias=model.alias,
                dataset_version=dataset_version,
                predictions=len(frame),
                replaced_batch_id=None if existing is None else existing[0],
                parquet=None if path is None else str(path),
            )
            if tmp is not None:
                _write_parquet(tmp, frame, batch, logical_date, model)
        if tmp is not None and path is not None:
            tmp.replace(path)
    logger.info(
        "batch %d stored: %d predictions of %s v%s for %s%s",
        batch_id,
        len(frame),
        model.name,
        model.version,
        logical_date,
        "" if existing is None else f", replacing batch {existing[0]}",
    )
    return batch


def _record_failure(
    engine: Engine, model: ModelRef, dataset_version: str, logical_date: date, error: Exception
) -> None:
    """Leave a `failed` batch row, unless a complete batch of that key exists (it is kept)."""
    try:
        with transaction(engine) as connection:
            model_id = _model_version_id(connection, model)
            existing = _existing_batch(connection, logical_date, model_id)
            if existing is not None and existing[1] == BatchStatus.COMPLETE:
                logger.warning("storing failed; the complete batch %d is kept", existing[0])
                return
            if existing is not None:
                _delete_batch(connection, existing[0])
            connection.execute(
                insert(PredictionBatch).values(
                    logical_date=logical_date,
                    model_version_id=model_id,
                    alias=model.alias,
                    dataset_version_id=_dataset_version_id(connection, dataset_version),
                    status=BatchStatus.FAILED,
                    prediction_count=0,
                    error=f"{type(error).__name__}: {error}"[:2000],
                )
            )
    except (SQLAlchemyError, RakutenError):
        logger.exception("storing failed, and so did recording the failed batch")


def unscored(
    engine: Engine, listings: pd.DataFrame, model: ModelRef, logical_date: date
) -> pd.DataFrame:
    """The listings whose inputs `model` has not scored in a complete batch of another date.

    The batch of `logical_date` itself does not count, so a rerun of a day scores the same
    listings again (and replaces that batch). A listing whose text or photo id changed since it
    was scored is a new input, hence unscored.
    """
    inputs = product_inputs(listings)
    scored: set[tuple[int, str]] = set()
    with transaction(engine) as connection:
        require_current(connection)
        for chunk in _chunks(inputs["productid"].unique().tolist(), CHUNK_ROWS):
            query = (
                select(Product.productid, Product.input_sha256)
                .join(Prediction, Prediction.product_id == Product.id)
                .join(PredictionBatch, PredictionBatch.id == Prediction.batch_id)
                .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
                .where(
                    ModelVersion.name == model.name,
                    ModelVersion.version == model.version,
                    PredictionBatch.status == BatchStatus.COMPLETE,
                    PredictionBatch.logical_date != logical_date,
                    Product.productid.in_(chunk),
                )
            )
            scored.update((row.productid, row.input_sha256) for row in connection.execute(query))
    keys = zip(inputs["productid"], inputs["input_sha256"], strict=True)
    mask = [key not in scored for key in keys]
    logger.info(
        "%d of %d listings not yet scored by %s v%s",
        sum(mask),
        len(mask),
        model.name,
        model.version,
    )
    return listings[mask]


@dataclass(frozen=True)
class ApiCall:
    """One answered call to the prediction API, as `api_requests` keeps it."""

    endpoint: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    status_code: int
    duration_ms: float
    model: ModelRef | None
    api_key_id: int | None = None
    received_at: datetime | None = None  # None: when it is written


def record_api_calls(engine: Engine, calls: Sequence[ApiCall]) -> list[int]:
    """Record API calls in one transaction and one multi-row insert (request and response as
    JSON, the id of the key that called, never the key); return their ids, in order."""
    if not calls:
        return []
    now = datetime.now(UTC)
    with transaction(engine) as connection:
        versions = {
            call.model: _model_version_id(connection, call.model)
            for call in calls
            if call.model is not None
        }
        rows = [
            {
                "received_at": call.received_at or now,
                "endpoint": call.endpoint,
                "model_version_id": None if call.model is None else versions[call.model],
                "request": call.request,
                "response": call.response,
                "status_code": call.status_code,
                "duration_ms": call.duration_ms,
                "api_key_id": call.api_key_id,
            }
            for call in calls
        ]
        result = connection.execute(
            insert(ApiRequest).returning(ApiRequest.id, sort_by_parameter_order=True), rows
        )
        return list(result.scalars())


def record_api_request(
    engine: Engine,
    *,
    endpoint: str,
    request: dict[str, Any],
    response: dict[str, Any] | None,
    status_code: int,
    duration_ms: float,
    model: ModelRef | None,
    api_key_id: int | None = None,
) -> int:
    """Record one call to the prediction API; return its id."""
    call = ApiCall(endpoint, request, response, status_code, duration_ms, model, api_key_id)
    return record_api_calls(engine, [call])[0]
