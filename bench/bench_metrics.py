"""What pushing metrics costs a step: `rakuten data validate` with, without, a dead Pushgateway.

Makes a synthetic catalogue and ingests it (not timed), starts a real Pushgateway (Debian's
`prometheus-pushgateway`, free port), then runs `rakuten data validate` as a process, `--repeats`
times each: without RAKUTEN_PUSHGATEWAY_URL, with the gateway, with a closed port (refused), and
with a socket that accepts but never answers (the 2 s timeout). It also times the push alone,
in process (the validate step's metrics, `--pushes` times), since a few milliseconds disappear in
the noise of a whole process's run time.
Usage: uv run python bench/bench_metrics.py [--rows 20000] [--repeats 3] [--pushes 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _measure import TABLE_HEADER, asdict, measure, result_row, write_result

ROOT = Path(__file__).resolve().parents[1]
RAKUTEN = str(ROOT / ".venv" / "bin" / "rakuten")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _gateway(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real Pushgateway on a free port (metrics kept in `root`), once it is ready."""
    port = _free_port()
    process = subprocess.Popen(
        [
            shutil.which("prometheus-pushgateway") or "prometheus-pushgateway",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={root / 'pushgateway.metrics'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
            return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the Pushgateway did not start")


def _push_seconds(url: str, summary: dict[str, object], pushes: int) -> list[float]:
    """Seconds per push of the validate step's metrics, in process (failed pushes too)."""
    from src.monitoring.metrics import RECORDERS, StepMetrics
    from src.monitoring.push import push

    times = []
    for _ in range(pushes):
        metrics = StepMetrics(os.environ)
        RECORDERS["validate"](metrics, summary, time.time())
        start = time.perf_counter()
        push(url, "bench_validate", {}, metrics)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=50)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source, raw = root / "source", root / "raw"
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAKUTEN_")}
        base |= {"RAKUTEN_DATA_ROOT": str(root / "data"), "RAKUTEN_PARAMS_FILE": "params.yaml"}
        subprocess.run(
            [RAKUTEN, "data", "synth", "--out", str(source), "--rows", str(arguments.rows),
             "--test-rows", "2000", "--no-images"],
            env=base, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        subprocess.run(
            [RAKUTEN, "data", "ingest", "--source", str(source), "--out", str(raw)],
            env=base, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        gateway, url = _gateway(root)
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # accepts connections, never answers
        configurations = {
            "no Pushgateway (URL unset)": None,
            "Pushgateway up": url,
            "Pushgateway unreachable (port closed)": f"http://127.0.0.1:{_free_port()}",
            "Pushgateway silent (never answers)": f"http://127.0.0.1:{silent.getsockname()[1]}",
        }
        command = [RAKUTEN, "data", "validate", str(raw), "--interim-dir", str(root / "interim")]
        rows: dict[str, list[dict[str, object]]] = {}
        lines = [TABLE_HEADER]
        try:
            subprocess.run(command, env=base, check=True, cwd=ROOT, capture_output=True)  # warm
            for label, gateway_url in configurations.items():
                env = base | ({"RAKUTEN_PUSHGATEWAY_URL": gateway_url} if gateway_url else {})
                os.environ.clear()
                os.environ.update(env)
                runs = [measure(command) for _ in range(arguments.repeats)]
                rows[label] = [asdict(run) for run in runs]
                best = min(runs, key=lambda run: run.seconds)
                median = statistics.median(run.seconds for run in runs)
                lines.append(result_row(label, best, f"median {median:.2f} s"))
            summary = json.loads(
                subprocess.run(command, env=base, check=True, cwd=ROOT, capture_output=True).stdout
            )
            pushes = _push_seconds(url, summary, arguments.pushes)
            failed = {
                label: _push_seconds(gateway_url, summary, 3)
                for label, gateway_url in list(configurations.items())[2:]
            }
        finally:
            gateway.kill()
            silent.close()
    step = statistics.median(r["seconds"] for r in rows["no Pushgateway (URL unset)"])  # type: ignore[misc]
    push_median = statistics.median(pushes)
    print(TABLE_HEADER.split("\n")[0].replace("seconds", "seconds (best)"))
    print("\n".join(lines[1:]))
    print(
        f"\npush alone (validate's {len(json.dumps(summary))}-byte summary as metrics): "
        f"median {push_median * 1000:.1f} ms, max {max(pushes) * 1000:.1f} ms over {len(pushes)}"
        f" pushes = {push_median / step:.3%} of the step's median {step:.2f} s"
    )
    for label, times in failed.items():
        print(f"push alone, {label}: max {max(times):.3f} s over {len(times)} pushes")
    path = write_result(
        "bench_metrics",
        {
            "rows": arguments.rows,
            "runs": rows,
            "push_seconds": pushes,
            "failed_push_seconds": failed,
            "step_seconds": step,
        },
    )
    print(f"written: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
