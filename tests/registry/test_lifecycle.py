"""The model lifecycle end to end through `rakuten model ...`, on a real `mlflow server` and on
the embedded default: register, gate, promote, reject, manual approval, rollback, and loading
`models:/rakuten-product-classifier@champion` in a fresh process.

Three real text models of different quality are trained once, on synthetic catalogues of
different sizes: `first` (a middling model), `worse` (very few rows) and `better` (more rows).
Every gate scores on the pinned test split of the largest catalogue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from typer.testing import CliRunner, Result

from src.cli.main import app
from src.config import Params, SyntheticSource, get_settings, load_params
from src.data.ingest import ingest
from src.data.io import raw_version, read_raw_csv
from src.data.layout import X_TEST_FILE
from src.data.make_dataset import make_dataset
from src.data.split import DEFINITION_VERSION
from src.data.synth import synthesize
from src.errors import RakutenError
from src.models.packaged import CHAMPION_URI, MODEL_NAME, load
from src.models.predict import model_inputs
from src.models.profile import PROFILE_FILE
from src.models.train import evaluate_models, fuse_branches, train_branches
from src.registry.lifecycle import (
    AUDIT_EXPERIMENT,
    RETRAIN_REASON_TAG,
    SPLIT_TAG,
    champion_history,
    promote,
    register,
    rollback,
    validate,
)
from src.registry.reference import reference_profile
from src.registry.tracking import (
    EXPERIMENT,
    EXPERIMENT_KIND_TAG,
    MACHINE_LEARNING,
    TrainingPaths,
    tracking_client,
)
from tests.servers import Server, started_mlflow_server, wait_until_healthy

ROWS = {"first": 400, "worse": 60, "better": 1600}  # labelled synthetic rows per model
TRIALS = {"first": 2}  # the first model's branch is searched: its trials become nested runs


def _params(rows: int, approval: str = "auto", trials: int = 0) -> dict[str, Any]:
    return {
        "synthetic": {"rows": rows, "test_rows": 40, "images": False, "seed": 3},
        "train": {"branches": ["text_tfidf"], "seed": 0},
        "text_tfidf": {"trials": trials, "max_features": 20000, "n_jobs": 1},
        "fusion": {"weight_step": 0.5},
        "gate": {
            "min_weighted_f1": 0.2,
            "tolerance": 0.02,
            "per_class_f1_floor": 0.0,
            "per_class_min_support": 20,
            "bootstrap_samples": 200,
        },
        "promote": {"approval": approval},
    }


def _write_params(path: Path, params: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def empty_mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path
) -> Iterator[Server]:
    """A real `mlflow server` of this module's own, started without waiting for it: the lifecycle
    counts versions from 1, so it cannot share the session's server with a test file that
    registers models on it first."""
    root = tmp_path_factory.mktemp("lifecycle-mlflow")
    with started_mlflow_server(root, mlflow_template) as server:
        yield server


@pytest.fixture(scope="module")
def pipelines(
    tmp_path_factory: pytest.TempPathFactory, empty_mlflow_server: Server
) -> dict[str, tuple[TrainingPaths, Path]]:
    """A trained, fused and evaluated model per quality, with the params file it was made with.

    The MLflow server test's process is started first: it boots while the models train.
    """
    made = {}
    for name, rows in ROWS.items():
        root = tmp_path_factory.mktemp(name)
        params_file = _write_params(root / "params.yaml", _params(rows, trials=TRIALS.get(name, 0)))
        params: Params = load_params(params_file)
        paths = TrainingPaths(root / "processed", root / "raw", root / "models", root / "reports")
        ingest(SyntheticSource(), paths.raw_dir, params)
        make_dataset(paths.raw_dir, paths.processed_dir, params.make_dataset, root / "interim", 1)
        train_branches(paths.processed_dir, paths.raw_dir, paths.models_dir, params)
        fuse_branches(paths.processed_dir, paths.raw_dir, paths.models_dir, params)
        evaluate_models(paths.processed_dir, paths.raw_dir, paths.models_dir, paths.reports_dir)
        made[name] = (paths, params_file)
    return made


@pytest.fixture(params=["server", "embedded"])
def tracking_uri(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The backend under test, set as RAKUTEN_MLFLOW_TRACKING_URI (embedded: left to the default,
    `sqlite:///mlruns/mlflow.db` in the test's working directory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAKUTEN_MLFLOW_TRACKING_URI", raising=False)
    if request.param == "server":
        uri = wait_until_healthy(request.getfixturevalue("empty_mlflow_server"))
        monkeypatch.setenv("RAKUTEN_MLFLOW_TRACKING_URI", uri)
    else:
        uri = "sqlite:///mlruns/mlflow.db"
    get_settings.cache_clear()
    assert get_settings().mlflow_tracking_uri == uri
    yield uri
    get_settings.cache_clear()


Rakuten = Callable[..., Result]


@pytest.fixture
def rakuten(monkeypatch: pytest.MonkeyPatch) -> Rakuten:
    """`rakuten ARGS...` in process, with a params file and the paths of one pipeline."""

    def invoke(*arguments: str, params_file: Path, paths: TrainingPaths) -> Result:
        monkeypatch.setenv("RAKUTEN_PARAMS_FILE", str(params_file))
        monkeypatch.setenv("RAKUTEN_DATA_ROOT", str(paths.processed_dir.parent))
        monkeypatch.setenv("RAKUTEN_MODELS_DIR", str(paths.models_dir))
        monkeypatch.setenv("RAKUTEN_REPORTS_DIR", str(paths.reports_dir))
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, ["model", *arguments])
        finally:
            get_settings.cache_clear()

    return invoke


def _summary(result: Result) -> dict[str, Any]:
    """The command's JSON summary (its last stdout line)."""
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def _ok(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, (result.output, result.exception)
    return _summary(result)


def _aliases(client: MlflowClient) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(MODEL_NAME).aliases.items()}


def _check_tracking(client: MlflowClient, version: str, paths: TrainingPaths) -> None:
    """The registered version, its pipeline run, the branch run and their lineage and artifacts."""
    registered = client.get_model_version(MODEL_NAME, version)
    assert registered.tags["data_version"] == raw_version(paths.raw_dir)
    assert 0 < float(registered.tags["test_weighted_f1"]) <= 1
    assert len(registered.tags["params_sha256"]) == 64
    parent = client.get_run(registered.run_id)
    assert parent.data.tags["data_version"] == raw_version(paths.raw_dir)
    assert parent.data.params["train.branches"] == '["text_tfidf"]'
    assert parent.data.params["fusion.weight.text_tfidf"] == "1.0"
    assert parent.data.metrics["test_weighted_f1"] == pytest.approx(
        float(registered.tags["test_weighted_f1"]), abs=1e-5
    )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "reports")}
    assert {"reports/metrics.json", "reports/confusion"} <= artifacts
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "data")] == [
        "data/quality_report.json"
    ]
    assert [f"models:/{o.model_id}" for o in parent.outputs.model_outputs] == [registered.source]
    logged_model = client.get_logged_model(registered.source.removeprefix("models:/"))
    assert logged_model.source_run_id == parent.info.run_id and logged_model.status == "READY"
    assert logged_model.tags["data_version"] == raw_version(paths.raw_dir)
    assert logged_model.tags["params_sha256"] == registered.tags["params_sha256"]
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MACHINE_LEARNING  # MLflow's model-training kind
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'"
    )
    branch = next(run for run in children if run.data.tags.get("branch") == "text_tfidf")
    assert (
        "test_weighted_f1" in branch.data.metrics and "fit.val_weighted_f1" in branch.data.metrics
    )
    assert branch.data.params["text_tfidf.trials"] == "2"
    # The branch's run spans its fit as `rakuten train` timed it, not the moment it was logged.
    summary = json.loads(
        (paths.models_dir / "branches" / "text_tfidf" / "summary.json").read_text()
    )
    assert branch.info.start_time == _ms(summary["started_at"])
    assert branch.info.end_time == _ms(summary["finished_at"])
    assert parent.info.start_time == branch.info.start_time  # the pipeline starts with its branch
    assert parent.info.end_time > branch.info.end_time
    assert branch.data.tags["params_sha256"] == registered.tags["params_sha256"]
    trials = client.search_runs(
        [parent.info.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{branch.info.run_id}'"
    )
    assert sorted(t.data.tags["trial"] for t in trials) == ["0", "1"]
    assert all("fit.val_weighted_f1" in t.data.metrics and "C" in t.data.params for t in trials)
    first_trial = min(trials, key=lambda t: int(t.data.tags["trial"]))
    assert first_trial.info.start_time == branch.info.start_time
    # The card is written at registration, before any gate.
    card = client.download_artifacts(parent.info.run_id, "model_card.md", str(paths.models_dir))
    text = Path(card).read_text()
    assert f"# Model card: {MODEL_NAME} version {version}" in text
    assert raw_version(paths.raw_dir) in text and "Not validated yet" in text


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _fresh_process_predictions(uri: str, listings: Path) -> dict[str, Any]:
    """Load @champion with plain MLflow in a new Python process and predict listings."""
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({CHAMPION_URI!r})\n"
        "inputs = pd.read_json(sys.argv[1], orient='records')\n"
        "codes = model.predict(inputs)['prdtypecode'].tolist()\n"
        "print(json.dumps({'run_id': model.metadata.run_id, 'codes': codes}))\n"
    )
    environ = {**os.environ, "MLFLOW_TRACKING_URI": uri, "RAKUTEN_MLFLOW_TRACKING_URI": uri}
    done = subprocess.run(
        [sys.executable, "-c", script, str(listings)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=900,  # a guard, not a budget: on a loaded 2-core machine this took over 300 s
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.e2e
@pytest.mark.slow
def test_the_model_lifecycle(
    tracking_uri: str,
    pipelines: dict[str, tuple[TrainingPaths, Path]],
    rakuten: Rakuten,
    tmp_path: Path,
) -> None:
    first, first_params = pipelines["first"]
    worse, worse_params = pipelines["worse"]
    better, better_params = pipelines["better"]
    # Every gate scores on the same pinned test split: the largest catalogue's.
    gate_on = {"params_file": better_params, "paths": better}
    client = tracking_client(tracking_uri)

    # 1. A first model is tracked, registered as challenger, gated on the floors, promoted.
    registered = _ok(rakuten("register", params_file=first_params, paths=first))
    assert registered["version"] == "1" and registered["alias"] == "challenger"
    _check_tracking(client, "1", first)
    # The version carries the reference profile `rakuten fuse` packaged (the drift checks').
    packaged_profile = json.loads((first.packaged_dir / PROFILE_FILE).read_text())
    assert reference_profile(client, MODEL_NAME, "1") == packaged_profile
    gate = _ok(rakuten("validate", **gate_on))
    assert gate["decision"] == "passed" and gate["champion_version"] is None
    assert gate["comparison"] is None
    promoted = _ok(rakuten("promote", "--auto", **gate_on))
    assert promoted["promoted"] is True and promoted["previous_version"] is None
    assert _aliases(client) == {"champion": "1"}  # the challenger became champion
    v1 = client.get_model_version(MODEL_NAME, "1").tags
    assert v1["gate.decision"] == "passed" and v1["promoted_by"] == "pipeline"

    # 2. A worse challenger is rejected with its reason recorded; the champion is unchanged.
    assert _ok(rakuten("register", params_file=worse_params, paths=worse))["version"] == "2"
    failed = rakuten("validate", **gate_on)
    assert failed.exit_code == 1 and isinstance(failed.exception, RakutenError)
    assert "below the champion's" in str(failed.exception)
    rejected = _summary(failed)
    assert rejected["decision"] == "failed" and rejected["champion_version"] == "1"
    low, high = rejected["comparison"]["ci_low"], rejected["comparison"]["ci_high"]
    assert low <= rejected["comparison"]["weighted_f1_difference"] <= high < 0
    v2 = client.get_model_version(MODEL_NAME, "2").tags
    assert v2["gate.decision"] == "failed" and "below the champion's" in v2["gate.reasons"]
    assert float(v2["gate.ci_high"]) == pytest.approx(high, rel=1e-4)
    report = json.loads((better.reports_dir / "gate.json").read_text())
    assert report["version"] == "2" and report["decision"] == "failed"
    gate_run = client.get_run(v2["gate.run_id"])
    assert (
        gate_run.data.tags[MLFLOW_PARENT_RUN_ID] == client.get_model_version(MODEL_NAME, "2").run_id
    )
    assert [a.path for a in client.list_artifacts(gate_run.info.run_id)] == ["gate.json"]
    # The gate's result is written into the version's card, which `rakuten model card` prints.
    card_v2 = rakuten("card", "--version", "2", **gate_on)
    assert card_v2.exit_code == 0, card_v2.output
    assert "**FAILED**" in card_v2.stdout and "below the champion's" in card_v2.stdout
    assert "against champion version 1" in card_v2.stdout
    assert "## Confusion matrix" in card_v2.stdout and "Not validated yet" not in card_v2.stdout
    refused = rakuten("promote", "--version", "2", **gate_on)
    assert isinstance(refused.exception, RakutenError)
    assert "did not pass the gate" in str(refused.exception)
    assert _aliases(client) == {"champion": "1", "challenger": "2"}

    # 3. A better one passes; under manual approval the pipeline only asks, a person promotes.
    manual = _write_params(tmp_path / "manual.yaml", _params(ROWS["better"], "manual"))
    # Registered as a retraining the closed loop asked for: the reason is on the run and version.
    reason = "drift on 2026-05-04: missing_description rate 0.950 vs 0.350 in the reference"
    retrained = _ok(
        rakuten("register", "--reason", reason, params_file=better_params, paths=better)
    )
    assert retrained["version"] == "3" and retrained["reason"] == reason
    v3 = client.get_model_version(MODEL_NAME, "3")
    assert v3.tags[RETRAIN_REASON_TAG] == client.get_run(v3.run_id).data.tags[RETRAIN_REASON_TAG]
    assert v3.tags[RETRAIN_REASON_TAG] == reason
    # The gate also scores a labelled dataset the user supplies, in the hub's layout.
    supplied = tmp_path / "validation"
    synthesize(supplied, rows=150, test_rows=0, images=False, seed=11, workers=1)
    passed = _ok(rakuten("validate", "--data", str(supplied), params_file=manual, paths=better))
    assert passed["decision"] == "passed" and passed["champion_version"] == "1"
    assert passed["comparison"]["weighted_f1_difference"] > 0
    test_rows = rejected["rows"]["pinned_test"]
    assert passed["rows"] == {"all": test_rows + 150, "pinned_test": test_rows, "supplied": 150}
    asked = _ok(rakuten("promote", "--auto", params_file=manual, paths=better))
    assert asked["promoted"] is False and "awaits a person" in asked["reason"]
    assert client.get_model_version(MODEL_NAME, "3").tags["approval"] == "awaiting"
    assert _aliases(client)["champion"] == "1"
    by_hand = _ok(
        rakuten("promote", "--version", "3", "--by", "alice", params_file=manual, paths=better)
    )
    assert by_hand["promoted"] is True and by_hand["previous_version"] == "1"
    assert _aliases(client) == {"champion": "3"}
    v3 = client.get_model_version(MODEL_NAME, "3").tags
    assert v3["promoted_by"] == "alice" and v3["approval"] == "approved by alice"
    assert "champion_until" in client.get_model_version(MODEL_NAME, "1").tags

    # 4. Rollback returns to the previous champion in one step; the history tells it all.
    rolled = _ok(rakuten("rollback", "--reason", "complaints", **gate_on))
    assert rolled["version"] == "1" and rolled["previous_version"] == "3"
    assert _aliases(client) == {"champion": "1"}
    assert "champion_until" not in client.get_model_version(MODEL_NAME, "1").tags
    history = champion_history(client)
    audit = client.get_experiment_by_name(AUDIT_EXPERIMENT)
    names = [r.info.run_name for r in client.search_runs([audit.experiment_id])]
    assert sorted(names) == ["promote v1", "promote v1 -> v3", "rollback v3 -> v1"]
    assert audit.tags[EXPERIMENT_KIND_TAG] == MACHINE_LEARNING
    champion_card = rakuten("card", **gate_on)  # default: @champion's card, version 1
    assert "version 1" in champion_card.stdout.splitlines()[0]
    assert (
        "**PASSED**" in champion_card.stdout and "with no champion to beat" in champion_card.stdout
    )
    assert [(h["action"], h["version"], h["previous_version"]) for h in history] == [
        ("promote", "1", None),
        ("promote", "3", "1"),
        ("rollback", "1", "3"),
    ]
    assert history[2]["reason"] == "complaints"
    listed = rakuten("history", **gate_on)
    assert [json.loads(line)["version"] for line in listed.stdout.splitlines()] == ["1", "3", "1"]
    assert client.get_experiment_by_name(AUDIT_EXPERIMENT) is not None
    again = rakuten("rollback", **gate_on)
    assert isinstance(again.exception, RakutenError) and "first champion" in str(again.exception)

    # 5. A fresh process loads @champion from the registry and predicts like version 1.
    listings = read_raw_csv(better.raw_dir / X_TEST_FILE).head(25)
    inputs = model_inputs(listings, None)[["designation", "description"]]
    inputs_file = tmp_path / "listings.json"
    inputs.to_json(inputs_file, orient="records")
    fresh = _fresh_process_predictions(tracking_uri, inputs_file)
    version_1 = load(f"models:/{MODEL_NAME}/1", tracking_uri)
    assert fresh["run_id"] == client.get_model_version(MODEL_NAME, "1").run_id
    expected = np.asarray(version_1.predict(inputs)["prdtypecode"]).tolist()
    assert fresh["codes"] == expected
    assert client.get_experiment_by_name(EXPERIMENT) is not None


@pytest.mark.slow
def test_a_retried_airflow_task_registers_its_model_once(
    embedded: MlflowClient, pipelines: dict[str, tuple[TrainingPaths, Path]]
) -> None:
    paths, params_file = pipelines["first"]
    params = load_params(params_file)
    environ = {
        "AIRFLOW_CTX_DAG_ID": "rakuten_training",
        "AIRFLOW_CTX_DAG_RUN_ID": "scheduled__2025-01-01T00:00:00+00:00",
        "AIRFLOW_CTX_TASK_ID": "register",
        "AIRFLOW_CTX_TRY_NUMBER": "1",
    }
    first = register(embedded, paths, params, environ)
    retried = register(embedded, paths, params, {**environ, "AIRFLOW_CTX_TRY_NUMBER": "2"})
    assert first["reused"] is False and retried == {**first, "reused": True}
    tags = embedded.get_model_version(MODEL_NAME, first["version"]).tags
    assert tags["airflow_dag_id"] == "rakuten_training"
    assert tags["airflow_dag_run_id"] == "scheduled__2025-01-01T00:00:00+00:00"
    assert tags["airflow_try_number"] == "1"
    pipeline_run = embedded.get_run(first["run_id"])
    assert pipeline_run.info.run_name == "pipeline scheduled__2025-01-01T00:00:00+00:00"
    assert pipeline_run.data.tags["airflow_task_id"] == "register"
    next_run = {**environ, "AIRFLOW_CTX_DAG_RUN_ID": "manual__2025-01-02T00:00:00+00:00"}
    assert register(embedded, paths, params, next_run)["version"] == str(int(first["version"]) + 1)


@pytest.mark.slow
def test_a_champion_split_otherwise_is_not_compared_and_a_person_decides(
    embedded: MlflowClient, pipelines: dict[str, tuple[TrainingPaths, Path]], tmp_path: Path
) -> None:
    first, first_params = pipelines["first"]
    better, better_params = pipelines["better"]
    params = load_params(better_params)
    registered = register(embedded, first, load_params(first_params), {})
    assert validate(embedded, first, params.gate)["comparable"] is True  # no champion yet
    assert promote(embedded, "auto", automatic=True, by="pipeline")["promoted"] is True
    split = json.loads(
        embedded.get_model_version(MODEL_NAME, registered["version"]).tags[SPLIT_TAG]
    )
    assert split == {
        "definition_version": DEFINITION_VERSION,
        "grouping": "title",
        "salt": params.make_dataset.split_salt,
        "test_fraction": params.make_dataset.test_fraction,
        "val_fraction": params.make_dataset.val_fraction,
    }

    # The better model's data split again with another salt: the champion may have trained on
    # the new test rows, so the gate scores both there but does not compare them.
    resalted = params.make_dataset.model_copy(update={"split_salt": "another-salt"})
    paths = TrainingPaths(tmp_path / "processed", better.raw_dir, better.models_dir, tmp_path)
    make_dataset(better.raw_dir, paths.processed_dir, resalted, tmp_path / "interim", 1)
    shutil.copytree(better.reports_dir, tmp_path, dirs_exist_ok=True)
    version = register(embedded, paths, params, {})["version"]
    gated = validate(embedded, paths, params.gate)
    assert gated["decision"] == "passed" and gated["comparable"] is False
    assert "salt 'rakuten-split-v1' -> 'another-salt'" in gated["comparability"]
    assert gated["comparison"]["weighted_f1_difference"] is not None
    report = json.loads((tmp_path / "gate.json").read_text())
    assert report["champion"]["all"]["rows"] == report["challenger"]["all"]["rows"]
    asked = promote(embedded, "auto", automatic=True, by="pipeline")
    assert asked["promoted"] is False and "not comparable with champion 1" in asked["reason"]
    tags = embedded.get_model_version(MODEL_NAME, version).tags
    assert tags["gate.comparable"] == "false" and tags["approval"] == "awaiting"
    assert (
        "another-salt" in tags["approval.reason"] and "another-salt" in tags["gate.comparability"]
    )
    assert promote(embedded, "auto", version=version, by="alice")["promoted"] is True

    # A version is never gated on a split other than its own: its test rows are not there.
    with pytest.raises(RakutenError, match="trained on another split"):
        validate(embedded, first, params.gate, version=version)


def test_an_empty_registry_has_nothing_to_promote_or_roll_back(embedded: MlflowClient) -> None:
    with pytest.raises(RakutenError, match="has no @challenger"):
        promote(embedded, "auto")
    with pytest.raises(RakutenError, match="has no @champion"):
        rollback(embedded, "alice", "why not")
    assert champion_history(embedded) == []
