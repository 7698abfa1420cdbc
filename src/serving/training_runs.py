"""Training runs over HTTP (scope admin): trigger the DAG `rakuten_training` through Airflow 3's
REST API and follow it. The API starts nothing itself: Airflow runs the pipeline, exactly as a
run started from its UI or on schedule.

`POST /training-runs` takes the DAG's trigger form as `conf` (its Params: unknown names are
refused here, values are checked by Airflow against each Param's schema) and answers the run id;
`GET /training-runs/{run_id}` answers the run's state and each task's. Airflow is reached at
RAKUTEN_AIRFLOW_API_URL with a JWT from its `/auth/token` (RAKUTEN_AIRFLOW_USERNAME and
RAKUTEN_AIRFLOW_PASSWORD); when it cannot be reached or refuses, the answer is 503 with why.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, Field

from src.config import Settings
from src.serving.auth import AUTH_ERRORS, Admin

logger = logging.getLogger(__name__)

router = APIRouter(tags=["training"], responses=AUTH_ERRORS)
DAG_ID: Final = "rakuten_training"
TIMEOUT_SECONDS: Final = 30
_UNAVAILABLE: Final[dict[int | str, dict[str, str]]] = {
    503: {"description": "Airflow cannot be reached, or refuses (the reason is in `detail`)"}
}


class AirflowError(Exception):
    """Airflow answered with an error status (kept), or could not be reached (status None)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class Airflow:
    """A small client of Airflow 3's public REST API, authenticated with a JWT."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.airflow_api_url.rstrip("/")
        self.username = settings.airflow_username
        self.credential = settings.airflow_password
        self._token: str | None = None

    def _send(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise AirflowError(_detail(error), error.code) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise AirflowError(f"Airflow at {self.url} cannot be reached ({reason})") from None

    def _login(self) -> str:
        if self.credential is None:
            raise AirflowError("RAKUTEN_AIRFLOW_PASSWORD is not set: the API cannot sign in")
        answer = self._send(
            "POST",
            "/auth/token",
            {"username": self.username, "password": self.credential.get_secret_value()},
        )
        token: str = answer["access_token"]
        return token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """An authenticated call; the token is taken again once when Airflow says it expired."""
        if self._token is None:
            self._token = self._login()
        try:
            return self._send(method, path, body, self._token)
        except AirflowError as error:
            if error.status != 401:
                raise
            self._token = self._login()
            return self._send(method, path, body, self._token)


def _detail(error: urllib.error.HTTPError) -> str:
    """Airflow's reason for an error status."""
    try:
        detail = json.loads(error.read()).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"Airflow answered {error.code}: {detail or error.reason}"


class TrainingRunRequest(BaseModel):
    """The DAG's trigger form: its Params by name (all optional)."""

    conf: dict[str, Any] = Field(
        default_factory=dict,
        description='rakuten_training\'s Params, e.g. {"branches": ["text_tfidf"], "force": true}',
    )


class TaskState(BaseModel):
    """A task of the run and its state."""

    task_id: str
    map_index: int = -1
    state: str | None


class TrainingRun(BaseModel):
    """A run of rakuten_training: its id, state, and each task's state."""

    dag_id: str = DAG_ID
    run_id: str
    state: str | None
    conf: dict[str, Any] | None = None
    start_date: str | None = None
    end_date: str | None = None
    tasks: list[TaskState] = Field(default_factory=list)


def _airflow(request: Request) -> Airflow:
    airflow: Airflow = request.app.state.airflow
    return airflow


def _unavailable(error: AirflowError) -> HTTPException:
    logger.warning("Airflow: %s", error)
    return HTTPException(503, str(error))


def trigger_training(airflow: Airflow, conf: dict[str, Any]) -> TrainingRun:
    """Check `conf` against the DAG's Params and start a run (logical date none: run now)."""
    dag = f"/api/v2/dags/{DAG_ID}"
    known = airflow.call("GET", f"{dag}/details").get("params") or {}
    unknown = sorted(set(conf) - set(known))
    if unknown:
        raise HTTPException(
            422, f"unknown parameter(s) {', '.join(unknown)}; {DAG_ID} takes {', '.join(known)}"
        )
    try:
        run = airflow.call("POST", f"{dag}/dagRuns", {"logical_date": None, "conf": conf})
    except AirflowError as error:
        if error.status in (400, 422):  # a value its Param's schema refuses
            raise HTTPException(422, str(error)) from None
        raise
    logger.info("training run %s triggered in Airflow", run["dag_run_id"])
    return TrainingRun(run_id=run["dag_run_id"], state=run.get("state"), conf=run.get("conf"))


@router.post("/training-runs", status_code=201, responses=_UNAVAILABLE)
def start_training(request: Request, who: Admin, body: TrainingRunRequest) -> TrainingRun:
    """Trigger rakuten_training in Airflow with the trigger form's values; answer the run id."""
    try:
        return trigger_training(_airflow(request), body.conf)
    except AirflowError as error:
        raise _unavailable(error) from None


@router.get(
    "/training-runs/{run_id}",
    responses={**_UNAVAILABLE, 404: {"description": "No such run"}},
)
def training_run(
    request: Request, who: Admin, run_id: Annotated[str, Path(max_length=250)]
) -> TrainingRun:
    """The run's state and each task's, from Airflow."""
    airflow = _airflow(request)
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    try:
        run = airflow.call("GET", path)
        tasks = airflow.call("GET", f"{path}/taskInstances")
    except AirflowError as error:
        if error.status == 404:
            raise HTTPException(404, f"no run {run_id} of {DAG_ID}") from None
        raise _unavailable(error) from None
    return TrainingRun(
        run_id=run["dag_run_id"],
        state=run.get("state"),
        conf=run.get("conf"),
        start_date=run.get("start_date"),
        end_date=run.get("end_date"),
        tasks=[
            TaskState(
                task_id=task["task_id"],
                map_index=task.get("map_index", -1),
                state=task.get("state"),
            )
            for task in tasks.get("task_instances", [])
        ],
    )
