"""Read queries on the store. Predictions are read from complete batches only; `batches` also
lists failed runs, for operations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, Engine, case, distinct, func, select
from sqlalchemy.orm import aliased

from src.data.classes import CLASS_NAMES
from src.db.engine import require_current, transaction
from src.db.models import (
    BatchStatus,
    DatasetVersion,
    ModelVersion,
    Prediction,
    PredictionBatch,
    Product,
)
from src.errors import RakutenError


class NotFoundError(RakutenError):
    """What a query asked for is not in the store."""


@dataclass(frozen=True)
class Batch:
    """A prediction batch, complete or failed."""

    batch_id: int
    logical_date: str
    model: str
    version: str
    alias: str | None
    dataset_version: str | None
    status: str
    predictions: int
    created_at: str
    error: str | None


@dataclass(frozen=True)
class LatestPrediction:
    """A product's most recent prediction, with the inputs it was made from and its batch."""

    productid: int
    prdtypecode: int
    label: str
    probability: float
    top3: list[dict[str, Any]]
    logical_date: str
    batch_id: int
    model: str
    version: str
    alias: str | None
    dataset_version: str | None
    imageid: int | None
    designation: str
    description: str | None


@dataclass(frozen=True)
class ClassShare:
    """One predicted type's share of a batch."""

    prdtypecode: int
    label: str
    products: int
    share: float
    mean_probability: float


@dataclass(frozen=True)
class ClassAgreement:
    """How often the challenger agrees with the champion on the products of one champion type."""

    prdtypecode: int
    label: str
    products: int
    agreeing: int
    rate: float


@dataclass(frozen=True)
class Agreement:
    """Champion against challenger on the inputs both batches scored (shadow scoring)."""

    champion_batch_id: int
    challenger_batch_id: int
    champion: str
    challenger: str
    common: int
    agreeing: int
    rate: float | None
    champion_only: int
    challenger_only: int
    by_class: list[ClassAgreement]


@dataclass(frozen=True)
class ModelVersionCounts:
    """What the store holds for one model version."""

    model: str
    version: str
    aliases: list[str]
    complete_batches: int
    failed_batches: int
    predictions: int
    products: int
    first_date: str | None
    last_date: str | None


def _label(prdtypecode: int) -> str:
    return CLASS_NAMES.get(prdtypecode, "unknown")


def batches(engine: Engine, logical_date: date | None = None) -> list[Batch]:
    """Every batch (of one logical date if given), newest first, failed ones included."""
    query = (
        select(
            PredictionBatch.id,
            PredictionBatch.logical_date,
            PredictionBatch.alias,
            PredictionBatch.status,
            PredictionBatch.prediction_count,
            PredictionBatch.created_at,
            PredictionBatch.error,
            ModelVersion.name,
            ModelVersion.version,
            DatasetVersion.version.label("dataset_version"),
        )
        .join(ModelVersion, ModelVersion.id == PredictionBatch.model_version_id)
        .outerjoin(DatasetVersion, DatasetVersion.id == PredictionBatch.dataset_version_id)
        .order_by(PredictionBatch.logical_date.desc(), PredictionBatch.id.desc())
    )
    if logical_date is not None:
        query = query.where(PredictionBatch.logical_date == logical_date)
    with transaction(engine) as connection:
        require_current(connection)
        return [
            Batch(
                batch_id=row.id,
                logical_date=row.logical_date.isoformat(),
                model=row.name,
                version=row.version,
                alias=row.alias,
                dataset_version=row.dataset_version,
                status=row.status,
                predictions=row.prediction_count,
                created_at=row.created_at.isoformat(),
                error=row.error,
            )
            for row in connection.execute(query)
        ]


def find_batch(engine: Engine, logical_date: date, version: str, model: str | None = None) -> int:
    """The id of the complete batch of a model version on a date (`model` needed if ambiguous)."""
    query = (
        select(PredictionBatch.id, ModelVersion.name)
        .join(ModelVersion, ModelVersion.id == PredictionBatch.model_version_id)
        .where(
            PredictionBatch.logical_date == logical_date,
            PredictionBatch.status == BatchStatus.COMPLETE,
            ModelVersion.version == version,
        )
    )
    if model is not None:
        query = query.where(ModelVersion.name == model)
    with transaction(engine) as connection:
        require_current(connection)
        found = connection.execute(query).all()
    named = f"{model} v{version}" if model else f"version {version}"
    if not found:
        raise NotFoundError(f"no complete batch of {named} on {logical_date}")
    if len(found) > 1:
        names = ", ".join(sorted(row.name for row in found))
        raise NotFoundError(
            f"several models have a {named} batch on {logical_date} ({names}): name one"
        )
    return int(found[0].id)


def _complete_batch(connection: Connection, batch_id: int) -> tuple[int, str]:
    """A complete batch's prediction count and `name vVERSION`; NotFoundError otherwise."""
    row = connection.execute(
        select(
            PredictionBatch.status,
            PredictionBatch.prediction_count,
            ModelVersion.name,
            ModelVersion.version,
        )
        .join(ModelVersion, ModelVersion.id == PredictionBatch.model_version_id)
        .where(PredictionBatch.id == batch_id)
    ).first()
    if row is None:
        raise NotFoundError(f"no batch {batch_id}")
    if row.status != BatchStatus.COMPLETE:
        raise NotFoundError(f"batch {batch_id} is {row.status}, not complete")
    return row.prediction_count, f"{row.name} v{row.version}"


def latest_prediction(
    engine: Engine, productid: int, alias: str | None = "champion"
) -> LatestPrediction:
    """The most recent prediction for a product, by a model used under `alias` (None: any)."""
    query = (
        select(
            Product.productid,
            Product.imageid,
            Product.designation,
            Product.description,
            Prediction.prdtypecode,
            Prediction.probability,
            Prediction.top3,
            PredictionBatch.id.label("batch_id"),
            PredictionBatch.logical_date,
            PredictionBatch.alias,
            ModelVersion.name,
            ModelVersion.version,
            DatasetVersion.version.label("dataset_version"),
        )
        .join(Prediction, Prediction.product_id == Product.id)
        .join(PredictionBatch, PredictionBatch.id == Prediction.batch_id)
        .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .outerjoin(DatasetVersion, DatasetVersion.id == PredictionBatch.dataset_version_id)
        .where(Product.productid == productid, PredictionBatch.status == BatchStatus.COMPLETE)
        .order_by(PredictionBatch.logical_date.desc(), PredictionBatch.id.desc())
        .limit(1)
    )
    if alias is not None:
        query = query.where(PredictionBatch.alias == alias)
    with transaction(engine) as connection:
        require_current(connection)
        row = connection.execute(query).first()
    if row is None:
        by = "" if alias is None else f" by a model used as {alias}"
        raise NotFoundError(f"no prediction for productid {productid}{by}")
    return LatestPrediction(
        productid=row.productid,
        prdtypecode=row.prdtypecode,
        label=_label(row.prdtypecode),
        probability=row.probability,
        top3=row.top3,
        logical_date=row.logical_date.isoformat(),
        batch_id=row.batch_id,
        model=row.name,
        version=row.version,
        alias=row.alias,
        dataset_version=row.dataset_version,
        imageid=row.imageid,
        designation=row.designation,
        description=row.description,
    )


def class_distribution(engine: Engine, batch_id: int) -> list[ClassShare]:
    """How a complete batch's products spread over the predicted types, largest first."""
    products = func.count().label("products")
    query = (
        select(Prediction.prdtypecode, products, func.avg(Prediction.probability).label("mean"))
        .where(Prediction.batch_id == batch_id)
        .group_by(Prediction.prdtypecode)
        .order_by(products.desc(), Prediction.prdtypecode)
    )
    with transaction(engine) as connection:
        require_current(connection)
        total, _ = _complete_batch(connection, batch_id)
        rows = connection.execute(query).all()
    return [
        ClassShare(
            prdtypecode=row.prdtypecode,
            label=_label(row.prdtypecode),
            products=row.products,
            share=row.products / total,
            mean_probability=float(row.mean),
        )
        for row in rows
    ]


def agreement(engine: Engine, champion_batch_id: int, challenger_batch_id: int) -> Agreement:
    """Where the challenger's batch agrees with the champion's, on the inputs both scored."""
    champion, challenger = aliased(Prediction), aliased(Prediction)
    products = func.count().label("products")
    agreeing = func.sum(case((champion.prdtypecode == challenger.prdtypecode, 1), else_=0))
    query = (
        select(champion.prdtypecode, products, agreeing.label("agreeing"))
        .join(challenger, challenger.product_id == champion.product_id)
        .where(champion.batch_id == champion_batch_id, challenger.batch_id == challenger_batch_id)
        .group_by(champion.prdtypecode)
        .order_by(products.desc(), champion.prdtypecode)
    )
    with transaction(engine) as connection:
        require_current(connection)
        champion_count, champion_name = _complete_batch(connection, champion_batch_id)
        challenger_count, challenger_name = _complete_batch(connection, challenger_batch_id)
        rows = connection.execute(query).all()
    by_class = [
        ClassAgreement(
            prdtypecode=row.prdtypecode,
            label=_label(row.prdtypecode),
            products=row.products,
            agreeing=int(row.agreeing),
            rate=int(row.agreeing) / row.products,
        )
        for row in rows
    ]
    common = sum(item.products for item in by_class)
    agreed = sum(item.agreeing for item in by_class)
    return Agreement(
        champion_batch_id=champion_batch_id,
        challenger_batch_id=challenger_batch_id,
        champion=champion_name,
        challenger=challenger_name,
        common=common,
        agreeing=agreed,
        rate=agreed / common if common else None,
        champion_only=champion_count - common,
        challenger_only=challenger_count - common,
        by_class=by_class,
    )


def model_version_counts(engine: Engine) -> list[ModelVersionCounts]:
    """Per model version: aliases it was used under, batches, predictions, products, dates."""
    complete = PredictionBatch.status == BatchStatus.COMPLETE
    batch_query = (
        select(
            ModelVersion.id,
            ModelVersion.name,
            ModelVersion.version,
            func.count(case((complete, 1))).label("complete"),
            func.count(case((PredictionBatch.status == BatchStatus.FAILED, 1))).label("failed"),
            func.coalesce(func.sum(case((complete, PredictionBatch.prediction_count))), 0).label(
                "predictions"
            ),
            func.min(case((complete, PredictionBatch.logical_date))).label("first_date"),
            func.max(case((complete, PredictionBatch.logical_date))).label("last_date"),
        )
        .outerjoin(PredictionBatch, PredictionBatch.model_version_id == ModelVersion.id)
        .group_by(ModelVersion.id, ModelVersion.name, ModelVersion.version)
        .order_by(ModelVersion.name, ModelVersion.id)
    )
    products_query = (
        select(Prediction.model_version_id, func.count(distinct(Prediction.product_id)))
        .join(PredictionBatch, PredictionBatch.id == Prediction.batch_id)
        .where(complete)
        .group_by(Prediction.model_version_id)
    )
    aliases_query = (
        select(PredictionBatch.model_version_id, PredictionBatch.alias)
        .where(complete, PredictionBatch.alias.is_not(None))
        .distinct()
    )
    with transaction(engine) as connection:
        require_current(connection)
        rows = connection.execute(batch_query).all()
        products = {row[0]: row[1] for row in connection.execute(products_query)}
        aliases: dict[int, list[str]] = {}
        for model_version_id, alias in connection.execute(aliases_query):
            aliases.setdefault(model_version_id, []).append(str(alias))
    return [
        ModelVersionCounts(
            model=row.name,
            version=row.version,
            aliases=sorted(aliases.get(row.id, [])),
            complete_batches=row.complete,
            failed_batches=row.failed,
            predictions=int(row.predictions),
            products=products.get(row.id, 0),
            first_date=None if row.first_date is None else row.first_date.isoformat(),
            last_date=None if row.last_date is None else row.last_date.isoformat(),
        )
        for row in rows
    ]
