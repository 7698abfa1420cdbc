"""MLflow tracking: one experiment, a parent run per pipeline run, nested runs per branch and trial.

A pipeline run is logged after `rakuten evaluate`, from what the steps left on disk: the branches'
fit summaries (`models/branches/NAME/summary.json`), the packaged model, the evaluation reports
and the data-quality report. Nothing in the training steps knows about MLflow.

Everything goes through MLflow's public API: runs are created with `MlflowClient.create_run` and
ended with `set_terminated`, which take the real start and end times of the steps a run describes
(a branch's run spans its fit, from the timestamps `rakuten train` writes in its summary; the
pipeline's run starts with the first branch), so runs logged after the fact still show when and
how long the work ran. Metrics, params and tags go through `MlflowClient.log_batch` (which keeps
to the backend's batch limits itself); the model is logged with `mlflow.pyfunc.log_model`.

Logging is generic over the fit summaries: numbers become metrics, text and flags become params,
a `history` (per-epoch records, or Keras' lists per metric) becomes step-indexed metrics, and each
record of `trials` (a hyper-parameter search) becomes a nested run. Every run carries the lineage
tags: git commit, data version (raw manifest id and hub commit), params hash, and the Airflow
dag/run/try when it runs in an Airflow task.

The experiments are tagged as MLflow "machine learning" experiments (`mlflow.experimentKind` =
`custom_model_development`), not GenAI ones.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID

from src.config import Params, params_hash
from src.data.io import raw_version
from src.data.layout import MANIFEST_FILE
from src.errors import RakutenError

# The ML modules (scikit-learn, matplotlib, Keras) are imported by the functions that log a
# training: the registry's other commands (promote, rollback, history) start without them.

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
# The experiment type MLflow's UI offers as "Machine learning" (the model-training view), as
# opposed to "GenAI apps & agents"; its experiment-type selector writes this tag.
EXPERIMENT_KIND_TAG: Final = "mlflow.experimentKind"
MACHINE_LEARNING: Final = "custom_model_development"
# MLflow 3.17's UI does not open an experiment by that tag: it opens the view of `?workflowType=`
# in the address, else the one the browser remembers (GenAI at first). The addresses this project
# prints carry it, so that they open on the training runs.
TRAINING_VIEW: Final = "?workflowType=machine_learning"
MODEL_ARTIFACT: Final = "model"  # the LoggedModel's name in the pipeline run
_FIT_PREFIX: Final = "fit."
_TIMES: Final = ("started_at", "finished_at")  # a summary's wall-clock bounds: the run's times
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
        from src.models.train import PACKAGED_DIR

        return self.models_dir / PACKAGED_DIR

    @property
    def fused_dir(self) -> Path:
        """The fused branches inside the packaged model."""
        from src.models.packaged import fused_model_dir

        return fused_model_dir(self.packaged_dir)

    def branch_dir(self, name: str) -> Path:
        """Where `rakuten train` saved a branch and its fit summary."""
        from src.models.train import BRANCHES_DIR

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


def experiment_address(ui: str, experiment: str, run_id: str | None = None) -> str:
    """The MLflow UI's address of an experiment (or of one of its runs), in the training view."""
    run = f"/runs/{run_id}" if run_id else ""
    return f"{ui.rstrip('/')}/#/experiments/{experiment}{run}{TRAINING_VIEW}"


def experiment_id(client: MlflowClient, name: str = EXPERIMENT) -> str:
    """The experiment's id, created on first use (on SQLite, artifacts beside the database) as a
    machine-learning experiment; one made before that tag existed is tagged on first use."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, MACHINE_LEARNING
            )
        return str(experiment.experiment_id)
    database = _sqlite_path(str(client.tracking_uri))
    location = (database.absolute().parent / "artifacts").as_uri() if database else None
    return client.create_experiment(
        name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MACHINE_LEARNING}
    )


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
    """A param value: text as is, anything else as JSON (MLflow cuts values over its limit)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _ms(moment: datetime) -> int:
    """A moment as MLflow's timestamps: milliseconds since the epoch."""
    return int(moment.timestamp() * 1000)


def _now_ms() -> int:
    return _ms(datetime.now(UTC))


def summary_times(summary: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """When a step started and finished, from the ISO timestamps its summary records (None
    where it records none)."""
    started, finished = (summary.get(key) for key in _TIMES)
    return (
        datetime.fromisoformat(started) if isinstance(started, str) else None,
        datetime.fromisoformat(finished) if isinstance(finished, str) else None,
    )


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
    """Log metrics, params and tags in one call (MLflow splits it to the backend's batch limits)."""
    client.log_batch(
        run_id,
        metrics=list(metrics),
        params=[Param(_key(k), _text(v)) for k, v in (params or {}).items()],
        tags=[RunTag(_key(k), str(v)) for k, v in (tags or {}).items()],
    )


@contextmanager
def run(
    client: MlflowClient,
    experiment: str,
    name: str,
    parent_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    times: tuple[datetime | None, datetime | None] = (None, None),
) -> Iterator[str]:
    """A run (nested under `parent_id` when given) that ends FINISHED, or FAILED on an error.

    `times` are the start and end of the work the run describes when it is logged afterwards;
    None: the moment the run is created, or ends.
    """
    started, finished = times
    run_tags = dict(tags or {})
    if parent_id is not None:
        run_tags[MLFLOW_PARENT_RUN_ID] = parent_id
    if "git_commit" in run_tags:
        run_tags[MLFLOW_GIT_COMMIT] = run_tags["git_commit"]
    created = client.create_run(
        experiment,
        start_time=None if started is None else _ms(started),
        tags=run_tags,
        run_name=name,
    )
    run_id = created.info.run_id
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(
        run_id, "FINISHED", end_time=_now_ms() if finished is None else _ms(finished)
    )


def _summary_entities(summary: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, object]]:
    """A fit summary's or trial's fields: top-level numbers as metrics, the rest as params.

    A trial's `params` keep their own names; other nested fields (best params, settings) are
    params under dotted names; `history` and `trials` are logged apart, and the wall-clock
    bounds are the run's own start and end.
    """
    metrics: dict[str, float] = {}
    params: dict[str, object] = dict(flatten(summary.get("params") or {}))
    for key, value in summary.items():
        number = _number(value)
        if key in ("history", "trials", "params", *_TIMES) or value is None:
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
    """Log a fit summary on `run_id`: its fields, its per-epoch history and one run per trial.

    Trials ran one after another from the fit's start (an Optuna study, one trial at a time):
    each trial's run is placed there, lasting the seconds the trial recorded.
    """
    metrics, params = _summary_entities(summary)
    history = history_metrics(summary.get("history", []))
    log_batch(client, run_id, [*metrics_at(metrics), *history], params)
    trial_start = summary_times(summary)[0]
    trials = summary.get("trials") or []
    for position, trial in enumerate(trials):
        if not isinstance(trial, Mapping):
            continue
        number = trial.get("number", position)
        seconds = _number(trial.get("seconds"))
        trial_end = None
        if trial_start is not None and seconds is not None:
            trial_end = trial_start + timedelta(seconds=seconds)
        trial_name = f"{name} trial {number}"
        with run(
            client, experiment, trial_name, run_id, {"trial": str(number)}, (trial_start, trial_end)
        ) as trial_run:
            log_fit(client, experiment, trial_run, trial, trial_name)
        trial_start = trial_end
    return len(trials)


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    """A JSON file a step wrote; a missing one says which step makes it."""
    if not path.is_file():
        raise RakutenError(f"{path} not found: {hint}")
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload


def _branch_summaries(paths: TrainingPaths, branches: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The fit summary `rakuten train` wrote for each branch that has one."""
    from src.models.train import SUMMARY_FILE

    summaries = {}
    for branch in branches:
        summary_file = paths.branch_dir(branch) / SUMMARY_FILE
        if summary_file.is_file():
            summaries[branch] = json.loads(summary_file.read_text(encoding="utf-8"))
        else:
            logger.warning("branch %s has no fit summary at %s", branch, summary_file)
    return summaries


def log_training(
    client: MlflowClient,
    paths: TrainingPaths,
    params: Params,
    environ: Mapping[str, str],
) -> TrainingRun:
    """Log a pipeline run (parent), its branches and trials (nested) and the packaged model.

    The pipeline's run starts when its first branch started training and ends once everything
    is logged; each branch's run spans that branch's fit.
    """
    from src.models.evaluate import METRICS_FILE
    from src.models.fusion import FUSION_FILE

    report = _read_json(paths.reports_dir / METRICS_FILE, "run `rakuten evaluate` first")
    fusion = _read_json(paths.fused_dir / FUSION_FILE, "run `rakuten fuse` first")
    summaries = _branch_summaries(paths, list(fusion["weights"]))
    experiment = experiment_id(client)
    lineage = lineage_tags(paths.raw_dir, params, environ)
    starts = [start for s in summaries.values() if (start := summary_times(s)[0]) is not None]
    started = min(starts, default=datetime.now(UTC))
    name = f"pipeline {lineage.get('airflow_dag_run_id', started.strftime('%Y-%m-%dT%H:%M:%SZ'))}"
    with run(client, experiment, name, tags=lineage, times=(started, None)) as parent:
        weights = {f"fusion.weight.{k}": v for k, v in fusion["weights"].items()}
        weights["fusion.chosen_combiner"] = fusion.get("combiner", "grid")
        log_batch(client, parent, params={**flatten(params.model_dump(mode="json")), **weights})
        _log_reports(client, parent, paths)
        for branch in fusion["weights"]:
            summary = summaries.get(branch)
            times = (None, None) if summary is None else summary_times(summary)
            branch_tags = {**lineage, "branch": branch}
            with run(client, experiment, branch, parent, branch_tags, times) as child:
                _log_branch(client, experiment, child, branch, summary, paths, params, report)
        model_id = _log_model(parent, paths.packaged_dir, lineage)
        scores = score_metrics(report[FUSED])
        log_batch(client, parent, metrics_at(scores, model_id=model_id))
    headline = {k: v for k, v in scores.items() if "/" not in k}
    logger.info("pipeline run %s logged with model %s: %s", parent, model_id, headline)
    return TrainingRun(parent, model_id, headline, lineage)


def _log_reports(client: MlflowClient, run_id: str, paths: TrainingPaths) -> None:
    """The evaluation reports, confusion matrices and data-quality report as artifacts."""
    from src.data.validate import REPORT_FILE
    from src.models.evaluate import CONFUSION_DIR, METRICS_FILE

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
    summary: Mapping[str, Any] | None,
    paths: TrainingPaths,
    params: Params,
    report: Mapping[str, Any],
) -> None:
    """One branch's params block, fit summary (history, trials) and test scores."""
    from src.models.train import SUMMARY_FILE

    block = getattr(params, branch, None)
    if block is not None:
        log_batch(client, run_id, params=flatten(block.model_dump(mode="json"), f"{branch}."))
    if summary is not None:
        trials = log_fit(client, experiment, run_id, summary, branch)
        client.log_artifact(run_id, str(paths.branch_dir(branch) / SUMMARY_FILE))
        logger.info("branch %s logged with %d trial run(s)", branch, trials)
    if branch in report:
        log_batch(client, run_id, metrics_at(score_metrics(report[branch])))


def _log_model(run_id: str, packaged_dir: Path, tags: Mapping[str, str]) -> str:
    """Log the packaged model to the pipeline run as its MLflow LoggedModel; its id."""
    from src.models.packaged import log_packaged

    with mlflow.start_run(run_id=run_id):  # log_model logs to the active run
        info = log_packaged(packaged_dir, MODEL_ARTIFACT, tags)
    return str(info.model_id)
