"""Full-size synthetic data: time and peak memory (process tree) of `rakuten data synth`.

Runs a 10% size and the full size, so that memory flat in N shows as equal peaks.
Usage: uv run python bench/bench_synth.py [--rows 84916] [--test-rows 13812]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _measure import TABLE_HEADER, asdict, measure, result_row, write_result


def main() -> None:
    """Measure both sizes, print a table and write bench/results/synth.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=84_916)
    parser.add_argument("--test-rows", type=int, default=13_812)
    args = parser.parse_args()
    rakuten = str(Path(sys.executable).parent / "rakuten")
    work = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    lines, runs = [TABLE_HEADER], {}
    try:
        for label, share in (("10% size", 10), ("full size", 1)):
            rows, test_rows = args.rows // share, args.test_rows // share
            out = work / f"out{share}"
            command = [rakuten, "--log-level", "WARNING", "data", "synth", "--out", str(out),
                       "--rows", str(rows), "--test-rows", str(test_rows), "--images",
                       "--image-size", "500", "--seed", "0"]  # fmt: skip
            measurement = measure(command)
            if measurement.returncode != 0:
                raise SystemExit(f"{label}: rakuten data synth failed ({measurement.returncode})")
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            shutil.rmtree(out)
            total = rows + test_rows
            runs[label] = {**asdict(measurement), "rows": total, "bytes": size}
            lines.append(result_row(label, measurement, f"{total} rows with 500x500 photos, "
                                    f"{total / measurement.seconds:.0f} rows/s, "
                                    f"{size / 1024**3:.2f} GiB"))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    print(f"written to {write_result('synth', {'runs': runs})}")


if __name__ == "__main__":
    main()
