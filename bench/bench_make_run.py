"""`make run` as a newcomer meets it: a fresh clone, environments included, uv's cache warm.

Clones the repository's HEAD (committed work only) into a temporary folder and times, there:
building both environments (`make env airflow-env`: uv from its cache, plus uv itself when it is
not on PATH), the first `make run` (Airflow init, the training DAG on params.yaml's demo
defaults, the summary), and a second `make run` with nothing changed (training skipped). The
sum of the first two is what a newcomer waits. It also reads what the run left: each branch's
and the fused model's test weighted F1 and the fusion weights (every branch should weigh more
than 0). RAKUTEN_*, AIRFLOW_* and MLFLOW_* variables of the caller are not passed on: the clone
runs on its defaults. The load average is recorded: on a shared machine the times inflate.
Usage: uv run python bench/bench_make_run.py [--repo .] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _measure import machine, measure, write_result

ROOT = Path(__file__).resolve().parents[1]


def _environment() -> dict[str, str]:
    """The caller's environment without the project's, Airflow's and MLflow's settings."""
    prefixes = ("RAKUTEN_", "AIRFLOW", "MLFLOW_", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _timed(clone: Path, target: str, output: Path) -> dict[str, object]:
    """Run `make TARGET` in the clone, its output to a file; seconds, memory, status, load."""
    load_before = os.getloadavg()[0]
    command = ["bash", "-c", f"make -C {clone} {target} > {output} 2>&1"]
    result = measure(command)
    return {
        "target": target,
        "seconds": round(result.seconds, 1),
        "peak_rss_mib": round(result.peak_rss_mib),
        "returncode": result.returncode,
        "load_average_before": round(load_before, 1),
        "load_average_after": round(os.getloadavg()[0], 1),
        "output": str(output),
    }


def _left(clone: Path) -> dict[str, object]:
    """What the first run left: the test scores and the fusion weights."""
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    fusion = next((clone / "models" / "packaged").rglob("fusion.json"))
    return {
        "weighted_f1": {name: round(s["weighted_f1"], 4) for name, s in metrics.items()},
        "fusion_weights": json.loads(fusion.read_text())["weights"],
    }


def main() -> None:
    """Clone, time the three steps, print a table, write bench/results/make_run.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, default=ROOT, help="Repository to clone (its HEAD).")
    parser.add_argument("--keep", action="store_true", help="Keep the clone (its path is shown).")
    args = parser.parse_args()
    environment = _environment()  # measure() runs its commands in this process's environment
    os.environ.clear()
    os.environ.update(environment)
    work = Path(tempfile.mkdtemp(prefix="bench-make-run-"))
    clone = work / "clone"
    commit = subprocess.run(
        ["git", "-C", str(args.repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(args.repo), str(clone)], check=True)
    started = time.perf_counter()
    try:
        steps = [
            _timed(clone, "env airflow-env", work / "environments.out"),
            _timed(clone, "run", work / "run-1.out"),
        ]
        first = sum(float(str(step["seconds"])) for step in steps)
        left = _left(clone) if steps[1]["returncode"] == 0 else {}
        steps.append(_timed(clone, "run", work / "run-2.out"))
        skipped = "training skipped" in (work / "run-2.out").read_text()
    finally:
        if not args.keep:
            shutil.rmtree(clone, ignore_errors=True)
    lines = [
        f"fresh clone of {commit}, {time.perf_counter() - started:.0f} s in all; outputs in {work}",
        "| step | seconds | peak tree RSS MiB | exit | load avg before / after |",
        "|---|---|---|---|---|",
        *(
            f"| make {s['target']} | {s['seconds']} | {s['peak_rss_mib']} | {s['returncode']} | "
            f"{s['load_average_before']} / {s['load_average_after']} |"
            for s in steps
        ),
        f"| **environments + first make run** | **{first:.1f}** | | | |",
        f"second run skipped training: {skipped}",
        f"test weighted F1: {left.get('weighted_f1')}",
        f"fusion weights: {left.get('fusion_weights')}",
    ]
    print("\n".join(lines))
    payload = {
        "commit": commit,
        "machine": machine(),
        "steps": steps,
        "first_run_seconds": round(first, 1),
        "second_run_skipped": skipped,
        **left,
    }
    print(f"written to {write_result('make_run', payload)}")


if __name__ == "__main__":
    main()
