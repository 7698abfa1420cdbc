"""The closed loop's steps on the real store (SQLite and PostgreSQL), a real MLflow registry and
a real Pushgateway: drift of a day's batch, realised performance from late labels, retraining."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from src.cli.main import app
from src.config import Params, get_settings
from src.db.engine import make_engine
from src.db.models import DriftReport, LateLabel, RealisedPerformance
from src.db.store import ModelRef, store_batch
from src.models.packaged import MODEL_NAME
from src.models.profile import PROFILE_FILE
from src.monitoring.loop import drift, performance, retrain_decision, retrain_run_id
from src.monitoring.push import monitored
from src.registry.tracking import experiment_id
from tests.monitoring.conftest import Prometheus
from tests.monitoring.listings import listings, profile_of, skewed_shares

SAME_DAY = date(2026, 5, 1)
SHIFTED_DAY = date(2026, 5, 2)
LATER_SHIFTED_DAY = date(2026, 5, 3)
PARAMS = Params()


def pushed(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return str(response.read().decode())


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of a pushed series of job="rakuten" with these labels (others may be there)."""
    wanted = [f'{key}="{value}"' for key, value in {"job": "rakuten", **labels}.items()]
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{") and all(label in line for label in wanted):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not pushed")


@pytest.fixture
def pushing(pushgateway: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """RAKUTEN_PUSHGATEWAY_URL set to the real Pushgateway, as for a step under Airflow."""
    monkeypatch.setenv("RAKUTEN_PUSHGATEWAY_URL", pushgateway)
    get_settings.cache_clear()
    yield pushgateway
    get_settings.cache_clear()


def as_step(step: str, work: Callable[[], dict], **grouping: str) -> dict:
    """Run a loop step as `rakuten monitor` does: inside `monitored`, its summary pushed."""
    with monitored(step, **grouping) as run:
        summary = work()
        run.summary(summary)
    return summary


def register_with_profile(client: MlflowClient, profile: dict, workdir: Path) -> ModelRef:
    """A registered version @champion whose logged model holds `profile` as its artifact."""
    experiment = experiment_id(client)
    run_id = client.create_run(experiment).info.run_id
    model = client.create_logged_model(experiment, name="model", source_run_id=run_id)
    workdir.mkdir()
    (workdir / PROFILE_FILE).write_text(json.dumps(profile))
    client.log_model_artifacts(model.model_id, str(workdir))
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(
        MODEL_NAME, source=f"models:/{model.model_id}", run_id=run_id, model_id=model.model_id
    ).version
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    return ModelRef(MODEL_NAME, str(version), "champion", run_id)


def store_day(engine: Engine, model: ModelRef, day: date, frame: pd.DataFrame) -> None:
    store_batch(
        engine,
        frame.drop(columns="has_photo").assign(
            top3=lambda f: [[{"prdtypecode": int(c)}] for c in f["prdtypecode"]]
        ),
        model=model,
        dataset_version="raw-v1",
        logical_date=day,
    )


def write_photos(frame: pd.DataFrame, images: Path) -> None:
    images.mkdir(parents=True, exist_ok=True)
    for imageid, productid in frame.loc[frame["has_photo"], ["imageid", "productid"]].to_numpy():
        (images / f"image_{imageid}_product_{productid}.jpg").write_bytes(b"jpeg")


@pytest.fixture
def loop(store_url: str, embedded: MlflowClient, tmp_path: Path) -> Iterator[dict]:
    """The champion, its batches of a same-distribution day and of two shifted days."""
    engine = make_engine(store_url)
    model = register_with_profile(embedded, profile_of(listings(5000, seed=0)), tmp_path / "model")
    images = tmp_path / "incoming" / "images"
    same = listings(600, seed=1, first_productid=10_000)
    shifted = listings(600, 2, skewed_shares(3), 0.9, 0.8, first_productid=20_000)
    later = listings(600, 3, skewed_shares(2), 0.9, 0.8, first_productid=30_000)
    for day, frame in ((SAME_DAY, same), (SHIFTED_DAY, shifted), (LATER_SHIFTED_DAY, later)):
        store_day(engine, model, day, frame)
        write_photos(frame, images)
    yield {
        "engine": engine,
        "client": embedded,
        "model": model,
        "images": [images],
        "reports": tmp_path / "reports",
        "frames": {SAME_DAY: same, SHIFTED_DAY: shifted},
    }
    engine.dispose()
    # Each test starts from an empty loop history in the module's store.
    with engine.begin() as connection:
        for table in ("retrain_requests", "realised_performance", "late_labels", "drift_reports"):
            connection.exec_driver_sql(f"DELETE FROM {table}")
        for table in ("predictions", "prediction_batches", "products", "model_versions"):
            connection.exec_driver_sql(f"DELETE FROM {table}")


def _drift(loop: dict, day: date) -> dict:
    return as_step(
        "drift",
        lambda: drift(
            day,
            "champion",
            engine=loop["engine"],
            client=loop["client"],
            params=PARAMS,
            reports_dir=loop["reports"],
            image_dirs=loop["images"],
        ),
        alias="champion",
    )


def test_a_batch_like_the_reference_is_no_drift_and_a_shifted_one_is(
    loop: dict, pushing: str
) -> None:
    same = _drift(loop, SAME_DAY)
    assert same["verdict"] == "no_drift", same["reasons"]
    assert same["rows"] == 600 and same["version"] == loop["model"].version
    assert sample(pushed(pushing), "rakuten_drift_detected", step="drift") == 0
    assert sample(pushed(pushing), "rakuten_step_input_rows", step="drift") == 600

    shifted = _drift(loop, SHIFTED_DAY)
    assert shifted["verdict"] == "drift"
    assert shifted["rates"]["missing_photo"]["batch"] == pytest.approx(0.8, abs=0.06)
    report = json.loads((loop["reports"] / "drift" / "2026-05-02.json").read_text())
    assert report["verdict"] == "drift" and report["reasons"] == shifted["reasons"]
    metrics = pushed(pushing)
    assert sample(metrics, "rakuten_drift_detected", step="drift", alias="champion") == 1
    assert sample(metrics, "rakuten_drift_predicted_psi") == pytest.approx(shifted["predicted_psi"])
    assert sample(
        metrics, "rakuten_drift_input_ratio", feature="missing_photo", source="batch"
    ) == pytest.approx(shifted["rates"]["missing_photo"]["batch"])
    assert sample(metrics, "rakuten_drift_psi_threshold") == PARAMS.drift.psi_threshold

    _drift(loop, SHIFTED_DAY)  # a rerun of the day replaces its report
    with loop["engine"].connect() as connection:
        verdicts = connection.execute(
            select(DriftReport.logical_date, DriftReport.verdict).order_by(DriftReport.logical_date)
        ).all()
    assert verdicts == [(SAME_DAY, "no_drift"), (SHIFTED_DAY, "drift")]


def test_a_shifted_day_asks_for_one_retraining_within_the_cooldown(loop: dict) -> None:
    now = datetime.now(UTC)
    decide = {"engine": loop["engine"], "params": PARAMS, "now": now}
    _drift(loop, SAME_DAY)
    assert retrain_decision(SAME_DAY, "champion", **decide)["retrain"] is False

    _drift(loop, SHIFTED_DAY)
    first = retrain_decision(SHIFTED_DAY, "champion", **decide)
    assert first["retrain"] is True and first["reused"] is False
    assert first["dag_run_id"] == retrain_run_id(SHIFTED_DAY) == "retrain__2026-05-02"
    assert first["reason"].startswith("drift on 2026-05-02: predicted-type PSI")
    again = retrain_decision(SHIFTED_DAY, "champion", **decide)  # a retry or rerun of the day
    assert again == {**first, "reused": True}

    _drift(loop, LATER_SHIFTED_DAY)
    later = retrain_decision(LATER_SHIFTED_DAY, "champion", **decide)
    assert later["retrain"] is False and later["why"].startswith("cooldown")
    after_cooldown = {**decide, "now": now + timedelta(hours=PARAMS.drift.cooldown_hours + 1)}
    assert retrain_decision(LATER_SHIFTED_DAY, "champion", **after_cooldown)["retrain"] is True


def test_late_labels_give_the_realised_scores_per_day(
    loop: dict, tmp_path: Path, pushing: str
) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    same = loop["frames"][SAME_DAY]
    # Half of the same day's products are labelled with the predicted type, half with another.
    truth = same["prdtypecode"].where(same.index % 2 == 0, 10).iloc[:200]
    pd.DataFrame({"prdtypecode": truth, "productid": same["productid"].iloc[:200]}).to_csv(
        labels / "Y_late_2026-05-04.csv"
    )
    summary = as_step(
        "performance",
        lambda: performance(
            "champion", None, engine=loop["engine"], labels_dir=labels, params=PARAMS
        ),
        alias="champion",
    )
    assert summary["labels_arrived"] == {"Y_late_2026-05-04.csv": 200}
    [day] = summary["days"]
    right = int((truth == same["prdtypecode"].iloc[:200]).sum())
    assert day["labelled"] == 200 and day["accuracy"] == pytest.approx(right / 200)
    assert 0 < day["weighted_f1"] < 1
    metrics = pushed(pushing)
    assert sample(
        metrics, "rakuten_realised_f1_ratio", step="performance", average="weighted"
    ) == pytest.approx(day["weighted_f1"])
    assert sample(metrics, "rakuten_realised_accuracy_ratio") == pytest.approx(day["accuracy"])
    floor = sample(metrics, "rakuten_realised_weighted_f1_floor_ratio", step="performance")
    assert floor == PARAMS.gate.min_weighted_f1
    again = performance("champion", None, engine=loop["engine"], labels_dir=labels, params=PARAMS)
    assert again["labels_arrived"] == {"Y_late_2026-05-04.csv": 0}  # read again, stored once
    with loop["engine"].connect() as connection:
        assert connection.execute(select(func.count()).select_from(LateLabel)).scalar() == 200
        stored = connection.execute(select(RealisedPerformance.weighted_f1)).scalars().all()
    assert stored == [pytest.approx(day["weighted_f1"])]


def test_realised_f1_under_the_floor_asks_for_a_retraining(loop: dict, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    same = loop["frames"][SAME_DAY]
    wrong = same["prdtypecode"].map(lambda code: 10 if code != 10 else 40)  # every answer wrong
    pd.DataFrame({"prdtypecode": wrong, "productid": same["productid"]}).to_csv(labels / "y.csv")
    engine = loop["engine"]
    performance("champion", None, engine=engine, labels_dir=labels, params=PARAMS)
    _drift(loop, SAME_DAY)
    decision = retrain_decision(
        SAME_DAY, "champion", engine=engine, params=PARAMS, now=datetime.now(UTC)
    )
    assert decision["retrain"] is True
    assert "realised weighted F1 0.000 on 600 labelled products" in decision["reason"]


def test_cli_monitor_retrain_exits_99_when_nothing_asks_for_it(
    loop: dict, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", store_url)
    monkeypatch.delenv("RAKUTEN_PUSHGATEWAY_URL", raising=False)
    _drift(loop, SAME_DAY)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["monitor", "retrain", "--date", "2026-05-01"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 99, result.output
    assert json.loads(result.output.splitlines()[-1])["retrain"] is False


def test_a_batch_day_without_a_batch_is_a_clear_error(loop: dict) -> None:
    with pytest.raises(Exception, match="no complete batch of 2026-06-01 by the champion"):
        _drift(loop, date(2026, 6, 1))


DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring/grafana/dashboards/rakuten-drift.json"


def test_every_panel_of_the_drift_dashboard_has_data_in_a_real_prometheus(
    loop: dict, tmp_path: Path, pushing: str, prometheus: Prometheus
) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    same = loop["frames"][SAME_DAY]
    pd.DataFrame({"prdtypecode": same["prdtypecode"], "productid": same["productid"]}).to_csv(
        labels / "y.csv"
    )
    engine = loop["engine"]
    _drift(loop, SHIFTED_DAY)
    as_step(
        "performance",
        lambda: performance("champion", None, engine=engine, labels_dir=labels, params=PARAMS),
        alias="champion",
    )
    as_step(
        "retrain",
        lambda: retrain_decision(
            SHIFTED_DAY, "champion", engine=engine, params=PARAMS, now=datetime.now(UTC)
        ),
    )
    prometheus.wait_for('rakuten_retrain_requests{step="retrain"} > 0', timeout=60)
    panels = json.loads(DASHBOARD.read_text())["panels"]
    empty = [
        (panel["title"], target["expr"])
        for panel in panels
        for target in panel.get("targets", [])
        if not prometheus.query(target["expr"])
    ]
    assert not empty, f"panel queries without data: {empty}"
