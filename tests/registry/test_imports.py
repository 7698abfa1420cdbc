"""The registry's quick commands (changes, promote, rollback, history, card) start with MLflow
alone: no Keras or TensorFlow, no scikit-learn or matplotlib (the gate's scoring), no SQLAlchemy
(the store). Modules are checked, not times (bench/bench_startup.py measures those)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.imports import loaded_by

SCORING = ("tensorflow", "keras", "jax", "torch", "sklearn", "matplotlib", "sqlalchemy", "optuna")
CHECKED = [*SCORING, "mlflow"]
# Runs the command line, then says at exit (after typer's SystemExit too) which of CHECKED it
# loaded: the modules a command imports inside its function count as well as the top-level ones.
RUN_AND_LIST = (
    "import atexit, json, sys\n"
    f"loaded = lambda: sorted(m for m in {CHECKED!r} if m in sys.modules)\n"
    "atexit.register(lambda: print(json.dumps(loaded())))\n"
    "from src.cli.main import run\n"
    "sys.argv = ['rakuten', *sys.argv[1:]]\n"
    "run()\n"
)


def test_the_lifecycle_modules_load_mlflow_but_no_scoring_stack() -> None:
    modules = ["src.cli.main", "src.registry.lifecycle", "src.registry.card"]
    assert loaded_by(modules, CHECKED) == {"mlflow"}


@pytest.mark.parametrize("command", [["model", "history"], ["model", "changes", "--raw", "raw"]])
def test_the_quick_model_commands_run_with_mlflow_alone(command: list[str], tmp_path: Path) -> None:
    # `model changes` once imported the run summary for a file name, and with it scikit-learn and
    # matplotlib: 2 s more before it read the registry.
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "X_train_update.csv").write_text(",designation\n0,a\n", encoding="utf-8")
    env = {
        **os.environ,
        "RAKUTEN_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RAKUTEN_REPORTS_DIR": str(tmp_path / "reports"),
        "RAKUTEN_PARAMS_FILE": str(Path(__file__).parents[2] / "params.yaml"),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST, *command],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode in (0, 99), done.stderr  # 99: nothing changed, training skipped
    # SQLAlchemy here is MLflow's own, reading its SQLite registry.
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["mlflow", "sqlalchemy"]
