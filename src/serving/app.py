"""The prediction API: classify a few listings with the served model, look up batch predictions.

`rakuten serve` runs it with uvicorn. Routes: POST /predict (and /predict/upload, multipart),
GET /products/{productid}/prediction, GET /model, GET /health (the process is up), GET /ready (a
model is loaded), GET /metrics (Prometheus), and the OpenAPI document at /docs; the lifecycle
routes (lifecycle_routes.py) and the pages (pages.py) join them. Every call but /health, /ready
and /metrics needs an API key (auth.py). Predictions go through the micro-batcher (batching.py):
the listings of concurrent requests are scored together, one model call at a time off the event
loop, and too many waiting listings answer 503 at once. Every prediction is recorded in the
predictions store (`api_requests`, with the id of the key that asked) by a writer thread that
stores the calls waiting in one transaction (recording.py), after the answer has gone out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Annotated, Any, Final

import pandas as pd
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Path,
    Request,
    Response,
    UploadFile,
)
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mlflow.pyfunc import PyFuncModel
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.config import Settings, get_settings
from src.db.api_keys import server_secret
from src.db.engine import DatabaseError, make_engine
from src.db.queries import LatestPrediction, NotFoundError, latest_prediction
from src.db.store import ApiCall, ModelRef, record_api_calls
from src.models.packaged import RakutenClassifier
from src.serving import datasets, labels, lifecycle_routes, pages, training_runs
from src.serving.auth import AUTH_ERRORS, Caller, KeyChecker, Predictor
from src.serving.batching import MicroBatcher, QueueFullError
from src.serving.metrics import ApiMetrics
from src.serving.model import ModelSlot, ServedModel
from src.serving.recording import CallRecorder
from src.serving.schemas import (
    MAX_TEXT_CHARS,
    TITLE_PATTERN,
    Listing,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    ProductId,
    ProductPrediction,
    Readiness,
    TypeScore,
)

logger = logging.getLogger(__name__)

# A listing's answer with the model version that gave it.
Scored = tuple[ServedModel, dict[str, Any]]
# How long a client refused for overload should wait (a batch takes tens of milliseconds).
RETRY_AFTER: Final = {"Retry-After": "1"}


@dataclass(frozen=True)
class Answered:
    """An answered prediction call, kept until the recorder writes it."""

    endpoint: str
    listings: list[Listing]
    answer: PredictResponse
    model: ModelRef
    received_at: datetime
    duration_ms: float
    api_key_id: int | None

    def call(self) -> ApiCall:
        """The call as the store keeps it."""
        return ApiCall(
            endpoint=self.endpoint,
            request=_recorded_request(self.listings),
            response=self.answer.model_dump(mode="json"),
            status_code=200,
            duration_ms=self.duration_ms,
            model=self.model,
            api_key_id=self.api_key_id,
            received_at=self.received_at,
        )


class PredictionService:
    """What the routes share: the settings, the served model, the store and the metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ApiMetrics()
        self.slot = ModelSlot(
            settings.mlflow_tracking_uri, settings.api_model_alias, on_swap=self.metrics.serving
        )
        self.engine = make_engine(settings.database_url)
        self.batcher: MicroBatcher[Listing, Scored] = MicroBatcher(
            self.score,
            max_batch=settings.api_batch_max_listings,
            max_wait=settings.api_batch_max_wait_ms / 1000,
            max_queued=settings.api_max_queued_listings,
            on_batch=self.metrics.batched,
        )
        self.metrics.queued_listings.set_function(lambda: self.batcher.queued)
        self.recorder: CallRecorder[Answered] = CallRecorder(self.record)

    def score(self, listings: list[Listing]) -> list[Scored]:
        """The served model's answer for each listing of a batch (one model call, in a thread).

        The registered pyfunc model's own `predict`, minus MLflow's per-call input checks: the
        listings were checked when the request was read, into the columns the model takes.
        """
        served = served_model(self)
        inputs = pd.DataFrame(
            {
                "designation": [listing.designation for listing in listings],
                "description": [listing.description or "" for listing in listings],
                "image": pd.Series([listing.image for listing in listings], dtype=object),
            }
        )
        answers = scoring_model(served.model).predict(None, inputs)  # type: ignore[arg-type]
        return [(served, {str(k): v for k, v in row.items()}) for row in answers.to_dict("records")]

    def predictions(self, listings: list[Listing], scored: list[Scored]) -> list[ProductPrediction]:
        """The answers of a request's listings, in their order, counted in the metrics."""
        predictions = []
        for listing, (_, answer) in zip(listings, scored, strict=True):
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

    def record(self, answered: list[Answered]) -> None:
        """Record answered calls in the store, in one transaction (the recorder's thread); a
        store that fails is logged and counted, per call."""
        try:
            record_api_calls(self.engine, [call.call() for call in answered])
        except (SQLAlchemyError, DatabaseError):
            self.metrics.store_errors.inc(len(answered))
            logger.exception(
                "%d prediction calls could not be recorded in the store", len(answered)
            )

    async def answer(
        self,
        listings: list[Listing],
        who: Caller,
        endpoint: str,
    ) -> PredictResponse:
        """Classify `listings` with the served model (batched with other requests' listings), and
        record the call once answered; 503 with Retry-After when too many listings wait."""
        limit = self.settings.api_max_products
        if len(listings) > limit:
            raise HTTPException(
                413,
                f"{len(listings)} products in one request; at most {limit} "
                "(score larger sets with `rakuten predict` or the batch-prediction DAG)",
            )
        served_model(self)  # no model: 503 now, not after queueing
        received_at = datetime.now(UTC)
        start = perf_counter()
        try:
            scored = await self.batcher.submit(listings)
        except QueueFullError as error:
            self.metrics.overloaded.inc()
            raise HTTPException(
                503, f"the API is overloaded: {error}; retry shortly", headers=RETRY_AFTER
            ) from None
        served = scored[0][0]
        answer = PredictResponse(
            model=_info(served), predictions=self.predictions(listings, scored)
        )
        duration_ms = (perf_counter() - start) * 1000
        answered = Answered(
            endpoint, listings, answer, served.ref, received_at, duration_ms, who.key_id
        )
        if not self.recorder.add(answered):  # the store has not kept up for a while
            self.metrics.store_errors.inc()
            logger.warning(
                "a %s call was not recorded: too many calls wait for the store", endpoint
            )
        return answer


def scoring_model(model: PyFuncModel) -> RakutenClassifier:
    """The registered model's python model, whose `predict` the API calls on its batches."""
    python_model = model.unwrap_python_model()  # type: ignore[no-untyped-call]
    if not isinstance(python_model, RakutenClassifier):
        raise TypeError(f"the served model is a {type(python_model).__name__}, not a Rakuten model")
    return python_model


def _recorded_request(listings: list[Listing]) -> dict[str, Any]:
    """The request as the store keeps it: photos by their SHA-256 and size, not their bytes."""
    products = []
    for listing in listings:
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


async def service_of(request: Request) -> PredictionService:
    """The app's prediction service."""
    service: PredictionService = request.app.state.service
    return service


Service = Annotated[PredictionService, Depends(service_of)]
router = APIRouter()
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NO_MODEL: dict[int | str, dict[str, Any]] = {
    503: {"description": "No model is loaded (none promoted yet, or registry down)"}
}


def served_model(service: PredictionService) -> ServedModel:
    """The model answering now, or 503 with the reason there is none."""
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


@router.get("/model", responses={**AUTH_ERRORS, **_NO_MODEL})
def model(service: Service, who: Predictor) -> ModelInfo:
    """The registered model version that answers /predict."""
    return _info(served_model(service))


_PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    503: {
        "description": "No model is loaded (none promoted yet, or registry down), or more than "
        "RAKUTEN_API_MAX_QUEUED_LISTINGS listings are waiting to be scored: retry after "
        "Retry-After seconds",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying (when overloaded)",
                "schema": {"type": "integer"},
            }
        },
    },
}


@router.post(
    "/predict",
    responses={
        **_PREDICT_ERRORS,
        413: {"description": "More products than RAKUTEN_API_MAX_PRODUCTS"},
    },
)
async def predict(body: PredictRequest, service: Service, who: Predictor) -> PredictResponse:
    """Classify one or a few listings (text, and the photo where given) into product types."""
    return await service.answer(body.products, who, "/predict")


@router.post("/predict/upload", responses=_PREDICT_ERRORS)
async def predict_upload(
    service: Service,
    who: Predictor,
    designation: Annotated[
        str, Form(min_length=1, max_length=MAX_TEXT_CHARS, pattern=TITLE_PATTERN)
    ],
    description: Annotated[str | None, Form(max_length=MAX_TEXT_CHARS)] = None,
    photo: Annotated[UploadFile | None, File(description="JPEG or PNG")] = None,
) -> PredictResponse:
    """Classify one listing sent as a form (multipart): title, description, photo file."""
    try:
        listing = await pages.upload_listing(designation, description, photo)
    except ValidationError as error:
        raise HTTPException(
            422, error.errors(include_url=False, include_context=False, include_input=False)
        ) from None
    return await service.answer([listing], who, "/predict/upload")


@router.get(
    "/products/{productid}/prediction",
    responses={
        **AUTH_ERRORS,
        404: {"description": "Never scored"},
        503: {"description": "Store unavailable"},
    },
)
def stored_prediction(
    productid: Annotated[ProductId, Path()], service: Service, who: Predictor
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


class RequestMetrics:
    """Count and time every request by its route template (not its path: ids would explode).

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` (what `app.middleware("http")`
    makes) runs each request through a task group and memory streams, which cost more per request
    than the model's share of a batch under load.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; count its status (500 when the app raised) and its time."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500  # what the client gets when the route raises

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            # The router writes the matched route into the request's scope.
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.requests.labels(endpoint, method, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(perf_counter() - start)


class RequestSizeLimit:
    """Refuse a body over `limit` bytes (`upload_limit` for dataset uploads) with 413, or one of
    unknown length with 411, before reading it."""

    UPLOAD_PATHS = frozenset({"/datasets", "/ui/datasets", "/labels"})

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 411/413 at once, else pass the request on."""
        if scope["type"] == "http" and scope["method"] in {"POST", "PUT", "PATCH"}:
            length = dict(scope["headers"]).get(b"content-length")
            upload = scope["path"] in self.UPLOAD_PATHS
            limit = self.upload_limit if upload else self.limit
            setting = "RAKUTEN_API_MAX_UPLOAD_MIB" if upload else "RAKUTEN_API_MAX_REQUEST_MIB"
            refusal = None
            if length is None:
                refusal = (411, "send the body with a Content-Length")
            elif not length.isdigit() or int(length) > limit:
                refusal = (413, f"request body over {limit} bytes ({setting})")
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


_UNREADABLE_BODY: Final = {
    "description": "The body could not be read: JSON that is not UTF-8, or a broken form"
}


def document_unreadable_bodies(app: FastAPI) -> None:
    """List the 400 FastAPI answers for a body it cannot parse on every operation that takes one,
    so that the OpenAPI document names every status code the API answers (FastAPI's way of
    extending the document: wrap `app.openapi`, which caches it)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for operations in generate()["paths"].values():
                for operation in operations.values():
                    if "requestBody" in operation:
                        operation["responses"].setdefault("400", _UNREADABLE_BODY)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


class _AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a refused input is echoed in the error,
    and a lone surrogate (valid as a JSON escape, not as UTF-8) must not break the answer."""

    def render(self, content: Any) -> bytes:
        """The content as ASCII JSON."""
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


async def _invalid_request(request: Request, error: Exception) -> Response:
    """FastAPI's 422 for a request that fails validation, able to echo any input."""
    assert isinstance(error, RequestValidationError)
    return _AsciiJSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: the environment's); it loads its model at start-up."""
    service = PredictionService(settings or get_settings())
    if service.settings.api_auth == "off":
        hmac_key = None
        for line in (
            "RAKUTEN_API_AUTH=off: NO API KEY IS CHECKED.",
            "Anyone who reaches this API may classify, read predictions and promote models.",
            "Use it for a local demo only; never expose this process.",
        ):
            logger.warning("!!! %s", line)
    else:
        hmac_key = server_secret(service.settings)

    @asynccontextmanager
    async def lifespan(started: FastAPI) -> AsyncIterator[None]:
        # Not awaited: the API is up (/health) while the registry is slow or down; /ready tells.
        watcher = asyncio.create_task(
            _keep_fresh(service.slot, service.settings.api_refresh_seconds)
        )
        service.batcher.start()
        service.recorder.start()
        try:
            yield
        finally:
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher
            await service.batcher.stop()
            await service.recorder.stop()  # after the batcher: every answered call is queued
            started.state.jobs.close()
            service.engine.dispose()

    app = FastAPI(
        title="Rakuten product classifier",
        summary="Product types for Rakuten France listings, from their text and photo",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.jobs = lifecycle_routes.Jobs()
    app.state.airflow = training_runs.Airflow(service.settings)
    app.state.keys = KeyChecker(service.engine, hmac_key, service.settings.api_key_cache_seconds)
    app.include_router(router)
    app.include_router(lifecycle_routes.router)
    app.include_router(datasets.router)
    app.include_router(labels.router)
    app.include_router(training_runs.router)
    app.include_router(pages.router)
    pages.mount(app, hmac_key)
    document_unreadable_bodies(app)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(
        RequestSizeLimit,
        limit=int(service.settings.api_max_request_mib * 1024 * 1024),
        upload_limit=int(service.settings.api_max_upload_mib * 1024 * 1024),
    )
    # Added last, so outermost: it also counts 411 and 413.
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    return app
