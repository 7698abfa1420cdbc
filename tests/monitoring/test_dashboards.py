"""The real steps on small synthetic data push their metrics; every dashboard panel shows them.

The `rakuten` CLI runs the pipeline (ingest to predict-batch, a second version gated against
the champion, promoted, then rolled back) with RAKUTEN_PUSHGATEWAY_URL on a real Pushgateway;
a real Prometheus scrapes it every second. Then every panel query of every Grafana dashboard
that reads these metrics runs through Prometheus's HTTP API, its template variables given real
values, and must return data.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from src.cli.main import app
from src.config import get_settings
from tests.monitoring.conftest import Prometheus

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DASHBOARDS = Path(__file__).resolve().parents[2] / "monitoring" / "grafana" / "dashboards"
# The dashboards of the pushed metrics (rakuten-pipeline.json shows Airflow's statsd metrics and
# rakuten-api.json the API's: tests/test_deployment.py checks those).
PUSHED = ("rakuten-steps.json", "rakuten-model-quality.json", "rakuten-data-quality.json")
PARAMS = {
    "synthetic": {"rows": 300, "test_rows": 40, "images": True, "image_size": 32, "seed": 5},
    "train": {"branches": ["text_tfidf"], "seed": 0},
    "text_tfidf": {"trials": 0, "max_features": 2000, "n_jobs": 1},
    "fusion": {"weight_step": 0.5},
    "gate": {"min_weighted_f1": 0.05, "per_class_f1_floor": 0.0, "bootstrap_samples": 100},
}
RANGE_SECONDS = 3600


def _rakuten(*arguments: str) -> dict[str, Any]:
    """Run `rakuten ARGUMENTS` as the CLI does; its JSON summary."""
    result = CliRunner().invoke(app, list(arguments))
    assert result.exit_code == 0, (arguments, result.output, result.exception)
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


@pytest.fixture(scope="module")
def pipeline(
    prometheus: Prometheus,
    pushgateway: str,
    mlflow_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """The steps run once on synthetic data, their metrics pushed; the run's root folder."""
    root = tmp_path_factory.mktemp("monitored-run")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "mlflow").mkdir()
    (root / "mlflow" / "mlflow.db").write_bytes(mlflow_template.read_bytes())
    settings = {
        "RAKUTEN_DATA_SOURCE": "synthetic",
        "RAKUTEN_DATA_ROOT": str(root / "data"),
        "RAKUTEN_MODELS_DIR": str(root / "models"),
        "RAKUTEN_REPORTS_DIR": str(root / "reports"),
        "RAKUTEN_PARAMS_FILE": str(root / "params.yaml"),
        "RAKUTEN_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        "RAKUTEN_DATABASE_URL": f"sqlite:///{root / 'predictions.db'}",
        "RAKUTEN_PUSHGATEWAY_URL": pushgateway,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        raw = str(root / "data" / "raw")
        _rakuten("db", "upgrade")
        _rakuten("params", "write", "--out", str(root / "run-params.yaml"))
        _rakuten("data", "ingest")
        _rakuten("data", "validate", raw)
        _rakuten("data", "make-dataset", raw, str(root / "data" / "processed"))
        _rakuten("train", "--branch", "text_tfidf")
        _rakuten("fuse")
        _rakuten("evaluate")
        _rakuten("model", "register")
        _rakuten("model", "validate")
        _rakuten("model", "promote", "--auto")
        _rakuten("predict-batch", "--date", "2026-01-02")
        # A second version, gated against the champion (the F1 difference and its bounds),
        # promoted, then rolled back.
        _rakuten("model", "register")
        _rakuten("model", "validate")
        _rakuten("model", "promote", "--auto")
        _rakuten("model", "rollback", "--reason", "test")
        # A step that fails: the X file of the snapshot lacks `designation`.
        x_train = Path(raw) / "X_train_update.csv"
        pd.read_csv(x_train, index_col=0).drop(columns=["designation"]).to_csv(x_train)
        failed = CliRunner().invoke(app, ["data", "validate", raw])
        assert failed.exit_code != 0
    get_settings.cache_clear()
    prometheus.wait_for('rakuten_step_last_failure_timestamp_seconds{step="validate"}')
    yield root


def _variables(dashboard: dict[str, Any], prometheus: Prometheus) -> dict[str, str]:
    """A value for each template variable, as the dashboard opens: All, or the first value."""
    values = {
        "$__range_s": str(RANGE_SECONDS),
        "$__range": f"{RANGE_SECONDS}s",
        "$__rate_interval": "1m",
        "$__interval": "15s",
    }
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
        assert match, variable
        metric, label = match.groups()
        found = prometheus.api(f"label/{label}/values", **{"match[]": metric})
        assert found, f"no value of ${variable['name']}"
        # The dashboard opens on "All" where it offers it, else on the first value.
        values[f"${variable['name']}"] = (
            variable["allValue"] if variable["includeAll"] else found[0]
        )
    return values


def _panels(name: str) -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads((DASHBOARDS / name).read_text())
    return [
        (f"{name}: {panel['title']}", panel) for panel in dashboard["panels"] if "targets" in panel
    ]


@pytest.mark.parametrize("name", PUSHED)
def test_every_panel_of_the_dashboards_shows_data(
    name: str, pipeline: Path, prometheus: Prometheus
) -> None:
    dashboard = json.loads((DASHBOARDS / name).read_text())
    values = _variables(dashboard, prometheus)
    # The variable values are substituted longest first ($__range_s before $__range).
    names = sorted(values, key=len, reverse=True)
    empty = []
    for title, panel in _panels(name):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable in names:
                expr = expr.replace(variable, values[variable])
            assert "$" not in expr, f"{title}: unknown variable in {expr}"
            result = (
                prometheus.query(expr) if target.get("instant") else prometheus.query_range(expr)
            )
            if not result:
                empty.append(f"{title}: {expr}")
    assert empty == []


def test_every_step_of_the_run_has_its_last_success(pipeline: Path, prometheus: Prometheus) -> None:
    series = prometheus.query("rakuten_step_last_success_timestamp_seconds")
    steps = {s["metric"]["step"] for s in series}
    assert {
        "configure",
        "ingest",
        "validate",
        "make_dataset",
        "train",
        "fuse",
        "evaluate",
        "register",
        "gate",
        "promote",
        "rollback",
        "predict_batch",
    } <= steps
    # Its `train --branch text_tfidf` is grouped by its branches; the session's Pushgateway also
    # holds the groups of other tests' runs (`train` of all branches, for one).
    trains = {s["metric"]["branch"] for s in series if s["metric"]["step"] == "train"}
    assert "text_tfidf" in trains
    assert {s["metric"]["job"] for s in series} == {"rakuten"}


def test_the_step_metrics_say_what_the_steps_did(pipeline: Path, prometheus: Prometheus) -> None:
    def value(expr: str) -> float:
        (sample,) = prometheus.query(expr)
        return float(sample["value"][1])

    assert (
        value('rakuten_step_output_rows{step="make_dataset"}') == PARAMS["synthetic"]["rows"] + 40
    )
    assert value('rakuten_batch_predictions{alias="champion"}') == 40
    shares = prometheus.query('sum(rakuten_batch_predicted_type_ratio{alias="champion"})')
    assert float(shares[0]["value"][1]) == pytest.approx(1.0)
    assert len(prometheus.query("rakuten_evaluation_class_f1_ratio")) == 27
    assert value('rakuten_gate_passed{version="2"}') == 1
    assert {
        s["metric"]["bound"] for s in prometheus.query("rakuten_gate_weighted_f1_difference_ratio")
    } == {
        "estimate",
        "low",
        "high",
    }
    champion = (
        "rakuten_model_champion_version"
        " and on (step) topk(1, rakuten_model_champion_moved_timestamp_seconds)"
    )
    assert value(champion) == 1  # promoted to 2, then rolled back to 1


def test_a_failed_step_pushes_its_failure_and_no_new_success(
    pipeline: Path, prometheus: Prometheus
) -> None:
    failure = prometheus.query('rakuten_step_last_failure_timestamp_seconds{step="validate"}')
    success = prometheus.query('rakuten_step_last_success_timestamp_seconds{step="validate"}')
    assert float(failure[0]["value"][1]) > float(success[0]["value"][1])
    # The alert rule sees it (pending: it waits 30 minutes before firing) at its next evaluation,
    # which can come a few seconds after the scrape on a busy machine.
    deadline = time.monotonic() + 60
    while True:
        alerts = prometheus.api("alerts")["alerts"]
        if any(
            a["labels"]["alertname"] == "RakutenStepFailed" and a["labels"]["step"] == "validate"
            for a in alerts
        ):
            break
        assert time.monotonic() < deadline, alerts
        time.sleep(1)
