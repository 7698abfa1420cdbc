"""The model's lifecycle over HTTP (scope admin): versions, gate, promote, roll back, history.

Each route calls the function that `rakuten model …` calls (src/registry/lifecycle.py), with the
same settings and params: the API is one more caller, never a second implementation. The gate
takes a minute, so `POST /models/{version}/validate` answers a job at once (202) and runs it in
the API process, one at a time; `GET /jobs/{id}` tells how it went.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi import Path as PathParam
from mlflow import MlflowClient
from pydantic import BaseModel, Field

from src.config import Settings, load_params
from src.db.datasets import get_dataset
from src.db.models import DatasetPurpose
from src.errors import RakutenError
from src.models.packaged import MODEL_NAME
from src.registry.lifecycle import (
    GateNotPassedError,
    champion_history,
    promote,
    rollback,
    validate,
)
from src.registry.tracking import TrainingPaths, tracking_client
from src.serving.auth import AUTH_ERRORS, Admin, Caller

logger = logging.getLogger(__name__)

router = APIRouter(tags=["lifecycle"], responses=AUTH_ERRORS)
VERSION = Annotated[str, PathParam(pattern=r"^[0-9]{1,9}$", description="A registered version")]
_LINEAGE = ("data_version", "params_sha256", "git_commit", "airflow_dag_run_id", "data_source")


class JobState(BaseModel):
    """A background job (a gate run): its state, and its result or error once finished."""

    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    created_at: datetime
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


class Jobs:
    """Jobs run one at a time in a thread of the API process, kept in memory (lost at restart:
    a finished gate's decision lives on the version's tags, so nothing of value is)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
        self._jobs: dict[str, JobState] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, work: Callable[[], dict[str, Any]]) -> JobState:
        """Queue `work`; its state is at `get(id)`."""
        job = JobState(id=uuid.uuid4().hex, kind=kind, status="queued", created_at=_now())
        with self._lock:
            self._jobs[job.id] = job
        self._pool.submit(self._run, job.id, work)
        return job

    def _set(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            self._jobs[job_id] = self._jobs[job_id].model_copy(update=changes)

    def _run(self, job_id: str, work: Callable[[], dict[str, Any]]) -> None:
        self._set(job_id, status="running")
        try:
            result = work()
        except Exception as error:  # the job's caller reads why at GET /jobs/{id}
            logger.exception("job %s failed", job_id)
            self._set(job_id, status="failed", error=str(error), finished_at=_now())
        else:
            self._set(job_id, status="succeeded", result=result, finished_at=_now())

    def get(self, job_id: str) -> JobState | None:
        """A job's state, None if unknown."""
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        """Stop taking jobs; the running one is left to finish in its thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _now() -> datetime:
    return datetime.now(UTC)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.service.settings
    return settings


def registry_client(settings: Settings) -> MlflowClient:
    """A client on the API's registry."""
    return tracking_client(settings.mlflow_tracking_uri)


def training_paths(settings: Settings) -> TrainingPaths:
    """The pipeline's folders, as `rakuten model validate` defaults them."""
    return TrainingPaths(
        settings.data_root / "processed",
        settings.data_root / "raw",
        settings.models_dir,
        settings.reports_dir,
    )


def actor(who: Caller) -> str:
    """Who moves an alias, for the audit log: the key's name and id."""
    return f"{who.name} (API key {who.key_id})" if who.key_id is not None else who.name


def model_versions(client: MlflowClient) -> list[dict[str, Any]]:
    """Every registered version, newest first: aliases, test scores, gate decision, lineage."""
    found = client.search_model_versions(f"name = '{MODEL_NAME}'")
    aliases: dict[str, list[str]] = {}
    if found:
        for alias, version in client.get_registered_model(MODEL_NAME).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
    versions = []
    for version in sorted(found, key=lambda v: int(v.version), reverse=True):
        tags = version.tags
        number = str(version.version)
        versions.append(
            {
                "version": number,
                "aliases": sorted(aliases.get(number, [])),
                "run_id": version.run_id,
                "created_at": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
                "scores": {k: float(v) for k, v in tags.items() if k.startswith("test_")},
                "gate": {
                    "decision": tags.get("gate.decision"),
                    "reasons": tags.get("gate.reasons"),
                    "weighted_f1": tags.get("gate.weighted_f1"),
                    "champion_version": tags.get("gate.champion_version"),
                    "validated_at": tags.get("gate.validated_at"),
                },
                "approval": tags.get("approval"),
                "lineage": {key: tags[key] for key in _LINEAGE if key in tags},
            }
        )
    return versions


class RegisteredVersion(BaseModel):
    """A registered version of the model, as GET /models lists it."""

    version: str
    aliases: list[str]
    run_id: str | None
    created_at: datetime
    scores: dict[str, float] = Field(description="Test-split scores (weighted F1, macro F1, …)")
    gate: dict[str, str | None] = Field(description="The gate's decision and reasons (tags gate.*)")
    approval: str | None
    lineage: dict[str, str] = Field(description="Data version, params hash, git commit, run")


class ValidateRequest(BaseModel):
    """Extra labelled rows for the gate: an uploaded validation dataset."""

    dataset_id: int | None = Field(None, ge=1, description="From POST /datasets (validation)")


class RollbackRequest(BaseModel):
    """Why the champion goes back, for the audit log."""

    reason: str = Field("rollback through the API", min_length=1, max_length=500)


def validation_data(request: Request, dataset_id: int | None) -> Path | None:
    """The folder of an uploaded validation dataset (404 unknown, 422 not for validation)."""
    if dataset_id is None:
        return None
    try:
        dataset = get_dataset(request.app.state.service.engine, dataset_id)
    except RakutenError as error:
        raise HTTPException(404, str(error)) from None
    if dataset.purpose != DatasetPurpose.VALIDATION:
        raise HTTPException(422, f"dataset {dataset_id} was uploaded for {dataset.purpose}")
    return Path(dataset.path)


def start_validation(
    request: Request, version: str, who: Caller, dataset_id: int | None = None
) -> JobState:
    """Queue the gate of `version` on the pinned test split, plus an uploaded validation dataset
    (`rakuten model validate --no-fail [--data DIR]`)."""
    settings = _settings(request)
    data_dir = validation_data(request, dataset_id)
    jobs: Jobs = request.app.state.jobs
    client = registry_client(settings)
    if not client.search_model_versions(f"name = '{MODEL_NAME}' and version_number = {version}"):
        raise HTTPException(404, f"{MODEL_NAME} has no version {version}")
    logger.info("gate of version %s asked by %s", version, actor(who))

    def gate() -> dict[str, Any]:
        gate_params = load_params(settings.params_file).gate
        return validate(client, training_paths(settings), gate_params, version, data_dir)

    return jobs.submit(f"validate version {version}", gate)


def promote_version(settings: Settings, version: str, who: Caller) -> dict[str, Any]:
    """Promote `version` as a person would (`rakuten model promote --version V`); 409 if refused."""
    approval = load_params(settings.params_file).promote.approval
    try:
        return promote(registry_client(settings), approval, version, automatic=False, by=actor(who))
    except GateNotPassedError as error:
        raise HTTPException(409, str(error)) from None
    except RakutenError as error:
        raise HTTPException(409, str(error)) from None


def rollback_champion(settings: Settings, who: Caller, reason: str) -> dict[str, Any]:
    """Move @champion back (`rakuten model rollback`); 409 with the reason when it cannot."""
    try:
        return rollback(registry_client(settings), by=actor(who), reason=reason)
    except RakutenError as error:
        raise HTTPException(409, str(error)) from None


@router.get("/models")
def list_models(request: Request, who: Admin) -> list[RegisteredVersion]:
    """Every registered version, newest first, with aliases, scores, gate and lineage."""
    versions = model_versions(registry_client(_settings(request)))
    return [RegisteredVersion.model_validate(version) for version in versions]


@router.get("/models/history")
def history(request: Request, who: Admin) -> list[dict[str, Any]]:
    """Every move of @champion, oldest first (`rakuten model history`)."""
    return champion_history(registry_client(_settings(request)))


@router.post(
    "/models/{version}/validate",
    status_code=202,
    responses={
        404: {"description": "No such version or dataset"},
        422: {"description": "The dataset is not for validation"},
    },
)
def validate_version(
    request: Request,
    version: VERSION,
    who: Admin,
    body: Annotated[ValidateRequest | None, Body()] = None,
) -> JobState:
    """Run the gate on a version in the background; follow it at GET /jobs/{id}."""
    return start_validation(request, version, who, None if body is None else body.dataset_id)


@router.get("/jobs/{job_id}", responses={404: {"description": "No such job"}})
def job(request: Request, job_id: Annotated[str, PathParam(max_length=64)], who: Admin) -> JobState:
    """A background job's state, and its result (the gate's summary) once finished."""
    jobs: Jobs = request.app.state.jobs
    found = jobs.get(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id} (jobs are kept until the API restarts)")
    return found


@router.post(
    "/models/{version}/promote",
    responses={409: {"description": "Refused: the gate did not pass, or the champion moved"}},
)
def promote_route(request: Request, version: VERSION, who: Admin) -> dict[str, Any]:
    """Make a version that passed the gate @champion, as `rakuten model promote` does."""
    return promote_version(_settings(request), version, who)


@router.post(
    "/models/rollback",
    responses={409: {"description": "No previous champion to go back to"}},
)
def rollback_route(
    request: Request, who: Admin, body: Annotated[RollbackRequest | None, Body()] = None
) -> dict[str, Any]:
    """Move @champion back to the previous champion (`rakuten model rollback`)."""
    reason = RollbackRequest().reason if body is None else body.reason
    return rollback_champion(_settings(request), who, reason)
