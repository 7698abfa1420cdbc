"""The registry's quick commands (changes, promote, rollback, history, card) start with MLflow
alone: no Keras or TensorFlow, no scikit-learn or matplotlib (the gate's scoring), no SQLAlchemy
(the store). Modules are checked, not times (bench/bench_startup.py measures those)."""

from __future__ import annotations

import json
import subprocess
import sys

SCORING = ("tensorflow", "keras", "jax", "torch", "sklearn", "matplotlib", "sqlalchemy", "optuna")


def test_the_lifecycle_commands_load_mlflow_but_no_scoring_stack() -> None:
    modules = ["src.cli.main", "src.registry.lifecycle", "src.registry.card"]
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {[*SCORING, 'mlflow']!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["mlflow"]
