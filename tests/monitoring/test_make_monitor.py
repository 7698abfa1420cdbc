"""`make monitor`, then the training DAG as `make run` runs it: every step's success in Prometheus.

`make monitor` starts Debian's Prometheus and Pushgateway (on free ports here, through the
target's port variables); `make run` hands the tasks the Pushgateway's URL while it answers; the
training DAG then runs in process (`airflow dags test`, what `make run` does) on small synthetic
data, and Prometheus must hold a last-success series of every step of the DAG.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from src.db.migrate import upgrade
from tests.dags.conftest import AIRFLOW_BIN, airflow_environment, run_airflow
from tests.servers import free_port, healthy, started

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {
    "synthetic": {"rows": 300, "test_rows": 40, "images": True, "image_size": 32, "seed": 3},
    "train": {"branches": ["text_tfidf"], "seed": 0},
    "text_tfidf": {"trials": 0, "max_features": 2000, "n_jobs": 1},
    "fusion": {"weight_step": 0.5},
    "gate": {"min_weighted_f1": 0.05, "per_class_f1_floor": 0.0, "bootstrap_samples": 100},
}
# The training DAG's tasks and the step each one's command pushes as.
TRAINING_STEPS = {
    "configure": "configure",
    "ingest": "ingest",
    "validate": "validate",
    "make_dataset": "make_dataset",
    "changes": "changes",
    "train_cpu": "train",
    "fuse": "fuse",
    "evaluate": "evaluate",
    "register": "register",
    "gate": "gate",
    "promote": "promote",
    "batch_predict": "predict_batch",
}


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MAKE"))}


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`make monitor` running: Prometheus's URL and the Pushgateway's port."""
    for binary in ("prometheus", "prometheus-pushgateway", "make"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed")
    root = tmp_path_factory.mktemp("monitor")
    prometheus_port, gateway_port = free_port(), free_port()
    command = [
        "make",
        "--no-print-directory",
        "monitor",
        f"MONITOR_DIR={root}",
        f"PROMETHEUS_PORT={prometheus_port}",
        f"PUSHGATEWAY_PORT={gateway_port}",
    ]
    with started(command, root / "make-monitor.log", _environment()) as process:
        prometheus = f"http://127.0.0.1:{prometheus_port}"
        deadline = time.monotonic() + 120
        while not (
            healthy(prometheus, "/-/ready")
            and healthy(f"http://127.0.0.1:{gateway_port}", "/-/ready")
        ):
            log = (root / "make-monitor.log").read_text(errors="replace")
            assert process.poll() is None and time.monotonic() < deadline, log[-3000:]
            time.sleep(0.5)
        log = (root / "make-monitor.log").read_text()
        assert f"Prometheus UI: {prometheus}" in log
        assert f"Pushgateway UI: http://127.0.0.1:{gateway_port}" in log
        yield prometheus, gateway_port


def test_make_run_pushes_to_the_running_monitor(monitor: tuple[str, int]) -> None:
    _, gateway_port = monitor
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", f"PUSHGATEWAY_PORT={gateway_port}"],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    gateway = f"http://127.0.0.1:{gateway_port}"
    assert f"RAKUTEN_PUSHGATEWAY_URL=${{RAKUTEN_PUSHGATEWAY_URL:-{gateway}}}" in dry_run


def _query(prometheus: str, expr: str) -> list[dict[str, object]]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        result: list[dict[str, object]] = json.load(answer)["data"]["result"]
        return result


def test_after_a_training_run_every_step_has_its_last_success(
    monitor: tuple[str, int], tmp_path: Path, mlflow_template: Path
) -> None:
    if not (AIRFLOW_BIN / "airflow").is_file():
        pytest.skip("no Airflow environment: run `make airflow-env`")
    prometheus, gateway_port = monitor
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (tmp_path / "mlflow.db").write_bytes(mlflow_template.read_bytes())
    store = f"sqlite:///{tmp_path / 'predictions.db'}"
    upgrade(store)
    settings = {
        "RAKUTEN_DATA_SOURCE": "synthetic",
        "RAKUTEN_DATA_ROOT": str(tmp_path / "data"),
        "RAKUTEN_MODELS_DIR": str(tmp_path / "models"),
        "RAKUTEN_REPORTS_DIR": str(tmp_path / "reports"),
        "RAKUTEN_PARAMS_FILE": str(tmp_path / "params.yaml"),
        "RAKUTEN_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RAKUTEN_DATABASE_URL": store,
        # What `make run` hands the tasks while `make monitor` runs (checked above).
        "RAKUTEN_PUSHGATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
    }
    environment = airflow_environment(tmp_path / "airflow", settings)
    migrated = run_airflow(environment, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    ran = run_airflow(environment, "dags", "test", "rakuten_training", timeout=2400)
    assert ran.returncode == 0, ran.stdout[-6000:]
    expr = 'rakuten_step_last_success_timestamp_seconds{dag_id="rakuten_training"}'
    deadline = time.monotonic() + 60
    while True:
        found = {
            (str(s["metric"]["task_id"]), str(s["metric"]["step"]))  # type: ignore[index]
            for s in _query(prometheus, expr)
        }
        if set(TRAINING_STEPS.items()) <= found or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(TRAINING_STEPS.items()) <= found, sorted(found)
