"""The store's side of the closed loop: a day's batch with its inputs, drift reports, late labels,
realised performance and the retrainings asked for. Each write is one transaction; a rerun of a
day replaces that day's drift report and scores."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, delete, func, insert, select

from src.db.engine import require_current, transaction
from src.db.models import (
    BatchStatus,
    DriftReport,
    LateLabel,
    ModelVersion,
    Prediction,
    PredictionBatch,
    Product,
    RealisedPerformance,
    RetrainRequest,
)
from src.db.queries import NotFoundError
from src.db.store import ModelRef, _insert_chunks, _insert_or_keep, _model_version_id

logger = logging.getLogger(__name__)

BATCH_COLUMNS = ("productid", "imageid", "designation", "description", "prdtypecode", "probability")


@dataclass(frozen=True)
class DayBatch:
    """A complete batch of one day by the model used under an alias, with its products' inputs."""

    batch_id: int
    model: ModelRef
    frame: pd.DataFrame  # BATCH_COLUMNS, one row per product


def day_batch(engine: Engine, logical_date: date, alias: str) -> DayBatch:
    """The day's newest complete batch made under `alias`, inputs as received."""
    with transaction(engine) as connection:
        require_current(connection)
        found = connection.execute(
            select(PredictionBatch.id, ModelVersion.name, ModelVersion.version, ModelVersion.run_id)
            .join(ModelVersion, ModelVersion.id == PredictionBatch.model_version_id)
            .where(
                PredictionBatch.logical_date == logical_date,
                PredictionBatch.alias == alias,
                PredictionBatch.status == BatchStatus.COMPLETE,
            )
            .order_by(PredictionBatch.id.desc())
            .limit(1)
        ).first()
        if found is None:
            raise NotFoundError(f"no complete batch of {logical_date} by the {alias}")
        rows = connection.execute(
            select(
                Product.productid,
                Product.imageid,
                Product.designation,
                Product.description,
                Prediction.prdtypecode,
                Prediction.probability,
            )
            .join(Prediction, Prediction.product_id == Product.id)
            .where(Prediction.batch_id == found.id)
        ).all()
    frame = pd.DataFrame(rows, columns=list(BATCH_COLUMNS))
    model = ModelRef(found.name, found.version, alias, found.run_id)
    return DayBatch(batch_id=int(found.id), model=model, frame=frame)


def save_drift_report(
    engine: Engine, logical_date: date, model: ModelRef, batch_id: int, report: dict[str, Any]
) -> None:
    """Record a day's drift report, replacing an earlier one of that day and model version."""
    with transaction(engine) as connection:
        require_current(connection)
        model_id = _model_version_id(connection, model)
        connection.execute(
            delete(DriftReport).where(
                DriftReport.logical_date == logical_date, DriftReport.model_version_id == model_id
            )
        )
        connection.execute(
            insert(DriftReport).values(
                logical_date=logical_date,
                model_version_id=model_id,
                batch_id=batch_id,
                rows=report["rows"],
                verdict=report["verdict"],
                predicted_psi=report["predicted_psi"],
                predicted_js=report["predicted_js"],
                report=report,
            )
        )


def drift_verdict(engine: Engine, logical_date: date, model: ModelRef) -> dict[str, Any] | None:
    """The stored drift report of a day by a model version, or None."""
    with transaction(engine) as connection:
        require_current(connection)
        row = connection.execute(
            select(DriftReport.report)
            .join(ModelVersion, ModelVersion.id == DriftReport.model_version_id)
            .where(
                DriftReport.logical_date == logical_date,
                ModelVersion.name == model.name,
                ModelVersion.version == model.version,
            )
        ).first()
    return None if row is None else dict(row.report)


def store_labels(engine: Engine, labels: pd.DataFrame, source: str) -> int:
    """Record late labels (`productid`, `prdtypecode`) from `source`; a file read twice adds none.

    Returns how many labels were new.
    """
    now = datetime.now(UTC)
    rows = [
        {"productid": int(p), "prdtypecode": int(c), "source": source, "arrived_at": now}
        for p, c in zip(labels["productid"], labels["prdtypecode"], strict=True)
    ]
    with transaction(engine) as connection:
        require_current(connection)
        known = select(func.count()).where(LateLabel.source == source)
        before = connection.execute(known).scalar_one()
        _insert_chunks(connection, _insert_or_keep(connection, LateLabel), rows, 1000)
        return int(connection.execute(known).scalar_one() - before)


def labelled_predictions(engine: Engine, alias: str, since: date | None) -> pd.DataFrame:
    """Each prediction of a complete `alias` batch whose product has a late label (the latest).

    Columns: logical_date, model, version, run_id, prdtypecode (predicted), label (true).
    """
    query = (
        select(
            PredictionBatch.logical_date,
            ModelVersion.name.label("model"),
            ModelVersion.version,
            ModelVersion.run_id,
            Product.productid,
            Prediction.prdtypecode,
        )
        .join(Prediction, Prediction.batch_id == PredictionBatch.id)
        .join(Product, Product.id == Prediction.product_id)
        .join(ModelVersion, ModelVersion.id == PredictionBatch.model_version_id)
        .where(PredictionBatch.alias == alias, PredictionBatch.status == BatchStatus.COMPLETE)
    )
    if since is not None:
        query = query.where(PredictionBatch.logical_date >= since)
    labels_query = select(LateLabel.productid, LateLabel.prdtypecode, LateLabel.arrived_at)
    with transaction(engine) as connection:
        require_current(connection)
        predictions = pd.DataFrame(connection.execute(query).all())
        labels = pd.DataFrame(connection.execute(labels_query).all())
    columns = ["logical_date", "model", "version", "run_id", "prdtypecode", "label"]
    if predictions.empty or labels.empty:
        return pd.DataFrame(columns=columns)
    latest = labels.sort_values("arrived_at").drop_duplicates("productid", keep="last")
    latest = latest.rename(columns={"prdtypecode": "label"})[["productid", "label"]]
    return predictions.merge(latest, on="productid")[columns]


def save_performance(
    engine: Engine, logical_date: date, model: ModelRef, scores: dict[str, Any]
) -> None:
    """Record a model's realised scores on a day, replacing earlier ones of that day."""
    with transaction(engine) as connection:
        require_current(connection)
        model_id = _model_version_id(connection, model)
        connection.execute(
            delete(RealisedPerformance).where(
                RealisedPerformance.logical_date == logical_date,
                RealisedPerformance.model_version_id == model_id,
            )
        )
        connection.execute(
            insert(RealisedPerformance).values(
                logical_date=logical_date,
                model_version_id=model_id,
                labelled=scores["labelled"],
                weighted_f1=scores["weighted_f1"],
                macro_f1=scores["macro_f1"],
                accuracy=scores["accuracy"],
            )
        )


def realised_performance(engine: Engine, model: ModelRef) -> list[dict[str, Any]]:
    """The stored realised scores of a model version, one per batch day, newest first."""
    with transaction(engine) as connection:
        require_current(connection)
        rows = connection.execute(
            select(RealisedPerformance.__table__)
            .join(ModelVersion, ModelVersion.id == RealisedPerformance.model_version_id)
            .where(ModelVersion.name == model.name, ModelVersion.version == model.version)
            .order_by(RealisedPerformance.logical_date.desc())
        ).all()
        return [
            {
                "logical_date": row.logical_date.isoformat(),
                "labelled": row.labelled,
                "weighted_f1": row.weighted_f1,
                "macro_f1": row.macro_f1,
                "accuracy": row.accuracy,
            }
            for row in rows
        ]


@dataclass(frozen=True)
class Request:
    """A retraining asked for by the loop."""

    logical_date: str
    reason: str
    dag_run_id: str
    requested_at: str


def _request(row: Any) -> Request:
    return Request(
        logical_date=row.logical_date.isoformat(),
        reason=row.reason,
        dag_run_id=row.dag_run_id,
        requested_at=row.requested_at.isoformat(),
    )


def retrain_requests(engine: Engine) -> list[Request]:
    """Every retraining the loop asked for, newest first."""
    with transaction(engine) as connection:
        require_current(connection)
        rows = connection.execute(
            select(RetrainRequest.__table__).order_by(RetrainRequest.requested_at.desc())
        ).all()
        return [_request(row) for row in rows]


def record_retrain_request(
    engine: Engine, logical_date: date, reason: str, dag_run_id: str
) -> Request:
    """Record the day's retraining request; the day's earlier one is kept if there is one."""
    with transaction(engine) as connection:
        require_current(connection)
        connection.execute(
            _insert_or_keep(connection, RetrainRequest),
            [
                {
                    "logical_date": logical_date,
                    "reason": reason,
                    "dag_run_id": dag_run_id,
                    "requested_at": datetime.now(UTC),
                }
            ],
        )
        row = connection.execute(
            select(RetrainRequest.__table__).where(RetrainRequest.logical_date == logical_date)
        ).one()
        return _request(row)
