"""The lifecycle end to end over HTTP, against a running `airflow standalone` and a real MLflow
server: an admin uploads a training and a validation dataset, triggers rakuten_training through
the API (which calls Airflow's REST API), follows the run to success (its ingest adds the training
upload to the catalogue), gates the version it registered on the pinned test split plus the
validation upload, and promotes it. Airflow down is a 503 with the reason."""

from __future__ import annotations

import io
import json
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from src.config import Settings
from src.data.ingest import read_manifest
from src.data.layout import TRAIN_IMAGE_DIR, X_TRAIN_FILE, Y_TRAIN_FILE
from src.data.synth import synthesize
from src.db.migrate import upgrade
from src.serving.app import create_app
from tests.dags.conftest import airflow_bin, airflow_environment, run_airflow
from tests.servers import Server, free_port, healthy, stop
from tests.serving.conftest import API_KEY_SECRET, new_key

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
__all__ = ["airflow_bin"]  # the fixture of tests/dags, used here too
# Standalone migrates, then starts five processes: minutes on a busy 2-core machine.
STANDALONE_START_SECONDS = 600

PARAMS = {
    "synthetic": {"rows": 300, "test_rows": 40, "images": True, "image_size": 32, "seed": 13},
    "train": {"branches": ["text_tfidf"], "seed": 0},
    "text_tfidf": {"trials": 0, "max_features": 5000, "n_jobs": 1},
    "fusion": {"weight_step": 0.5},
    "gate": {
        "min_weighted_f1": 0.0,
        "tolerance": 1.0,
        "per_class_f1_floor": 0.0,
        "bootstrap_samples": 200,
    },
    # The pipeline gates but leaves the promotion to a person: here, through the API.
    "promote": {"approval": "manual"},
}


@dataclass(frozen=True)
class Stack:
    """The embedded deployment: Airflow standalone's URL and password, and the API's settings."""

    airflow: Server
    settings: Settings
    root: Path


@pytest.fixture(scope="module")
def stack(
    airflow_bin: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """`airflow standalone` (its API on a free port) on the project's DAGs, a real MLflow server
    and a SQLite store. (A session-wide standalone fixture in tests/dags/conftest.py can replace
    this one: it needs the same RAKUTEN_* settings.)"""
    root = tmp_path_factory.mktemp("training-runs")
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(PARAMS))
    store = f"sqlite:///{root / 'predictions.db'}"
    upgrade(store)
    rakuten = {
        "RAKUTEN_DATA_SOURCE": "synthetic",
        "RAKUTEN_DATA_ROOT": str(root / "data"),
        "RAKUTEN_INCOMING_DIR": str(root / "incoming"),
        "RAKUTEN_MODELS_DIR": str(root / "models"),
        "RAKUTEN_REPORTS_DIR": str(root / "reports"),
        "RAKUTEN_PARAMS_FILE": str(params_file),
        "RAKUTEN_MLFLOW_TRACKING_URI": mlflow_server,
        "RAKUTEN_DATABASE_URL": store,
    }
    port = free_port()
    environment = {
        **airflow_environment(root / "airflow", rakuten),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # Only the run the test triggers: unpausing would also start the nightly's latest run,
        # and max_active_runs=1 would queue the test's run behind it.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    migrated = run_airflow(environment, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    log = root / "standalone.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(airflow_bin / "airflow"), "standalone"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STANDALONE_START_SECONDS
        while not healthy(server, "/api/v2/monitor/health"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        passwords = root / "airflow" / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + 120
        while not passwords.is_file():
            assert time.monotonic() < deadline, "standalone wrote no password"
            time.sleep(1)
        settings = Settings(
            mlflow_tracking_uri=mlflow_server,
            database_url=store,
            api_key_secret=SecretStr(API_KEY_SECRET),
            data_root=root / "data",
            models_dir=root / "models",
            reports_dir=root / "reports",
            params_file=params_file,
            incoming_dir=root / "incoming",
            airflow_api_url=server,
            airflow_password=SecretStr(json.loads(passwords.read_text())["admin"]),
        )
        yield Stack(Server(process, server, log), settings, root)
    finally:
        stop(process)


def _upload(root: Path, seed: int) -> dict[str, Any]:
    """A labelled synthetic catalogue of another seed, as a person uploads it."""
    synthetic = root / f"upload-{seed}"
    synthesize(synthetic, rows=80, test_rows=0, image_size=32, seed=seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in (synthetic / TRAIN_IMAGE_DIR).iterdir():
            archive.write(photo, f"image_train/{photo.name}")
    return {
        "x_file": ("X.csv", (synthetic / X_TRAIN_FILE).read_bytes()),
        "y_file": ("Y.csv", (synthetic / Y_TRAIN_FILE).read_bytes()),
        "photos": ("photos.zip", buffer.getvalue()),
    }


def _until(client: TestClient, path: str, done: tuple[str, ...], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        answer = client.get(path)
        if answer.status_code == 503 and "timed out" in answer.text:  # a busy Airflow: ask again
            assert time.monotonic() < deadline, answer.text
            continue
        assert answer.status_code == 200, answer.text
        state = answer.json()
        if (state.get("state") or state.get("status")) in done:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(3)


def test_upload_train_validate_promote_over_http(stack: Stack) -> None:
    store = stack.settings.database_url
    with TestClient(create_app(stack.settings)) as client:
        client.headers["X-API-Key"] = new_key(store, "admin", "data team")
        uploaded = client.post(
            "/datasets", data={"purpose": "validation"}, files=_upload(stack.root, 99)
        )
        assert uploaded.status_code == 201, uploaded.text
        dataset = uploaded.json()
        more = client.post("/datasets", data={"purpose": "training"}, files=_upload(stack.root, 98))
        assert more.status_code == 201, more.text

        unknown = client.post("/training-runs", json={"conf": {"colour": "red"}})
        assert unknown.status_code == 422 and "colour" in unknown.json()["detail"]
        refused = client.post("/training-runs", json={"conf": {"promotion": "sometimes"}})
        assert refused.status_code == 422 and "Airflow answered" in refused.json()["detail"]

        # An operator unpauses the DAG once (DAGs start paused); the API only triggers runs.
        airflow = client.app.state.airflow  # type: ignore[attr-defined]
        airflow.call("PATCH", "/api/v2/dags/rakuten_training", {"is_paused": False})
        started = client.post("/training-runs", json={"conf": {"force": True}})
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]

        run = _until(client, f"/training-runs/{run_id}", ("success", "failed"), 1200)
        assert run["state"] == "success", (run, stack.airflow.log.read_text()[-5000:])
        states = {task["task_id"]: task["state"] for task in run["tasks"]}
        assert states and set(states.values()) <= {"success", "skipped"}, states
        assert client.get("/training-runs/no-such-run").status_code == 404

        versions = client.get("/models").json()
        (registered,) = [v for v in versions if v["lineage"].get("airflow_dag_run_id") == run_id]
        version = registered["version"]
        # The run's ingest added the training upload; the version trained on that snapshot.
        raw = read_manifest(stack.settings.data_root / "raw")
        assert [d["sha256"] for d in raw["source"]["datasets"]] == [more.json()["sha256"]]
        assert registered["lineage"]["data_version"] == raw["version"]
        assert registered["approval"] == "awaiting"  # the pipeline left it to a person

        job = client.post(f"/models/{version}/validate", json={"dataset_id": dataset["id"]})
        assert job.status_code == 202, job.text
        finished = _until(client, f"/jobs/{job.json()['id']}", ("succeeded", "failed"), 600)
        assert finished["status"] == "succeeded", finished
        assert finished["result"]["rows"]["supplied"] == dataset["rows"]

        promoted = client.post(f"/models/{version}/promote")
        assert promoted.status_code == 200 and promoted.json()["promoted"] is True, promoted.text
        assert "champion" in client.get("/models").json()[0]["aliases"]


def test_airflow_unreachable_is_a_503_with_the_reason(stack: Stack) -> None:
    nowhere = stack.settings.model_copy(
        update={"airflow_api_url": f"http://127.0.0.1:{free_port()}"}
    )
    with TestClient(create_app(nowhere)) as client:
        client.headers["X-API-Key"] = new_key(stack.settings.database_url, "admin")
        answer = client.post("/training-runs", json={})
        assert answer.status_code == 503 and "cannot be reached" in answer.json()["detail"]
        assert client.get("/training-runs/x").status_code == 503
    wrong = stack.settings.model_copy(update={"airflow_password": SecretStr("wrong")})
    with TestClient(create_app(wrong)) as client:
        client.headers["X-API-Key"] = new_key(stack.settings.database_url, "admin")
        answer = client.post("/training-runs", json={})
        assert answer.status_code == 503 and "Airflow answered 401" in answer.json()["detail"]
