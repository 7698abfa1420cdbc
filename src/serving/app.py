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
from time import perf_counter
from typing import Annotated, Any

import pandas as pd
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Request,
    Response,
)
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from src.config import Settings, get_settings
from src.db.engine import DatabaseError, make_engine
from src.db.queries import LatestPrediction, NotFoundError, latest_prediction
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
    TypeScore,
)

logger = logging.getLogger(__name__)


class PredictionService:
    """What the routes share: the settings, the served model, the store and the metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ApiMetrics()
        self.slot = ModelSlot(
            settings.mlflow_tracking_uri, settings.api_model_alias, on_swap=self.metrics.serving
        )
        self.engine = make_engine(settings.database_url)

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
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
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
def stored_prediction(
    productid: Annotated[int, Path(ge=0, le=2**63 - 1)], service: Service
) -> LatestPrediction:
    """The product's latest prediction from the batch runs, by the model serving the API's alias."""
    try:
        found = latest_prediction(service.engine, productid, alias=service.slot.alias)
    except NotFoundError as error:
        raise HTTPException(404, str(error)) from None
    except (SQLAlchemyError, DatabaseError):
        logger.exception("the predictions store could not be read")
        raise HTTPException(
            503, "the predictions store is unavailable (details in the API's log)"
        ) from None
    return found


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
        method = request.method if request.method in _METHODS else "other"
        metrics: ApiMetrics = request.app.state.service.metrics
        metrics.requests.labels(endpoint, method, str(status)).inc()
        metrics.latency.labels(endpoint).observe(perf_counter() - start)


class RequestSizeLimit:
    """Refuse a body over `limit` bytes (413), or one of unknown length (411), before reading it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 411/413 at once, else pass the request on."""
        if scope["type"] == "http" and scope["method"] in {"POST", "PUT", "PATCH"}:
            length = dict(scope["headers"]).get(b"content-length")
            refusal = None
            if length is None:
                refusal = (411, "send the body with a Content-Length")
            elif not length.isdigit() or int(length) > self.limit:
                refusal = (
                    413,
                    f"request body over {self.limit} bytes (RAKUTEN_API_MAX_REQUEST_MIB)",
                )
            if refusal is not None:
                status, detail = refusal
                await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _keep_fresh(slot: ModelSlot, every_seconds: float) -> None:
    """Load the model now, then check every `every_seconds` whether the alias moved."""
    while True:
        try:
            await run_in_threadpool(slot.refresh)
        except Exception:  # never let the watcher die: the API would stop following the alias
            logger.exception("checking @%s failed", slot.alias)
        await asyncio.sleep(every_seconds)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: the environment's); it loads its model at start-up."""
    service = PredictionService(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Not awaited: the API is up (/health) while the registry is slow or down; /ready tells.
        watcher = asyncio.create_task(
            _keep_fresh(service.slot, service.settings.api_refresh_seconds)
        )
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
    app.add_middleware(
        RequestSizeLimit, limit=int(service.settings.api_max_request_mib * 1024 * 1024)
    )
    app.middleware("http")(_observed)  # added last, so outermost: it also counts 411 and 413
    return app
