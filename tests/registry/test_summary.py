"""The summary at the end of a pipeline run: read from what the steps wrote, each part said."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from src.cli.main import app
from src.config import get_settings
from src.db.engine import make_engine
from src.db.migrate import upgrade
from src.models.batch_predict import predict_batch
from src.models.fusion import FUSION_FILE
from src.models.packaged import fused_model_dir
from src.models.train import PACKAGED_DIR
from src.registry.lifecycle import CHANGES_FILE, model_ref
from src.registry.summary import render, run_summary
from src.registry.tracking import tracking_client
from tests.trained_registry import TEXT_PARAMS, Registry, trained_registry

DAY = date(2026, 1, 2)


@dataclass(frozen=True)
class Pipeline:
    """A pipeline that ran: a registry with @champion 1 and @challenger 2, a batch in a store."""

    registry: Registry
    store_url: str
    predictions_dir: Path

    def client(self) -> MlflowClient:
        return tracking_client(self.registry.uri)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("pipeline")
    registry = trained_registry(root, TEXT_PARAMS, versions=2)
    store_url = f"sqlite:///{root / 'predictions.db'}"
    upgrade(store_url)
    predict_batch(
        DAY,
        model=model_ref(tracking_client(registry.uri), "champion"),
        raw_dir=registry.paths.raw_dir,
        incoming_dir=None,
        predictions_dir=registry.paths.raw_dir.parent / "predictions",
        engine=make_engine(store_url),
        tracking_uri=registry.uri,
    )
    return Pipeline(registry, store_url, registry.paths.raw_dir.parent / "predictions")


@pytest.fixture
def settings_from_env() -> Iterator[None]:
    """Settings read afresh from the environment a CLI call is given."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _summary(pipeline: Pipeline) -> dict[str, object]:
    paths = pipeline.registry.paths
    return run_summary(
        pipeline.client(),
        make_engine(pipeline.store_url),
        reports_dir=paths.reports_dir,
        models_dir=paths.models_dir,
        predictions_dir=pipeline.predictions_dir,
    )


@pytest.mark.slow
def test_the_summary_tells_scores_fusion_gate_champion_and_where_the_predictions_are(
    pipeline: Pipeline,
) -> None:
    paths = pipeline.registry.paths
    summary = _summary(pipeline)

    metrics = json.loads((paths.reports_dir / "metrics.json").read_text())
    assert summary["scores"] == {
        name: {key: scores[key] for key in ("weighted_f1", "macro_f1", "accuracy", "coverage")}
        for name, scores in metrics.items()
    }
    assert set(metrics) == {"text_tfidf", "fused"}
    fusion = json.loads(
        (fused_model_dir(paths.models_dir / PACKAGED_DIR) / FUSION_FILE).read_text()
    )
    assert summary["fusion_weights"] == fusion["weights"]
    gate = json.loads((paths.reports_dir / "gate.json").read_text())
    assert summary["gate"]["decision"] == gate["decision"] == "passed"  # type: ignore[index]
    assert (summary["champion"], summary["challenger"]) == ("1", "2")
    batch = summary["predictions"]["batch"]  # type: ignore[index]
    test_rows = TEXT_PARAMS["synthetic"]["test_rows"]
    assert (batch["version"], batch["logical_date"], batch["predictions"]) == (
        "1",
        "2026-01-02",
        test_rows,
    )
    assert len(pd.read_parquet(batch["parquet"])) == test_rows

    text = "\n".join(render(summary))
    gated_f1 = gate["challenger"]["all"]["weighted_f1"]
    assert (
        f"Gate: version 1 passed against no champion (floors only), weighted F1 {gated_f1:.4f}"
        in text
    )
    assert "@champion = version 1, @challenger = version 2" in text
    assert f"{test_rows} rows in sqlite:///" in text and batch["parquet"] in text
    fused = metrics["fused"]["weighted_f1"]
    assert any(line.split()[:2] == ["fused", f"{fused:.4f}"] for line in text.splitlines())
    for command in ("make mlflow", "make airflow", "make serve"):
        assert command in text


def test_before_any_run_each_part_says_which_step_writes_it(
    embedded: MlflowClient, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    upgrade(store_url)
    summary = run_summary(
        embedded,
        make_engine(store_url),
        reports_dir=tmp_path / "reports",
        models_dir=tmp_path / "models",
        predictions_dir=tmp_path / "predictions",
    )
    text = "\n".join(render(summary))
    for step in (
        "rakuten model changes",
        "rakuten evaluate",
        "rakuten fuse",
        "rakuten model validate",
    ):
        assert f"(written by `{step}`)" in text
    assert "@champion = not set" in text
    assert "Predictions: no batch in sqlite:///" in text


@pytest.mark.slow
def test_an_unchanged_run_is_summed_up_as_a_skip_that_says_why(
    pipeline: Pipeline, settings_from_env: None
) -> None:
    paths = pipeline.registry.paths
    environment = {
        "RAKUTEN_MLFLOW_TRACKING_URI": pipeline.registry.uri,
        "RAKUTEN_PARAMS_FILE": str(pipeline.registry.params_file),
        "RAKUTEN_DATA_ROOT": str(paths.raw_dir.parent),
        "RAKUTEN_REPORTS_DIR": str(paths.reports_dir),
        "RAKUTEN_MODELS_DIR": str(paths.models_dir),
        "RAKUTEN_DATABASE_URL": pipeline.store_url,
    }
    checked = CliRunner().invoke(app, ["model", "changes"], env=environment)
    assert checked.exit_code == 99, checked.output
    written = json.loads((paths.reports_dir / CHANGES_FILE).read_text())
    assert written["train"] is False and "unchanged: training skipped" in written["reason"]

    summed = CliRunner().invoke(app, ["run", "summary"], env=environment)
    assert summed.exit_code == 0, summed.output
    assert f"Training: skipped: {written['reason']}" in summed.output
    assert "those of that earlier run" in summed.output
    as_json = CliRunner().invoke(app, ["run", "summary", "--json"], env=environment)
    assert json.loads(as_json.stdout)["changes"]["train"] is False
