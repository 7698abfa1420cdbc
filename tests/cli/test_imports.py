"""Steps start fast: the command line and the data steps load no ML framework nor MLflow.

Each check imports the modules in a fresh interpreter and lists what got loaded (modules, not
times: start-up times are measured by bench/bench_startup.py)."""

from __future__ import annotations

from tests.imports import loaded_by

HEAVY = ("tensorflow", "keras", "jax", "torch", "mlflow", "sklearn", "matplotlib", "optuna")
DATA_STEPS = ("src.data.synth", "src.data.ingest", "src.data.validate", "src.data.make_dataset")


def test_the_command_line_and_the_data_steps_load_no_ml_framework_nor_mlflow() -> None:
    # Every command module is imported by src.cli.main: `rakuten --help` loads exactly this.
    assert loaded_by(["src.cli.main", *DATA_STEPS], HEAVY) == set()
