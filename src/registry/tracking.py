"""MLflow tracking: one experiment, a parent run per pipeline run, nested runs per branch and trial.

A pipeline run is logged after `rakuten evaluate`, from what the steps left on disk: the branches'
fit summaries (`models/branches/NAME/summary.json`), the packaged model, the evaluation reports
and the data-quality report. Nothing in the training steps knows about MLflow.

Logging is generic over the fit summaries: numbers become metrics, text and flags become params,
a `history` (per-epoch records, or Keras' lists per metric) becomes step-indexed metrics, and each
record of `trials` (a hyper-parameter search) becomes a nested run. Every run carries the lineage
tags: git commit, data version (raw manifest id and hub commit), params hash, and the Airflow
dag/run/try when it runs in an Airflow task. Metrics, params and tags go in batches.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag
from mlflow.models import Model
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from src.config import Params, params_hash
from src.data.io import raw_version
from src.data.layout import MANIFEST_FILE
from src.data.validate import REPORT_FILE
from src.errors import RakutenError
from src.models.evaluate import CONFUSION_DIR, METRICS_FILE
from src.models.fusion import FUSION_FILE
from src.models.packaged import fused_model_dir
from src.models.train import BRANCHES_DIR, PACKAGED_DIR, SUMMARY_FILE

logger = logging.getLogger(__name__)

EXPERIMENT: Final = "rakuten-product-classifier"
FUSED: Final = "fused"  # the fused model's entry in reports/metrics.json
HEADLINE: Final = ("weighted_f1", "macro_f1", "accuracy", "coverage", "rows")
# What Airflow exports to a task's processes (airflow.sdk context_to_airflow_vars) -> tag.
AIRFLOW_VARIABLES: Final = {
    "AIRFLOW_CTX_DAG_ID": "airflow_dag_id",
    "AIRFLOW_CTX_DAG_RUN_ID": "airflow_dag_run_id",
    "AIRFLOW_CTX_TASK_ID": "airflow_task_id",
    "AIRFLOW_CTX_TRY_NUMBER": "airflow_try_number",
    "AIRFLOW_CTX_LOGICAL_DATE": "airflow_logical_date",
}
_FIT_PREFIX: Final = "fit."
_UNSAFE_KEY: Final = re.compile(r"[^\w\-. :/]")


@dataclass(frozen=True)
class TrainingRun:
    """What `log_training` logged: the parent run, the model it produced and its test scores."""

    run_id: str
    model_id: str
    scores: dict[str, float]
    lineage: dict[str, str]


@dataclass(frozen=True)
class TrainingPaths:
    """Where a pipeline run's outputs are: data, trained models and reports."""

    processed_dir: Path
    raw_dir: Path
    models_dir: Path
    reports_dir: Path

    @property
    def packaged_dir(self) -> Path:
        """The packaged MLflow model (`rakuten fuse`)."""
        return self.models_dir / PACKAGED_DIR

    @property
    def fused_dir(self) -> Path:
        """The fused branches inside the packaged model."""
        return fused_model_dir(self.packaged_dir)

    def branch_dir(self, name: str) -> Path:
        """Where `rakuten train` saved a branch and its fit summary."""
        return self.models_dir / BRANCHES_DIR / name


def tracking_client(tracking_uri: str) -> MlflowClient:
    """A client for tracking and registry at `tracking_uri`, also made the process's default."""
    database = _sqlite_path(tracking_uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    prefix = "sqlite:///"
    return Path(tracking_uri.removeprefix(prefix)) if tracking_uri.startswith(prefix) else None


def experiment_id(client: MlflowClient, name: str = EXPERIMENT) -> str:
    """The experiment's id, created on first use (on SQLite, artifacts beside the database)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    database = _sqlite_path(str(client.tracking_uri))
    location = (database.absolute().parent / "artifacts").as_uri() if database else None
    return client.create_experiment(name, artifact_location=location)


def git_commit(cwd: Path | None = None) -> str | None:
    """The code's git commit (default: this package's work tree), or None outside one (a wheel)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None


def data_lineage(raw_dir: Path) -> dict[str, str]:
    """The raw snapshot's version id and, for hub data, the repo and the commit it came from."""
    lineage = {"data_version": raw_version(raw_dir)}
    manifest = raw_dir / MANIFEST_FILE
    if manifest.is_file():
        source = json.loads(manifest.read_text(encoding="utf-8")).get("source", {})
        lineage["data_source"] = str(source.get("kind", "unknown"))
        if source.get("kind") == "hub":
            lineage["hub_repo"] = str(source.get("repo_id"))
            lineage["hub_commit"] = str(source.get("commit"))
    return lineage


def airflow_context(environ: Mapping[str, str]) -> dict[str, str]:
    """The Airflow dag, run, task and try of the current task, from its environment."""
    return {tag: environ[name] for name, tag in AIRFLOW_VARIABLES.items() if environ.get(name)}


def lineage_tags(raw_dir: Path, params: Params, environ: Mapping[str, str]) -> dict[str, str]:
    """Every lineage tag of a pipeline run: code, data, params and orchestrator."""
    tags = {**data_lineage(raw_dir), "params_sha256": params_hash(params)}
    commit = git_commit()
    if commit is not None:
        tags["git_commit"] = commit
    return {**tags, **airflow_context(environ)}


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (`fusion.weight_step`)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _key(name: str) -> str:
    """A metric, param or tag key MLflow accepts."""
    return _UNSAFE_KEY.sub("_", name)


def _number(value: object) -> float | None:
    """A finite float for numbers (not bools), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: object) -> str:
    """A param value: text as is, anything else as JSON, cut to MLflow's limit."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_VAL_LENGTH]


def _now_ms() -> int:
    return int(time.time() * 1000)


def metrics_at(
    values: Mapping[str, float], step: int = 0, model_id: str | None = None
) -> list[Metric]:
    """Metrics for `values` at one step, linked to a logged model when given."""
    now = _now_ms()
    return [Metric(_key(k), v, now, step, model_id=model_id) for k, v in values.items()]


def history_metrics(history: object, prefix: str = "") -> list[Metric]:
    """Per-epoch metrics, step = epoch, from records ({"epoch": 3, "loss": ...}) or Keras lists."""
    now = _now_ms()
    metrics: list[Metric] = []
    if isinstance(history, Mapping):  # Keras' History.history: {"loss": [..], "val_loss": [..]}
        for name, values in history.items():
            if isinstance(values, Sequence) and not isinstance(values, str):
                for step, value in enumerate(values):
                    number = _number(value)
                    if number is not None:
                        metrics.append(Metric(_key(f"{prefix}{name}"), number, now, step))
    elif isinstance(history, Sequence) and not isinstance(history, str):
        for position, record in enumerate(history):
            if not isinstance(record, Mapping):
                continue
            epoch = record.get("epoch")
            step = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else position
            for name, value in record.items():
                number = _number(value)
                if name != "epoch" and number is not None:
                    metrics.append(Metric(_key(f"{prefix}{name}"), number, now, step))
    return metrics


def score_metrics(scores: Mapping[str, Any], prefix: str = "test_") -> dict[str, float]:
    """The headline scores and each class's F1 of one `evaluate.scores` result, as metrics."""
    metrics = {f"{prefix}{name}": float(scores[name]) for name in HEADLINE if name in scores}
    for code, per_class in scores.get("per_class", {}).items():
        metrics[f"{prefix}class_f1/{code}"] = float(per_class["f1"])
    return metrics


def log_batch(
    client: MlflowClient,
    run_id: str,
    metrics: Sequence[Metric] = (),
    params: Mapping[str, object] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Log metrics, params and tags in as few calls as MLflow's batch limits allow."""
    todo_params = [Param(_key(k), _text(v)) for k, v in (params or {}).items()]
    todo_tags = [RunTag(_key(k), str(v)) for k, v in (tags or {}).items()]
    todo_metrics = list(metrics)
    while todo_params or todo_tags or todo_metrics:
        batch_params = todo_params[:MAX_PARAMS_TAGS_PER_BATCH]
        batch_tags = todo_tags[:MAX_PARAMS_TAGS_PER_BATCH]
        room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(batch_params + batch_tags))
        batch_metrics = todo_metrics[:room]
        client.log_batch(run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags)
        del todo_params[: len(batch_params)], todo_tags[: len(batch_tags)]
        del todo_metrics[: len(batch_metrics)]


@contextmanager
def run(
    client: MlflowClient,
    experiment: str,
    name: str,
    parent_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """A run (nested under `parent_id` when given) that ends FINISHED, or FAILED on an error."""
    run_tags = dict(tags or {})
    if parent_id is not None:
        run_tags[MLFLOW_PARENT_RUN_ID] = parent_id
    if "git_commit" in run_tags:
        run_tags[MLFLOW_GIT_COMMIT] = run_tags["git_commit"]
    run_id = client.create_run(experiment, run_name=name, tags=run_tags).info.run_id
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def _summary_entities(summary: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, object]]:
    """A fit summary's or trial's fields: top-level numbers as metrics, the rest as params.

    A trial's `params` keep their own names; other nested fields (best params, settings) are
    params under dotted names; `history` and `trials` are logged apart.
    """
    metrics: dict[str, float] = {}
    params: dict[str, object] = dict(flatten(summary.get("params") or {}))
    for key, value in summary.items():
        number = _number(value)
        if key in ("history", "trials", "params") or value is None:
            continue
        if number is not None:
            metrics[f"{_FIT_PREFIX}{key}"] = number
        elif isinstance(value, Mapping):
            params |= flatten(value, f"{_FIT_PREFIX}{key}.")
        else:
            params[f"{_FIT_PREFIX}{key}"] = value
    return metrics, params


def log_fit(
    client: MlflowClient,
    experiment: str,
    run_id: str,
    summary: Mapping[str, Any],
    name: str,
) -> int:
    """Log a fit summary on `run_id`: its fields, its per-epoch history and one run per trial."""
    metrics, params = _summary_entities(summary)
    history = history_metrics(summary.get("history", []))
    log_batch(client, run_id, [*metrics_at(metrics), *history], params)
    trials = summary.get("trials") or []
    for position, trial in enumerate(trials):
        if not isinstance(trial, Mapping):
            continue
        number = trial.get("number", position)
        with run(client, experiment, f"{name} trial {number}", run_id, {"trial": str(number)}) as t:
            log_fit(client, experiment, t, trial, f"{name} trial {number}")
    return len(trials)


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    """A JSON file a step wrote; a missing one says which step makes it."""
    if not path.is_file():
        raise RakutenError(f"{path} not found: {hint}")
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload


def log_training(
    client: MlflowClient,
    paths: TrainingPaths,
    params: Params,
    environ: Mapping[str, str],
) -> TrainingRun:
    """Log a pipeline run (parent), its branches and trials (nested) and the packaged model."""
    report = _read_json(paths.reports_dir / METRICS_FILE, "run `rakuten evaluate` first")
    fusion = _read_json(paths.fused_dir / FUSION_FILE, "run `rakuten fuse` first")
    experiment = experiment_id(client)
    lineage = lineage_tags(paths.raw_dir, params, environ)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    name = f"pipeline {lineage.get('airflow_dag_run_id', started)}"
    with run(client, experiment, name, tags=lineage) as parent:
        weights = {f"fusion.weight.{k}": v for k, v in fusion["weights"].items()}
        log_batch(client, parent, params={**flatten(params.model_dump(mode="json")), **weights})
        _log_reports(client, parent, paths)
        for branch in fusion["weights"]:
            with run(client, experiment, branch, parent, {**lineage, "branch": branch}) as child:
                _log_branch(client, experiment, child, branch, paths, params, report)
        model_id = _log_model(client, experiment, parent, paths.packaged_dir, lineage)
        scores = score_metrics(report[FUSED])
        log_batch(client, parent, metrics_at(scores, model_id=model_id))
    headline = {k: v for k, v in scores.items() if "/" not in k}
    logger.info("pipeline run %s logged with model %s: %s", parent, model_id, headline)
    return TrainingRun(parent, model_id, headline, lineage)


def _log_reports(client: MlflowClient, run_id: str, paths: TrainingPaths) -> None:
    """The evaluation reports, confusion matrices and data-quality report as artifacts."""
    client.log_artifact(run_id, str(paths.reports_dir / METRICS_FILE), "reports")
    confusion = paths.reports_dir / CONFUSION_DIR
    if confusion.is_dir():
        client.log_artifacts(run_id, str(confusion), f"reports/{CONFUSION_DIR}")
    quality = paths.processed_dir / REPORT_FILE  # make_dataset's data-quality report
    if quality.is_file():
        client.log_artifact(run_id, str(quality), "data")
    else:
        logger.warning("no data-quality report at %s; not logged", quality)


def _log_branch(
    client: MlflowClient,
    experiment: str,
    run_id: str,
    branch: str,
    paths: TrainingPaths,
    params: Params,
    report: Mapping[str, Any],
) -> None:
    """One branch's params block, fit summary (history, trials) and test scores."""
    block = getattr(params, branch, None)
    if block is not None:
        log_batch(client, run_id, params=flatten(block.model_dump(mode="json"), f"{branch}."))
    summary_file = paths.branch_dir(branch) / SUMMARY_FILE
    if summary_file.is_file():
        trials = log_fit(client, experiment, run_id, json.loads(summary_file.read_text()), branch)
        client.log_artifact(run_id, str(summary_file))
        logger.info("branch %s logged with %d trial run(s)", branch, trials)
    if branch in report:
        log_batch(client, run_id, metrics_at(score_metrics(report[branch])))


def _log_model(
    client: MlflowClient,
    experiment: str,
    run_id: str,
    packaged_dir: Path,
    tags: Mapping[str, str],
) -> str:
    """The packaged pyfunc model as the run's LoggedModel (MLflow 3), its MLmodel pointing back."""
    if not (packaged_dir / "MLmodel").is_file():
        raise RakutenError(f"no packaged model in {packaged_dir}: run `rakuten fuse`")
    model = client.create_logged_model(
        experiment, name="model", source_run_id=run_id, tags=dict(tags), model_type="fused"
    )
    client.log_model_artifacts(model.model_id, str(packaged_dir))
    descriptor = Model.load(str(packaged_dir / "MLmodel"))
    descriptor.run_id = run_id
    descriptor.model_id = model.model_id
    descriptor.model_uuid = model.model_id
    descriptor.artifact_path = model.artifact_location
    with tempfile.TemporaryDirectory() as work:
        descriptor.save(str(Path(work) / "MLmodel"))
        client.log_model_artifact(model.model_id, str(Path(work) / "MLmodel"))
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return str(model.model_id)
