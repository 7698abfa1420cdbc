"""MLflow tracking: lineage tags, batched logging, per-epoch history and nested trial runs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from src.config import Params, params_hash
from src.data.layout import MANIFEST_FILE
from src.registry.tracking import (
    EXPERIMENT_KIND_TAG,
    MACHINE_LEARNING,
    airflow_context,
    data_lineage,
    experiment_id,
    flatten,
    git_commit,
    history_metrics,
    lineage_tags,
    log_batch,
    log_fit,
    run,
    score_metrics,
    summary_times,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class CountingClient(MlflowClient):
    """A real client that counts its `log_batch` calls."""

    calls: list[tuple[int, int, int]]

    def log_batch(  # type: ignore[override]
        self,
        run_id: str,
        metrics: list[Metric] = (),  # type: ignore[assignment]
        params: list[Param] = (),  # type: ignore[assignment]
        tags: list[RunTag] = (),  # type: ignore[assignment]
        synchronous: bool | None = None,
    ) -> None:
        self.calls.append((len(metrics), len(params), len(tags)))
        super().log_batch(run_id, metrics, params, tags, synchronous)


def test_history_records_become_step_metrics() -> None:
    history = [
        {"phase": "head", "epoch": 0, "loss": 2.0, "val_loss": 2.5},
        {"phase": "head", "epoch": 1, "loss": 1.5, "val_loss": float("nan")},
        {"phase": "fine_tune", "epoch": 2, "loss": 1.0, "val_loss": 1.8},
    ]
    logged = {(m.key, m.step): m.value for m in history_metrics(history)}
    assert logged == {
        ("loss", 0): 2.0,
        ("val_loss", 0): 2.5,
        ("loss", 1): 1.5,
        ("loss", 2): 1.0,
        ("val_loss", 2): 1.8,
    }  # text fields and non-finite values are left out


def test_keras_history_lists_become_step_metrics() -> None:
    logged = history_metrics({"loss": [3.0, 2.0], "accuracy": [0.1, 0.4]}, prefix="fit.")
    assert sorted((m.key, m.step, m.value) for m in logged) == [
        ("fit.accuracy", 0, 0.1),
        ("fit.accuracy", 1, 0.4),
        ("fit.loss", 0, 3.0),
        ("fit.loss", 1, 2.0),
    ]


def test_score_metrics_have_the_headline_and_each_class() -> None:
    scores = {
        "weighted_f1": 0.8,
        "macro_f1": 0.7,
        "accuracy": 0.81,
        "coverage": 1.0,
        "rows": 10,
        "per_class": {"10": {"f1": 0.5, "support": 4}, "2583": {"f1": 0.9, "support": 6}},
    }
    assert score_metrics(scores) == {
        "test_weighted_f1": 0.8,
        "test_macro_f1": 0.7,
        "test_accuracy": 0.81,
        "test_coverage": 1.0,
        "test_rows": 10.0,
        "test_class_f1/10": 0.5,
        "test_class_f1/2583": 0.9,
    }


def test_airflow_context_comes_from_the_task_environment() -> None:
    environ = {
        "AIRFLOW_CTX_DAG_ID": "rakuten_training",
        "AIRFLOW_CTX_DAG_RUN_ID": "manual__2025-01-01T00:00:00+00:00",
        "AIRFLOW_CTX_TRY_NUMBER": "2",
        "AIRFLOW_CTX_TASK_ID": "register",
        "HOME": "/root",
    }
    assert airflow_context(environ) == {
        "airflow_dag_id": "rakuten_training",
        "airflow_dag_run_id": "manual__2025-01-01T00:00:00+00:00",
        "airflow_try_number": "2",
        "airflow_task_id": "register",
    }
    assert airflow_context({}) == {}


def test_data_lineage_names_the_hub_commit(tmp_path: Path) -> None:
    manifest = {
        "version": "abc123",
        "source": {"kind": "hub", "repo_id": "owner/repo", "commit": "f" * 40},
    }
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert data_lineage(tmp_path) == {
        "data_version": "abc123",
        "data_source": "hub",
        "hub_repo": "owner/repo",
        "hub_commit": "f" * 40,
    }


def test_lineage_tags_have_code_data_params_and_airflow(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).write_text(
        json.dumps({"version": "v1", "source": {"kind": "local"}})
    )
    tags = lineage_tags(tmp_path, Params(), {"AIRFLOW_CTX_DAG_ID": "dag"})
    assert tags["data_version"] == "v1" and tags["data_source"] == "local"
    assert tags["params_sha256"] == params_hash(Params())
    assert tags["airflow_dag_id"] == "dag"
    assert tags.get("git_commit") == git_commit()


def test_git_commit_is_none_outside_a_work_tree(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    commit = git_commit(PROJECT_ROOT)
    if commit is not None:  # a source tarball has no .git
        assert re.fullmatch(r"[0-9a-f]{40}", commit)


def test_flatten_dots_nested_keys() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": None,
    }


def test_log_batch_sends_everything_in_one_call_that_mlflow_splits(embedded_uri: str) -> None:
    client = CountingClient(embedded_uri, embedded_uri)
    client.calls = []
    experiment = experiment_id(client)
    metrics = [Metric("loss", float(step), 0, step) for step in range(2300)]
    params = {f"p{i}": i for i in range(150)}
    tags = {f"t{i}": str(i) for i in range(120)}
    with run(client, experiment, "limits") as run_id:
        log_batch(client, run_id, metrics, params, tags)
    # One public call: MLflow's client splits it to the backend's batch limits (1,000 entities).
    assert client.calls == [(2300, 150, 120)]
    stored = client.get_run(run_id)
    assert len(client.get_metric_history(run_id, "loss")) == 2300
    assert stored.data.params["p149"] == "149"
    assert stored.data.tags["t119"] == "119"
    assert stored.info.status == "FINISHED"


def test_a_failing_block_marks_its_run_failed(embedded: MlflowClient) -> None:
    experiment = experiment_id(embedded)
    with pytest.raises(RuntimeError), run(embedded, experiment, "broken") as run_id:
        raise RuntimeError("boom")
    assert embedded.get_run(run_id).info.status == "FAILED"


def test_experiment_artifacts_sit_beside_the_sqlite_database(
    embedded: MlflowClient, tmp_path: Path
) -> None:
    experiment = embedded.get_experiment(experiment_id(embedded))
    assert experiment.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert experiment_id(embedded) == experiment.experiment_id  # created once


def test_fit_summary_becomes_metrics_params_history_and_trial_runs(
    embedded: MlflowClient,
) -> None:
    summary: dict[str, Any] = {
        "branch": "text_tfidf",
        "seconds": 1.5,
        "best_params": {"C": 2.0, "ngrams": "1-2"},
        "history": [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}],
        "trials": [
            {"number": 0, "params": {"C": 1.0}, "value": 0.61, "state": "COMPLETE"},
            {"number": 1, "params": {"C": 2.0}, "value": 0.72, "state": "COMPLETE"},
        ],
    }
    experiment = experiment_id(embedded)
    with run(embedded, experiment, "text_tfidf") as branch_run:
        assert log_fit(embedded, experiment, branch_run, summary, "text_tfidf") == 2
    logged = embedded.get_run(branch_run).data
    assert logged.metrics["fit.seconds"] == 1.5
    assert logged.params["fit.best_params.C"] == "2.0"
    assert logged.params["fit.best_params.ngrams"] == "1-2"
    assert logged.params["fit.branch"] == "text_tfidf"
    assert [(m.step, m.value) for m in embedded.get_metric_history(branch_run, "loss")] == [
        (0, 1.0),
        (1, 0.5),
    ]
    trials = embedded.search_runs(
        [experiment], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{branch_run}'", order_by=["tags.trial"]
    )
    assert [t.data.tags["trial"] for t in trials] == ["0", "1"]
    assert [t.data.params["C"] for t in trials] == ["1.0", "2.0"]
    assert [t.data.metrics["fit.value"] for t in trials] == [0.61, 0.72]
    assert trials[0].data.params["fit.state"] == "COMPLETE"


def test_experiments_are_machine_learning_ones(embedded: MlflowClient) -> None:
    created = embedded.get_experiment(experiment_id(embedded))
    assert created.tags[EXPERIMENT_KIND_TAG] == MACHINE_LEARNING
    older = embedded.create_experiment("made-before-the-tag")  # as an earlier release made it
    assert experiment_id(embedded, "made-before-the-tag") == older
    assert embedded.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == MACHINE_LEARNING


def test_a_run_logged_afterwards_carries_the_times_of_its_work(embedded: MlflowClient) -> None:
    started = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    finished = started + timedelta(minutes=13)
    experiment = experiment_id(embedded)
    with run(embedded, experiment, "text_cnn", times=(started, finished)) as run_id:
        pass
    info = embedded.get_run(run_id).info
    assert (info.start_time, info.end_time) == (
        int(started.timestamp() * 1000),
        int(finished.timestamp() * 1000),
    )


def test_trial_runs_follow_one_another_from_the_fit_start(embedded: MlflowClient) -> None:
    started = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    summary = {
        "started_at": started.isoformat(),
        "finished_at": (started + timedelta(seconds=100)).isoformat(),
        "trials": [{"number": 0, "seconds": 30.0}, {"number": 1, "seconds": 45.5}],
    }
    assert summary_times(summary) == (started, started + timedelta(seconds=100))
    assert summary_times({}) == (None, None)
    experiment = experiment_id(embedded)
    with run(embedded, experiment, "text_tfidf", times=summary_times(summary)) as branch_run:
        log_fit(embedded, experiment, branch_run, summary, "text_tfidf")
    branch = embedded.get_run(branch_run)
    assert "fit.started_at" not in branch.data.params  # the run's own times, not params
    trials = embedded.search_runs(
        [experiment], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{branch_run}'", order_by=["tags.trial"]
    )
    start = int(started.timestamp() * 1000)
    assert [(t.info.start_time - start, t.info.end_time - start) for t in trials] == [
        (0, 30_000),
        (30_000, 75_500),
    ]
