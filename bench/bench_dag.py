"""The training DAG's overhead: its end-to-end wall time against its CLI steps run by hand.

Both run the same `rakuten` commands on the same synthetic catalogue and parameters, each from a
fresh state (data folder, embedded MLflow, SQLite store): by hand, one command after the other;
then `make run` (`airflow dags test rakuten_training`, in process, on the embedded defaults),
whose own set-up (`make airflow-init`: store and Airflow migrations) is timed apart and taken off.
Budget (issue: Airflow): DAG <= 1.3x the sum of the CLI steps.
Usage: uv run python bench/bench_dag.py [--rows 2000] [--test-rows 500] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from _measure import write_result

ROOT = Path(__file__).resolve().parents[1]
RAKUTEN = str(Path(sys.executable).parent / "rakuten")
BRANCHES = ["text_tfidf", "text_cnn"]


def _params(rows: int, test_rows: int) -> dict[str, object]:
    return {
        "synthetic": {"rows": rows, "test_rows": test_rows, "images": False, "seed": 0},
        "train": {"branches": BRANCHES, "seed": 0},
        "text_tfidf": {"trials": 0},
        "text_cnn": {"epochs": 2},
        "gate": {"min_weighted_f1": 0.0},
    }


def _settings(root: Path) -> dict[str, str]:
    """A fresh embedded deployment under `root`."""
    root.mkdir(parents=True)
    params = root / "params.yaml"
    return {
        "RAKUTEN_DATA_SOURCE": "synthetic",
        "RAKUTEN_DATA_ROOT": str(root / "data"),
        "RAKUTEN_MODELS_DIR": str(root / "models"),
        "RAKUTEN_REPORTS_DIR": str(root / "reports"),
        "RAKUTEN_PARAMS_FILE": str(params),
        "RAKUTEN_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        "RAKUTEN_DATABASE_URL": f"sqlite:///{root / 'predictions.db'}",
    }


def _run(command: list[str], settings: dict[str, str]) -> float:
    """Run a command with the deployment's settings; its wall time."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAKUTEN_")}
    started = time.perf_counter()
    subprocess.run(
        command, env={**environment, **settings}, cwd=ROOT, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def by_hand(root: Path, params: dict[str, object]) -> dict[str, float]:
    """The DAG's commands, one after the other: seconds per step."""
    settings = _settings(root)
    Path(settings["RAKUTEN_PARAMS_FILE"]).write_text(yaml.safe_dump(params))
    _run([RAKUTEN, "db", "upgrade"], settings)  # deploy time, as make airflow-init
    run_params = root / "data" / "runs" / "bench" / "params.yaml"
    data = root / "data"
    steps = {
        "params write": ["params", "write", "--out", str(run_params)],
        "ingest": ["data", "ingest"],
        "validate": ["data", "validate", str(data / "raw"), "--interim-dir", str(data / "interim")],
        "make_dataset": [
            "data",
            "make-dataset",
            str(data / "raw"),
            str(data / "processed"),
            "--interim-dir",
            str(data / "interim"),
        ],
        "changes": ["model", "changes"],
        **{f"train {name}": ["train", "--branch", name] for name in BRANCHES},
        "fuse": ["fuse"],
        "evaluate": ["evaluate"],
        "register": ["model", "register"],
        "gate": ["model", "validate", "--no-fail"],
        "promote": ["model", "promote", "--auto", "--skip-failed"],
        "batch_predict": ["predict-batch", "--date", datetime.now(UTC).date().isoformat()],
    }
    seconds = {}
    for step, arguments in steps.items():
        # The run's own parameters, as the DAG's tasks get them, once `params write` made them.
        step_settings = settings if step == "params write" else {
            **settings, "RAKUTEN_PARAMS_FILE": str(run_params)
        }  # fmt: skip
        seconds[step] = _run([RAKUTEN, *arguments], step_settings)
    return seconds


def by_dag(root: Path, params: dict[str, object]) -> dict[str, float]:
    """`make run` on a fresh deployment: its set-up and the DAG run, in seconds."""
    settings = _settings(root)
    Path(settings["RAKUTEN_PARAMS_FILE"]).write_text(yaml.safe_dump(params))
    settings["AIRFLOW_HOME"] = str(root / "airflow")
    make = ["make", "-s", "--no-print-directory"]
    _run([*make, "airflow-init"], settings)  # builds nothing new; migrates both databases
    setup = _run([*make, "airflow-init"], settings)  # what make run repeats before the DAG
    total = _run([*make, "run"], settings)
    return {"make run": total, "airflow-init (in make run)": setup, "DAG run": total - setup}


def main() -> None:
    """Time both ways, print a table, write bench/results/dag.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of each")
    args = parser.parse_args()
    params = _params(args.rows, args.test_rows)
    work = Path(tempfile.mkdtemp(prefix="bench-dag-"))
    hand: list[dict[str, float]] = []
    dag: list[dict[str, float]] = []
    try:
        for round_ in range(args.rounds):
            hand.append(by_hand(work / f"hand-{round_}", params))
            dag.append(by_dag(work / f"dag-{round_}", params))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    hand_total = min(sum(steps.values()) for steps in hand)
    dag_total = min(run["DAG run"] for run in dag)
    ratio = dag_total / hand_total
    lines = [
        "| step (by hand) | seconds |",
        "|---|---|",
        *(f"| {step} | {seconds:.1f} |" for step, seconds in hand[0].items()),
        f"| **sum of the CLI steps** | **{hand_total:.1f}** |",
        f"| make run (DAG run + its airflow-init) | {dag[0]['make run']:.1f} |",
        f"| airflow-init | {dag[0]['airflow-init (in make run)']:.1f} |",
        f"| **DAG run (airflow dags test)** | **{dag_total:.1f}** |",
        f"| ratio DAG / CLI (budget <= 1.3) | {ratio:.2f} |",
    ]
    print("\n".join(lines))
    payload = {"rows": args.rows, "test_rows": args.test_rows, "branches": BRANCHES,
               "by_hand": hand, "by_dag": dag, "ratio": ratio}  # fmt: skip
    print(f"written to {write_result('dag', payload)}")


if __name__ == "__main__":
    main()
