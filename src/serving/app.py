"""The prediction API: classify a few listings with the served model, look up batch predictions.

`rakuten serve` runs it with uvicorn. Routes: POST /predict, GET /products/{productid}/prediction,
GET /model, GET /health (the process is up), GET /ready (a model is loaded), GET /metrics
(Prometheus), and the OpenAPI document at /docs. Every /predict call is recorded in the
predictions store (`api_requests`), after the answer has gone out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict
from time import perf_counter
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from src.config import Settings, get_settings
from src.db.engine import DatabaseError, make_engine
from src.db.queries import NotFoundError, latest_prediction
from src.db.store import ModelRef, record_api_request
from src.serving.metrics import ApiMetrics
from src.serving.model import ModelSlot, ServedModel
from src.serving.schemas import (
    Listing,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    ProductPrediction,
    Readiness,
    StoredPrediction,
    TypeScore,
)

logger = logging.getLogger(__name__)


class PredictionService:
    """What the routes share: the settings, the served model, the store and the metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slot = ModelSlot(settings.mlflow_tracking_uri, settings.api_model_alias)
        self.metrics = ApiMetrics()
        self.engine = make_engine(settings.database_url)

    def refresh(self) -> None:
        """Load the alias's version if it moved, and show it in the metrics."""
        if self.slot.refresh() and self.slot.current is not None:
            self.metrics.serving(self.slot.current.ref)

    def classify(self, served: ServedModel, listings: list[Listing]) -> list[ProductPrediction]:
        """The served model's predictions for `listings`, in their order."""
        inputs = pd.DataFrame(
            {
                "designation": [listing.designation for listing in listings],
                "description": [listing.description or "" for listing in listings],
                "image": pd.Series([listing.image for listing in listings], dtype=object),
            }
        )
        answers = pd.DataFrame(served.model.predict(inputs))
        predictions = []
        for listing, answer in zip(listings, answers.to_dict("records"), strict=True):
            prediction = ProductPrediction(
                productid=listing.productid,
                prdtypecode=int(answer["prdtypecode"]),
                label=str(answer["label"]),
                probability=float(answer["probability"]),
                top3=[TypeScore(**score) for score in json.loads(answer["top3"])],
            )
            self.metrics.predicted(prediction.prdtypecode, prediction.probability)
            predictions.append(prediction)
        return predictions

    def record(
        self,
        request: dict[str, Any],
        response: dict[str, Any],
        model: ModelRef,
        duration_ms: float,
    ) -> None:
        """Record a /predict call in the store; a store that fails is logged and counted."""
        try:
            record_api_request(
                self.engine,
                endpoint="/predict",
                request=request,
                response=response,
                status_code=200,
                duration_ms=duration_ms,
                model=model,
            )
        except (SQLAlchemyError, DatabaseError):
            self.metrics.store_errors.inc()
            logger.exception("a /predict call could not be recorded in the store")


def _recorded_request(body: PredictRequest) -> dict[str, Any]:
    """The request as the store keeps it: photos by their SHA-256 and size, not their bytes."""
    products = []
    for listing in body.products:
        product = listing.model_dump(exclude={"image"})
        if listing.image is not None:
            product["image"] = {
                "sha256": hashlib.sha256(listing.image).hexdigest(),
                "bytes": len(listing.image),
            }
        products.append(product)
    return {"products": products}


def _info(served: ServedModel) -> ModelInfo:
    ref = served.ref
    return ModelInfo(
        name=ref.name,
        version=ref.version,
        alias=ref.alias,
        run_id=ref.run_id,
        loaded_at=served.loaded_at,
    )


def _service(request: Request) -> PredictionService:
    service: PredictionService = request.app.state.service
    return service


Service = Annotated[PredictionService, Depends(_service)]
router = APIRouter()
_NO_MODEL: dict[int | str, dict[str, Any]] = {
    503: {"description": "No model is loaded (none promoted yet, or registry down)"}
}


def _served(service: PredictionService) -> ServedModel:
    served = service.slot.current
    if served is None:
        raise HTTPException(503, f"no model to serve: {service.slot.problem}")
    return served


@router.get("/health")
def health() -> dict[str, str]:
    """The process is up (liveness); /ready says whether it can predict."""
    return {"status": "ok"}


@router.get("/ready", responses=_NO_MODEL)
def ready(service: Service, response: Response) -> Readiness:
    """Whether a model is loaded, which one, and what went wrong if none is."""
    served = service.slot.current
    if served is None:
        response.status_code = 503
    return Readiness(
        ready=served is not None,
        model=None if served is None else _info(served),
        problem=service.slot.problem,
    )


@router.get("/model", responses=_NO_MODEL)
def model(service: Service) -> ModelInfo:
    """The registered model version that answers /predict."""
    return _info(_served(service))


@router.post(
    "/predict",
    responses={**_NO_MODEL, 413: {"description": "More products than RAKUTEN_API_MAX_PRODUCTS"}},
)
def predict(body: PredictRequest, service: Service, background: BackgroundTasks) -> PredictResponse:
    """Classify one or a few listings (text, and the photo where given) into product types."""
    limit = service.settings.api_max_products
    if len(body.products) > limit:
        raise HTTPException(
            413,
            f"{len(body.products)} products in one request; at most {limit} "
            "(score larger sets with `rakuten predict` or the batch-prediction DAG)",
        )
    served = _served(service)
    start = perf_counter()
    predictions = service.classify(served, body.products)
    answer = PredictResponse(model=_info(served), predictions=predictions)
    duration_ms = (perf_counter() - start) * 1000
    background.add_task(
        service.record,
        _recorded_request(body),
        answer.model_dump(mode="json"),
        served.ref,
        duration_ms,
    )
    return answer


@router.get(
    "/products/{productid}/prediction",
    responses={404: {"description": "Never scored"}, 503: {"description": "Store unavailable"}},
)
def stored_prediction(productid: int, service: Service) -> StoredPrediction:
    """The product's latest prediction from the batch runs, by the model serving the API's alias."""
    try:
        found = latest_prediction(service.engine, productid, alias=service.slot.alias)
    except NotFoundError as error:
        raise HTTPException(404, str(error)) from None
    except (SQLAlchemyError, DatabaseError) as error:
        logger.exception("the predictions store could not be read")
        raise HTTPException(503, f"the predictions store is unavailable: {error}") from None
    return StoredPrediction.model_validate(asdict(found))


@router.get("/metrics", include_in_schema=False)
def metrics(service: Service) -> Response:
    """The Prometheus exposition of the API's metrics."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _observed(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Count and time every request by its route template (not its path: ids would explode)."""
    start = perf_counter()
    status = 500  # what the client gets when the route raises
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        metrics: ApiMetrics = request.app.state.service.metrics
        metrics.requests.labels(endpoint, request.method, str(status)).inc()
        metrics.latency.labels(endpoint).observe(perf_counter() - start)


async def _keep_fresh(service: PredictionService) -> None:
    """Check every RAKUTEN_API_REFRESH_SECONDS whether the alias moved (promotion, rollback)."""
    while True:
        await asyncio.sleep(service.settings.api_refresh_seconds)
        await run_in_threadpool(service.refresh)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: the environment's); it loads its model at start-up."""
    service = PredictionService(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.refresh)
        watcher = asyncio.create_task(_keep_fresh(service))
        try:
            yield
        finally:
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher
            service.engine.dispose()

    app = FastAPI(
        title="Rakuten product classifier",
        summary="Product types for Rakuten France listings, from their text and photo",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    app.include_router(router)
    app.middleware("http")(_observed)
    return app
