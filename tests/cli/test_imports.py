"""Steps start fast: the command line and the data steps load no ML framework nor MLflow.

Each check imports the modules in a fresh interpreter and lists what got loaded (modules, not
times: start-up times are measured by bench/bench_startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tensorflow", "keras", "jax", "torch", "mlflow", "sklearn", "matplotlib", "optuna")
DATA_STEPS = ("src.data.synth", "src.data.ingest", "src.data.validate", "src.data.make_dataset")


def loaded_by(*modules: str) -> set[str]:
    """The top-level packages of HEAVY that importing `modules` loads in a new interpreter."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_command_line_and_the_data_steps_load_no_ml_framework_nor_mlflow() -> None:
    # Every command module is imported by src.cli.main: `rakuten --help` loads exactly this.
    assert loaded_by("src.cli.main", *DATA_STEPS) == set()
