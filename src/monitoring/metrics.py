"""The metrics of the pipeline steps: their names, and how a step's summary becomes metrics.

Every metric is a gauge: a batch job pushes the state of its last run, which the Pushgateway keeps
until the next run of the same step replaces it. Each sample carries `dag_id` and `task_id` (empty,
so absent in Prometheus, outside Airflow); docs/monitoring.md lists them all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Gauge

logger = logging.getLogger(__name__)

CONTEXT_LABELS: Final = ("dag_id", "task_id")
# Where Airflow's BashOperator puts the task's identity in its subprocess's environment.
AIRFLOW_CONTEXT: Final = {"dag_id": "AIRFLOW_CTX_DAG_ID", "task_id": "AIRFLOW_CTX_TASK_ID"}


@dataclass(frozen=True)
class Metric:
    """A metric's name, help text and own labels (beside dag_id and task_id)."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


STEP_DURATION: Final = Metric(
    "rakuten_step_duration_seconds", "Wall-clock time of the step's last run, whatever its outcome"
)
STEP_LAST_SUCCESS: Final = Metric(
    "rakuten_step_last_success_timestamp_seconds", "When the step last ended successfully"
)
STEP_LAST_FAILURE: Final = Metric(
    "rakuten_step_last_failure_timestamp_seconds", "When the step last failed"
)
STEP_LAST_SKIP: Final = Metric(
    "rakuten_step_last_skip_timestamp_seconds",
    "When the step last found nothing to do (exit 99, a skipped Airflow task)",
)
STEP_INPUT_ROWS: Final = Metric("rakuten_step_input_rows", "Rows the step's last run read")
STEP_OUTPUT_ROWS: Final = Metric("rakuten_step_output_rows", "Rows the step's last run wrote")
DATA_QUARANTINED: Final = Metric(
    "rakuten_data_quarantined_rows",
    "Rows set aside for breaking the data contract",
    ("data_version",),
)
DATA_PHOTOS: Final = Metric(
    "rakuten_data_photos",
    "Product photos by status (ok, missing, corrupt), for the labelled and unlabelled rows",
    ("data_version", "subset", "status"),
)
DATA_MISSING_DESCRIPTIONS: Final = Metric(
    "rakuten_data_descriptions_missing_rows",
    "Kept rows whose description is empty, for the labelled and unlabelled rows",
    ("data_version", "subset"),
)
EVALUATION_F1: Final = Metric(
    "rakuten_evaluation_f1_ratio",
    "F1 on the pinned test split, per branch and for the fused model, weighted or macro",
    ("branch", "average"),
)
EVALUATION_ACCURACY: Final = Metric(
    "rakuten_evaluation_accuracy_ratio", "Accuracy on the pinned test split", ("branch",)
)
EVALUATION_CLASS_F1: Final = Metric(
    "rakuten_evaluation_class_f1_ratio",
    "The fused model's F1 per product type on the pinned test split",
    ("prdtypecode",),
)
REGISTERED_VERSION: Final = Metric(
    "rakuten_model_registered_version", "The version number the last registration made"
)
REGISTERED_F1: Final = Metric(
    "rakuten_model_version_f1_ratio",
    "The registered version's F1 on the pinned test split, weighted or macro",
    ("version", "average"),
)
GATE_PASSED: Final = Metric(
    "rakuten_gate_passed",
    "1 when the gated version passed the gate, 0 when it failed",
    ("version",),
)
GATE_WEIGHTED_F1: Final = Metric(
    "rakuten_gate_weighted_f1_ratio", "The gated version's weighted F1 on the gate's rows"
)
GATE_FLOOR: Final = Metric(
    "rakuten_gate_weighted_f1_floor_ratio", "The gate's floor on weighted F1 (params.yaml gate)"
)
GATE_TOLERANCE: Final = Metric(
    "rakuten_gate_tolerance_ratio", "The largest weighted-F1 drop the gate allows (params.yaml)"
)
GATE_DIFFERENCE: Final = Metric(
    "rakuten_gate_weighted_f1_difference_ratio",
    "Weighted F1 of the gated version minus the champion's: the estimate and its bootstrap "
    "confidence bounds (bound: estimate, low, high); absent when there was no champion",
    ("bound",),
)
GATE_REJECTED_IN_A_ROW: Final = Metric(
    "rakuten_gate_rejected_in_a_row",
    "Gated versions that failed the gate since the last one that passed (from the registry)",
)
CHAMPION_VERSION: Final = Metric(
    "rakuten_model_champion_version", "The version @champion points to after the step moved it"
)
CHAMPION_MOVED: Final = Metric(
    "rakuten_model_champion_moved_timestamp_seconds", "When the step last moved @champion"
)
BATCH_PREDICTIONS: Final = Metric(
    "rakuten_batch_predictions", "Products scored into the last batch", ("version",)
)
BATCH_MEAN_PROBABILITY: Final = Metric(
    "rakuten_batch_probability_mean_ratio",
    "Mean probability of the predicted type over the last batch",
    ("version",),
)
BATCH_TYPE_SHARE: Final = Metric(
    "rakuten_batch_predicted_type_ratio",
    "Share of the last batch predicted as each product type",
    ("version", "prdtypecode"),
)
DRIFT_DETECTED: Final = Metric(
    "rakuten_drift_detected", "1 when the last checked batch drifted from its reference, else 0"
)
DRIFT_PREDICTED_PSI: Final = Metric(
    "rakuten_drift_predicted_psi",
    "Bias-corrected PSI of the last checked batch's predicted types against the reference",
)
DRIFT_PREDICTED_JS: Final = Metric(
    "rakuten_drift_predicted_js_distance",
    "Jensen-Shannon distance (base 2) of the last checked batch's predicted types",
)
DRIFT_PSI_THRESHOLD: Final = Metric(
    "rakuten_drift_psi_threshold", "The predicted-type PSI threshold (params.yaml drift)"
)
DRIFT_LENGTH_PSI: Final = Metric(
    "rakuten_drift_length_psi",
    "Bias-corrected PSI of the text lengths (feature: designation, description)",
    ("feature",),
)
DRIFT_INPUT_SHARE: Final = Metric(
    "rakuten_drift_input_ratio",
    "Share of listings with a missing description, a missing photo or HTML, in the batch and "
    "in the reference (source)",
    ("feature", "source"),
)
DRIFT_CONFIDENCE: Final = Metric(
    "rakuten_drift_confidence_mean_ratio",
    "Mean top probability over the batch, and on val for the reference (source)",
    ("source",),
)
REALISED_F1: Final = Metric(
    "rakuten_realised_f1_ratio",
    "The model's F1 on the late labels of its newest labelled batch day, weighted or macro",
    ("average",),
)
REALISED_ACCURACY: Final = Metric(
    "rakuten_realised_accuracy_ratio", "Accuracy on the same labelled products"
)
REALISED_LABELLED: Final = Metric(
    "rakuten_realised_labelled_products", "Labelled products behind the realised scores"
)
REALISED_FLOOR: Final = Metric(
    "rakuten_realised_weighted_f1_floor_ratio",
    "The floor of the realised weighted F1 (params.yaml gate.min_weighted_f1)",
)
RETRAIN_REQUESTS: Final = Metric(
    "rakuten_retrain_requests", "Retrainings the closed loop has asked for, in all"
)

METRICS: Final = (
    STEP_DURATION,
    STEP_LAST_SUCCESS,
    STEP_LAST_FAILURE,
    STEP_LAST_SKIP,
    STEP_INPUT_ROWS,
    STEP_OUTPUT_ROWS,
    DATA_QUARANTINED,
    DATA_PHOTOS,
    DATA_MISSING_DESCRIPTIONS,
    EVALUATION_F1,
    EVALUATION_ACCURACY,
    EVALUATION_CLASS_F1,
    REGISTERED_VERSION,
    REGISTERED_F1,
    GATE_PASSED,
    GATE_WEIGHTED_F1,
    GATE_FLOOR,
    GATE_TOLERANCE,
    GATE_DIFFERENCE,
    GATE_REJECTED_IN_A_ROW,
    CHAMPION_VERSION,
    CHAMPION_MOVED,
    BATCH_PREDICTIONS,
    BATCH_MEAN_PROBABILITY,
    BATCH_TYPE_SHARE,
    DRIFT_DETECTED,
    DRIFT_PREDICTED_PSI,
    DRIFT_PREDICTED_JS,
    DRIFT_PSI_THRESHOLD,
    DRIFT_LENGTH_PSI,
    DRIFT_INPUT_SHARE,
    DRIFT_CONFIDENCE,
    REALISED_F1,
    REALISED_ACCURACY,
    REALISED_LABELLED,
    REALISED_FLOOR,
    RETRAIN_REQUESTS,
)


class StepMetrics:
    """The metrics of one run of a step, gathered in their own registry to be pushed at its end.

    Only the metrics that were set are in the registry: a push replaces, in the step's group,
    exactly the metrics it carries, so a failed run leaves the last success in place.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.registry = CollectorRegistry()
        self._context = {label: environ.get(name, "") for label, name in AIRFLOW_CONTEXT.items()}
        self._gauges: dict[str, Gauge] = {}

    def set(self, metric: Metric, value: float, **labels: str) -> None:
        """Set `metric` (with its own `labels`) to `value`."""
        gauge = self._gauges.get(metric.name)
        if gauge is None:
            gauge = Gauge(
                metric.name,
                metric.help,
                [*CONTEXT_LABELS, *metric.labels],
                registry=self.registry,
            )
            self._gauges[metric.name] = gauge
        gauge.labels(**self._context, **labels).set(value)

    def names(self) -> frozenset[str]:
        """The names of the metrics set so far."""
        return frozenset(self._gauges)


Summary = Mapping[str, Any]


def _read_json(path: str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _data_version(summary: Summary) -> str:
    """The raw snapshot's version, shortened as git shortens commits: one series per version."""
    return str(summary["raw_version"])[:12]


def _data_quality(metrics: StepMetrics, summary: Summary) -> None:
    """Rows, quarantine and photos, from a `validate` or `make-dataset` summary."""
    version = _data_version(summary)
    metrics.set(DATA_QUARANTINED, summary["quarantined"], data_version=version)
    for subset, statuses in summary["images"].items():
        for status, count in statuses.items():
            metrics.set(DATA_PHOTOS, count, data_version=version, subset=subset, status=status)


def _validate(metrics: StepMetrics, summary: Summary) -> None:
    _data_quality(metrics, summary)
    kept = summary["labelled_rows"] + summary["unlabelled_rows"]
    metrics.set(STEP_INPUT_ROWS, kept + summary["quarantined"])
    metrics.set(STEP_OUTPUT_ROWS, kept)
    report = _read_json(summary["report"])
    for subset in ("labelled", "unlabelled"):
        missing = report[subset]["missing_description"]
        metrics.set(
            DATA_MISSING_DESCRIPTIONS, missing, data_version=_data_version(summary), subset=subset
        )


def _make_dataset(metrics: StepMetrics, summary: Summary) -> None:
    _data_quality(metrics, summary)
    written = sum(summary["rows"].values())
    metrics.set(STEP_INPUT_ROWS, written + summary["quarantined"])
    metrics.set(STEP_OUTPUT_ROWS, written)


def _train(metrics: StepMetrics, summary: Summary) -> None:
    branches = summary["branches"].values()
    metrics.set(STEP_INPUT_ROWS, max(b["train_rows"] + b["val_rows"] for b in branches))


def _evaluate(metrics: StepMetrics, summary: Summary) -> None:
    metrics.set(STEP_INPUT_ROWS, summary["rows"])
    for branch, scores in summary["scores"].items():
        for average in ("weighted", "macro"):
            metrics.set(EVALUATION_F1, scores[f"{average}_f1"], branch=branch, average=average)
        metrics.set(EVALUATION_ACCURACY, scores["accuracy"], branch=branch)
    per_class = _read_json(summary["report"])["fused"]["per_class"]
    for code, scores in per_class.items():
        metrics.set(EVALUATION_CLASS_F1, scores["f1"], prdtypecode=code)


def _register(metrics: StepMetrics, summary: Summary) -> None:
    version = str(summary["version"])
    metrics.set(REGISTERED_VERSION, int(version))
    for average in ("weighted", "macro"):
        value = summary["scores"][f"test_{average}_f1"]
        metrics.set(REGISTERED_F1, value, version=version, average=average)


def _gate(metrics: StepMetrics, summary: Summary) -> None:
    metrics.set(STEP_INPUT_ROWS, summary["rows"]["all"])
    metrics.set(GATE_PASSED, summary["decision"] == "passed", version=str(summary["version"]))
    metrics.set(GATE_WEIGHTED_F1, summary["weighted_f1"])
    thresholds = _read_json(summary["report"])["thresholds"]
    metrics.set(GATE_FLOOR, thresholds["min_weighted_f1"])
    metrics.set(GATE_TOLERANCE, thresholds["tolerance"])
    comparison = summary["comparison"] or {}
    bounds = {"estimate": "weighted_f1_difference", "low": "ci_low", "high": "ci_high"}
    for bound, key in bounds.items():
        if key in comparison:
            metrics.set(GATE_DIFFERENCE, comparison[key], bound=bound)
    metrics.set(GATE_REJECTED_IN_A_ROW, _rejected_in_a_row())


def _rejected_in_a_row() -> int:
    """How many gated versions, newest first, failed the gate before one that passed."""
    from src.config import get_settings
    from src.models.packaged import MODEL_NAME
    from src.registry.tracking import tracking_client

    client = tracking_client(get_settings().mlflow_tracking_uri)
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    rejected = 0
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        decision = version.tags.get("gate.decision")
        if decision == "passed":
            break
        rejected += decision == "failed"
    return rejected


def _champion_moved(metrics: StepMetrics, summary: Summary, now: float) -> None:
    metrics.set(CHAMPION_VERSION, int(summary["version"]))
    metrics.set(CHAMPION_MOVED, now)


def _promote(metrics: StepMetrics, summary: Summary, now: float) -> None:
    if summary.get("promoted"):
        _champion_moved(metrics, summary, now)


def _predict_batch(metrics: StepMetrics, summary: Summary) -> None:
    import pandas as pd

    version = str(summary["version"])
    metrics.set(STEP_INPUT_ROWS, summary["listings"])
    metrics.set(STEP_OUTPUT_ROWS, summary["predictions"])
    metrics.set(BATCH_PREDICTIONS, summary["predictions"], version=version)
    if not summary["predictions"]:
        return
    batch = pd.read_parquet(summary["parquet"], columns=["prdtypecode", "probability"])
    metrics.set(BATCH_MEAN_PROBABILITY, float(batch["probability"].mean()), version=version)
    shares = batch["prdtypecode"].value_counts(normalize=True)
    for code, share in shares.items():
        metrics.set(BATCH_TYPE_SHARE, float(share), version=version, prdtypecode=str(code))


def _drift(metrics: StepMetrics, summary: Summary) -> None:
    """The drift check's scores (only the latest day: dates never become labels)."""
    from src.monitoring.drift import DRIFT

    metrics.set(STEP_INPUT_ROWS, summary["rows"])
    metrics.set(DRIFT_DETECTED, summary["verdict"] == DRIFT)
    metrics.set(DRIFT_PSI_THRESHOLD, summary["thresholds"]["psi_threshold"])
    if summary["predicted_psi"] is None:  # too few rows: nothing was scored
        return
    metrics.set(DRIFT_PREDICTED_PSI, summary["predicted_psi"])
    metrics.set(DRIFT_PREDICTED_JS, summary["predicted_js"])
    for feature, psi in summary["length_psi"].items():
        if psi is not None:
            metrics.set(DRIFT_LENGTH_PSI, psi, feature=feature)
    for feature, values in summary["rates"].items():
        for source in ("batch", "reference"):
            metrics.set(DRIFT_INPUT_SHARE, values[source], feature=feature, source=source)
    for source, confidence in summary["confidence"].items():
        if source in ("batch", "reference") and confidence is not None:
            metrics.set(DRIFT_CONFIDENCE, confidence, source=source)


def _performance(metrics: StepMetrics, summary: Summary) -> None:
    """The realised scores of the newest labelled batch day, beside the floor they answer to."""
    if not summary["days"]:
        return
    latest = summary["days"][-1]
    for average in ("weighted", "macro"):
        metrics.set(REALISED_F1, latest[f"{average}_f1"], average=average)
    metrics.set(REALISED_ACCURACY, latest["accuracy"])
    metrics.set(REALISED_LABELLED, latest["labelled"])
    metrics.set(REALISED_FLOOR, summary["weighted_f1_floor"])


def _retrain(metrics: StepMetrics, summary: Summary) -> None:
    metrics.set(RETRAIN_REQUESTS, summary["requests"])


Recorder = Callable[[StepMetrics, Summary, float], None]


def _untimed(record: Callable[[StepMetrics, Summary], None]) -> Recorder:
    return lambda metrics, summary, _now: record(metrics, summary)


# How each step's summary (its JSON output) becomes metrics; steps not listed push only the
# common ones (duration, outcome timestamps).
RECORDERS: Final[dict[str, Recorder]] = {
    "validate": _untimed(_validate),
    "make_dataset": _untimed(_make_dataset),
    "train": _untimed(_train),
    "evaluate": _untimed(_evaluate),
    "register": _untimed(_register),
    "gate": _untimed(_gate),
    "promote": _promote,
    "rollback": _champion_moved,
    "predict_batch": _untimed(_predict_batch),
    "drift": _untimed(_drift),
    "performance": _untimed(_performance),
    "retrain": _untimed(_retrain),
}
