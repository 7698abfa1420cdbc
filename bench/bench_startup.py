"""Fixed start-up cost of each `rakuten` step: how long a step takes before it does any work.

Runs each step that neither trains nor scores on tiny inputs (a 60-row synthetic catalogue, an
empty MLflow registry, a new SQLite store), where the run is almost all start-up, plus each
command's `--help`; for the steps that train or score, it times importing the modules they
use. Each is run `--repeats` times (median kept); one more run under `-X importtime` names the
three packages that cost the most to import (the culprits). Prints a table and writes
bench/results/startup.json.
Usage: uv run python bench/bench_startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _measure import asdict, measure, write_result

# Modules a training or scoring step imports before its work (its start cost, measured apart).
SCORING_STEPS = {
    "train / fuse / evaluate": ["src.cli.main", "src.models.train"],
    "model register": ["src.cli.main", "src.registry.lifecycle", "src.models.train"],
    "model validate": ["src.cli.main", "src.registry.lifecycle", "src.registry.gate"],
    "predict-batch": ["src.cli.main", "src.registry.lifecycle", "src.models.batch_predict"],
    "serve": ["src.cli.main", "src.serving.app"],
}
HEAVY = ("tensorflow", "keras", "mlflow", "sklearn", "matplotlib", "sqlalchemy", "pandera")
RUN_RAKUTEN = "import sys; from src.cli.main import run; sys.argv[0] = 'rakuten'; run()"
IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)")


def culprits(stderr: str, top: int = 3) -> list[tuple[str, float]]:
    """The top-level packages with the largest cumulative import time, from `-X importtime`."""
    found: dict[str, float] = {}
    for match in IMPORT_LINE.finditer(stderr):
        cumulative, indent, name = match.groups()
        if len(indent) == 1:  # imported by the program itself, not by another module
            package = name.split(".")[0]
            found[package] = max(found.get(package, 0.0), int(cumulative) / 1e6)
    return sorted(found.items(), key=lambda item: -item[1])[:top]


def steps(rakuten: str, work: Path) -> dict[str, list[str]]:
    """The quick steps, in an order where each finds what the previous one made."""
    catalogue, raw, processed = work / "catalogue", work / "raw", work / "processed"
    python = sys.executable
    quick = {
        "rakuten --help": [rakuten, "--help"],
        "data synth --help": [rakuten, "data", "synth", "--help"],
        "train --help": [rakuten, "train", "--help"],
        "model validate --help": [rakuten, "model", "validate", "--help"],
        "data synth (60 rows)": [rakuten, "data", "synth", "--out", str(catalogue), "--rows",
                                 "60", "--test-rows", "10", "--no-images", "--workers", "1",
                                 "--overwrite"],
        "data ingest": [rakuten, "data", "ingest", "--source", str(catalogue), "--out", str(raw)],
        "data validate": [rakuten, "data", "validate", str(raw), "--interim-dir",
                          str(work / "interim"), "--workers", "1"],
        "data make-dataset": [rakuten, "data", "make-dataset", str(raw), str(processed)],
        "db upgrade": [rakuten, "db", "upgrade"],
        "model changes": [rakuten, "model", "changes", "--raw", str(raw)],
        "model history": [rakuten, "model", "history"],
    }  # fmt: skip
    for label, modules in SCORING_STEPS.items():
        script = "import importlib\n" + "".join(
            f"importlib.import_module({m!r})\n" for m in modules
        )
        quick[f"{label} (imports)"] = [python, "-c", script]
    return quick


def loaded(modules: list[str]) -> list[str]:
    """Which of the heavy packages importing `modules` loads."""
    script = (
        "import importlib, json, sys\n"
        + "".join(f"importlib.import_module({m!r})\n" for m in modules)
        + f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    """Time every step's start, print a table and write bench/results/startup.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rakuten = str(Path(sys.executable).parent / "rakuten")
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        work = Path(folder)
        environ = {
            **os.environ,
            "RAKUTEN_LOG_LEVEL": "WARNING",
            "RAKUTEN_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns' / 'mlflow.db'}",
            "RAKUTEN_DATABASE_URL": f"sqlite:///{work / 'predictions.db'}",
            "RAKUTEN_DATA_ROOT": str(work),
        }
        os.environ.update(environ)  # measure() runs commands in this environment
        # The first registry command creates MLflow's tables (seconds of migrations): not start-up.
        subprocess.run([rakuten, "model", "history"], check=True, capture_output=True)
        for label, command in steps(rakuten, work).items():
            runs = []
            for _ in range(args.repeats):
                measurement = measure(command)
                if measurement.returncode != 0:
                    raise SystemExit(f"{label}: {command} failed ({measurement.returncode})")
                runs.append(measurement)
            profile = [sys.executable, "-X", "importtime"]
            if command[0] == sys.executable:
                profile += command[1:]
            else:  # `rakuten ARGS` as `python -c` so that -X importtime applies
                profile += ["-c", RUN_RAKUTEN, *command[1:]]
            profiled = subprocess.run(profile, capture_output=True, text=True, check=False)
            seconds = statistics.median(m.seconds for m in runs)
            results[label] = {
                "seconds_median": seconds,
                "seconds": [m.seconds for m in runs],
                "peak_rss_mib": max(m.peak_rss_mib for m in runs),
                "culprits": culprits(profiled.stderr),
                "runs": [asdict(m) for m in runs],
            }
            print(f"{label}: {seconds:.1f} s", file=sys.stderr, flush=True)
    for label, modules in SCORING_STEPS.items():
        results[f"{label} (imports)"]["loads"] = loaded(modules)
    print("| step | median s | runs s | peak MiB | largest imports (s, cumulative) |")
    print("|---|---|---|---|---|")
    for label, row in results.items():
        runs_text = ", ".join(f"{s:.1f}" for s in row["seconds"])  # type: ignore[attr-defined]
        top = ", ".join(f"{name} {s:.1f}" for name, s in row["culprits"])  # type: ignore[attr-defined]
        print(
            f"| {label} | {row['seconds_median']:.1f} | {runs_text} | "
            f"{row['peak_rss_mib']:.0f} | {top} |"
        )
    path = write_result("startup", {"repeats": args.repeats, "steps": results})
    print(f"\nwritten to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
