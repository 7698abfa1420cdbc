"""What the step summaries become: the gate's rejections in a row, read from the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from src.config import get_settings
from src.models.packaged import MODEL_NAME
from src.monitoring.metrics import METRICS, _rejected_in_a_row


@pytest.fixture
def registry(embedded: MlflowClient, embedded_uri: str) -> Iterator[MlflowClient]:
    """The embedded registry, which the settings point to, with the model registered."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAKUTEN_MLFLOW_TRACKING_URI", embedded_uri)
        get_settings.cache_clear()
        embedded.create_registered_model(MODEL_NAME)
        yield embedded
    get_settings.cache_clear()


def _gated(client: MlflowClient, source: Path, *decisions: str | None) -> None:
    """New versions, oldest first, with their gate decision (None: never gated)."""
    for decision in decisions:
        version = client.create_model_version(MODEL_NAME, source=source.as_uri())
        if decision is not None:
            client.set_model_version_tag(MODEL_NAME, version.version, "gate.decision", decision)


def test_rejections_in_a_row_count_failed_versions_since_the_last_pass(
    registry: MlflowClient, tmp_path: Path
) -> None:
    assert _rejected_in_a_row() == 0
    _gated(registry, tmp_path, "failed", "passed", "failed", None, "failed")
    assert _rejected_in_a_row() == 2  # the ungated version neither counts nor breaks the run
    _gated(registry, tmp_path, "failed")
    assert _rejected_in_a_row() == 3
    _gated(registry, tmp_path, "passed")
    assert _rejected_in_a_row() == 0


def test_metric_names_follow_prometheus_conventions_and_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "monitoring.md").read_text()
    for metric in METRICS:
        assert metric.name.startswith("rakuten_"), metric.name
        assert not metric.name.endswith("_total"), f"{metric.name}: a gauge, not a counter"
        assert f"`{metric.name}`" in doc, f"docs/monitoring.md does not describe {metric.name}"
