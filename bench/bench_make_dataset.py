"""Full-size data steps: time and peak memory (process tree) of ingest, validate, make-dataset.

The data is the synthetic catalogue at full size (84,916 labelled + 13,812 test rows, 500x500
JPEGs), made first (not timed) unless `--source` names such a folder already made. Then, timed:
`rakuten data ingest` from that local folder, `rakuten data validate`, `rakuten data make-dataset`
(which reuses validate's photo verdicts). `--cores N` pins every step to N cores with taskset.
Usage: uv run python bench/bench_make_dataset.py [--cores 2] [--source DIR] [--rows 84916]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _measure import TABLE_HEADER, asdict, measure, result_row, write_result


def main() -> None:
    """Measure the three steps, print a table and write bench/results/make_dataset.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=84_916)
    parser.add_argument("--test-rows", type=int, default=13_812)
    parser.add_argument("--cores", type=int, default=2, help="0: no pinning")
    parser.add_argument("--source", type=Path, help="An existing synthetic folder to ingest")
    args = parser.parse_args()
    rakuten = str(Path(sys.executable).parent / "rakuten")
    pin = ["taskset", "-c", f"0-{args.cores - 1}"] if args.cores else []
    work = Path(tempfile.mkdtemp(prefix="bench-make-dataset-"))
    source, raw, interim, processed = work / "source", work / "raw", work / "interim", work / "out"
    try:
        if args.source is None:
            synth = f"data synth --images --image-size 500 --seed 0 --out {source}".split()
            size_args = ["--rows", str(args.rows), "--test-rows", str(args.test_rows)]
            made = measure([rakuten, "--log-level", "WARNING", *synth, *size_args])
            if made.returncode != 0:
                raise SystemExit(f"rakuten data synth failed ({made.returncode})")
        else:
            source = args.source
        steps = {
            "ingest": f"data ingest --source {source} --out {raw}",
            "validate": f"data validate {raw} --interim-dir {interim}",
            "make-dataset": f"data make-dataset {raw} {processed} --interim-dir {interim}",
        }
        lines, runs = [TABLE_HEADER], {}
        for label, step in steps.items():
            measurement = measure([*pin, rakuten, "--log-level", "WARNING", *step.split()])
            if measurement.returncode != 0:
                raise SystemExit(f"{label} failed ({measurement.returncode})")
            runs[label] = asdict(measurement)
            lines.append(result_row(label, measurement, f"{args.cores or os.cpu_count()} cores"))
        total = sum(run["seconds"] for run in runs.values())
        peak = max(run["peak_rss_mib"] for run in runs.values())
        lines.append(f"| total | {total:8.1f} | {peak:9.0f} | | budget: 180 s, 2048 MiB |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    sizes = {"cores": args.cores, "rows": args.rows, "test_rows": args.test_rows}
    payload = {**sizes, "runs": runs, "total_seconds": total, "peak_rss_mib": peak}
    print(f"written to {write_result('make_dataset', payload)}")


if __name__ == "__main__":
    main()
