"""The prediction API side by side with MLflow's own model server, under the same locust loads.

Not timed: a synthetic catalogue with 500x500 photos, the branches of `--branches` trained on it
(params.yaml's configs, no search, `--epochs` for the Keras ones), their fusion, and the model's
registration as @champion in an embedded MLflow registry (or an existing registry and its raw
data: `--tracking-uri` and `--raw-dir`); a migrated SQLite store and an API key.
Both servers serve that registered model on 127.0.0.1, started at once: `rakuten serve`, and
`mlflow models serve --env-manager local` (the project environment, MLflow's default of one
worker: `--mlflow-workers`). The same headless locust loads run against each in turn, locust on
the same machine, each for `--seconds`:
- throughput: `--users` users that send requests with no wait, one product each, text only
  (both servers), then with the product's photo (`rakuten serve`: MLflow's JSON has no photo);
- latency: `--users` users that each wait 1 s between requests (about `--users` requests/s
  offered), text only (both servers).
First, on each idle server, 50 lone requests one after the other (the latency a single client
sees). Reported per run: requests/s, p50/p95/p99, failures (the API's deliberate 503s apart),
and the server's RSS (its process tree) before and after; then the ratios, the time to /ready,
and the targets of issue 16. `--seconds 10` is a smoke run; the issue's numbers are 60 s runs.
Usage: uv run python bench/bench_api.py [--seconds 60] [--users 50] [--rows 2000]
       [--branches text_tfidf,text_cnn,image_cnn] [--epochs 1] [--mlflow-workers 1]
       [--tracking-uri URI --raw-dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from _champion import make_champion
from _measure import write_result

from src.config import load_params
from src.data.io import read_raw_csv
from src.data.layout import TEST_IMAGE_DIR, X_TEST_FILE
from src.db.api_keys import create_key
from src.db.engine import make_engine
from src.db.migrate import upgrade
from src.models.data import photo_paths
from src.models.packaged import CHAMPION_URI, fused_model_dir

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
LOCUSTFILE = Path(__file__).with_name("_locust_api.py")
BIN = Path(sys.executable).parent
SECRET = secrets.token_urlsafe(48)  # the API key secret of this run only
MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its children, in MiB."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:  # a child ended between listing and reading
            continue
    return total / MIB


class Server:
    """A server process started in a session of its own (stopped with all its children)."""

    def __init__(self, name: str, command: list[str], environ: dict[str, str], ready: str) -> None:
        self.name = name
        self.ready_url = ready
        self.base_url = ready.rsplit("/", 1)[0]
        started = time.perf_counter()
        self.process = subprocess.Popen(
            command, env=environ, stderr=subprocess.DEVNULL, start_new_session=True
        )
        while True:
            try:
                with urllib.request.urlopen(ready, timeout=2):
                    break
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{name} exited before it was ready") from None
                time.sleep(0.2)
        self.startup_seconds = time.perf_counter() - started

    def rss_mib(self) -> float:
        """The server's resident memory now (its process tree)."""
        return _tree_rss_mib(self.process.pid)

    def stop(self) -> None:
        """Stop the server and every process it started."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def locust_run(
    server: Server,
    path: str,
    body: Path,
    headers: dict[str, str],
    wait_seconds: float,
    users: int,
    seconds: int,
    out: Path,
) -> dict[str, Any]:
    """One headless locust load; its requests/s, percentiles, failures and the server's RSS."""
    environ = {
        **os.environ,
        "BENCH_PATH": path,
        "BENCH_BODY_FILE": str(body),
        "BENCH_HEADERS": json.dumps(headers),
        "BENCH_WAIT_SECONDS": str(wait_seconds),
    }
    rss_before = server.rss_mib()
    command = [
        str(BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{seconds}s",
        "--host",
        server.base_url,
        "--csv",
        str(out),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "30",
    ]
    # locust exits 1 when a request failed: the CSVs say which, and that is what is reported.
    subprocess.run(command, env=environ, check=False, stdout=subprocess.DEVNULL)
    rss_after = server.rss_mib()
    with Path(f"{out}_stats.csv").open() as stats:
        total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
    with Path(f"{out}_failures.csv").open() as failures:
        errors = {row["Error"]: int(row["Occurrences"]) for row in csv.DictReader(failures)}
    overloaded = sum(n for error, n in errors.items() if "503" in error)
    return {
        "requests": int(total["Request Count"]),
        "requests_per_second": float(total["Requests/s"]),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
        "failures": int(total["Failure Count"]) - overloaded,
        "overloaded_503": overloaded,
        "errors": errors,
        "rss_before_mib": rss_before,
        "rss_after_mib": rss_after,
    }


def lone_requests(server: Server, path: str, body: Path, headers: dict[str, str]) -> dict[str, Any]:
    """p50/p95 of 50 requests sent one after the other to the idle server (5 warm-up first)."""
    request = urllib.request.Request(
        f"{server.base_url}{path}",
        data=body.read_bytes(),
        headers={"Content-Type": "application/json", **headers},
    )
    seconds = []
    for call in range(55):
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        if call >= 5:
            seconds.append(time.perf_counter() - started)
    cuts = statistics.quantiles(seconds, n=100)
    return {"p50_ms": cuts[49] * 1000, "p95_ms": cuts[94] * 1000}


def _listing(listings: Any) -> tuple[dict[str, Any], bytes]:
    """The first test listing with a photo: its text fields, and its photo's bytes."""
    row = listings.iloc[0]
    text = {"productid": int(row["productid"]), "designation": row["designation"]}
    if isinstance(row["description"], str):
        text["description"] = row["description"]
    return text, Path(row["image_path"]).read_bytes()


def _champion(args: argparse.Namespace, work: Path) -> tuple[str, Path, dict[str, float]]:
    """The registry, its raw data folder and the fusion weights (empty when not known)."""
    if args.tracking_uri is not None:
        return args.tracking_uri, args.raw_dir, {}
    base = load_params(PARAMS)
    params = base.model_copy(
        update={
            "synthetic": base.synthetic.model_copy(
                update={"rows": args.rows, "test_rows": 200, "images": True}
            ),
            "train": base.train.model_copy(update={"branches": tuple(args.branches.split(","))}),
            "text_tfidf": base.text_tfidf.model_copy(update={"trials": 0}),
            "text_cnn": base.text_cnn.model_copy(update={"epochs": args.epochs}),
            "image_cnn": base.image_cnn.model_copy(update={"epochs": args.epochs}),
        }
    )
    tracking_uri, _, paths = make_champion(work, params)
    fusion = fused_model_dir(paths.models_dir / "packaged") / "fusion.json"
    weights = json.loads(fusion.read_text())["weights"] if fusion.is_file() else {}
    return tracking_uri, paths.raw_dir, weights


def _row(load: str, server: str, run: dict[str, Any]) -> str:
    return (
        f"| {load} | {server} | {run['requests_per_second']:.1f} | {run['p50_ms']:.0f} / "
        f"{run['p95_ms']:.0f} / {run['p99_ms']:.0f} | {run['failures']} | "
        f"{run['overloaded_503']} | {run['rss_before_mib']:.0f} -> {run['rss_after_mib']:.0f} |"
    )


def main() -> None:
    """Make or reuse the champion, serve it both ways, load both; write bench/results/api.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="of each load (10: a smoke run)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rows", type=int, default=2_000, help="synthetic labelled rows")
    parser.add_argument("--branches", default="text_tfidf,text_cnn,image_cnn")
    parser.add_argument("--epochs", type=int, default=1, help="Keras branches' (speed only)")
    parser.add_argument("--mlflow-workers", type=int, default=1, help="MLflow's default: 1")
    parser.add_argument("--tracking-uri", help="reuse this registry's @champion")
    parser.add_argument("--raw-dir", type=Path, help="its raw data (test listings, photos)")
    args = parser.parse_args()
    if (args.tracking_uri is None) != (args.raw_dir is None):
        parser.error("--tracking-uri and --raw-dir go together")
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    servers: list[Server] = []
    runs: dict[str, dict[str, Any]] = {}
    try:
        tracking_uri, raw_dir, weights = _champion(args, work)
        store = f"sqlite:///{work / 'predictions.db'}"
        upgrade(store)
        engine = make_engine(store)
        key = create_key(engine, "bench", ["predict"], SECRET.encode()).key
        engine.dispose()
        listings = read_raw_csv(raw_dir / X_TEST_FILE)
        listings["image_path"] = photo_paths(listings, raw_dir / TEST_IMAGE_DIR)
        text, photo = _listing(listings[listings["image_path"].notna()])
        bodies = {
            "rakuten text": {"products": [text]},
            "rakuten photo": {"products": [{**text, "image": base64.b64encode(photo).decode()}]},
            "mlflow text": {
                "dataframe_split": {
                    "columns": ["designation", "description"],
                    "data": [[text["designation"], text.get("description", "")]],
                }
            },
        }
        files = {}
        for name, body in bodies.items():
            files[name] = work / f"{name.replace(' ', '-')}.json"
            files[name].write_text(json.dumps(body))

        rakuten_port, mlflow_port = _free_port(), _free_port()
        rakuten = Server(
            "rakuten serve",
            [str(BIN / "rakuten"), "--log-level", "WARNING", "serve", "--port", str(rakuten_port)],
            {
                **os.environ,
                "RAKUTEN_MLFLOW_TRACKING_URI": tracking_uri,
                "RAKUTEN_DATABASE_URL": store,
                "RAKUTEN_API_KEY_SECRET": SECRET,
            },
            f"http://127.0.0.1:{rakuten_port}/ready",
        )
        servers.append(rakuten)
        mlflow = Server(
            "mlflow models serve",
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                CHAMPION_URI,
                "-h",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
                "--env-manager",
                "local",
                "--workers",
                str(args.mlflow_workers),
            ],
            # It runs `uvicorn` by name: the project environment's.
            {
                **os.environ,
                "MLFLOW_TRACKING_URI": tracking_uri,
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            f"http://127.0.0.1:{mlflow_port}/ping",
        )
        servers.append(mlflow)
        api_key = {"X-API-Key": key}
        lone = {
            "rakuten serve": lone_requests(rakuten, "/predict", files["rakuten text"], api_key),
            "mlflow models serve": lone_requests(mlflow, "/invocations", files["mlflow text"], {}),
        }
        plan = [
            ("throughput, text", rakuten, "/predict", "rakuten text", api_key, 0.0),
            ("throughput, text", mlflow, "/invocations", "mlflow text", {}, 0.0),
            ("throughput, with photo", rakuten, "/predict", "rakuten photo", api_key, 0.0),
            ("latency (1 s wait), text", rakuten, "/predict", "rakuten text", api_key, 1.0),
            ("latency (1 s wait), text", mlflow, "/invocations", "mlflow text", {}, 1.0),
        ]
        for load, server, path, body, headers, wait in plan:
            label = f"{load} | {server.name}"
            out = work / label.replace(" ", "_").replace("|", "").replace(",", "")
            runs[label] = locust_run(
                server, path, files[body], headers, wait, args.users, args.seconds, out
            )
            print(_row(load, server.name, runs[label]), flush=True)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    ours = {label.split(" | ")[0]: run for label, run in runs.items() if "rakuten" in label}
    theirs = {label.split(" | ")[0]: run for label, run in runs.items() if "mlflow" in label}
    text, photo = ours["throughput, text"], ours["throughput, with photo"]
    latency = ours["latency (1 s wait), text"]
    ratios = {
        "throughput text, rakuten / mlflow": text["requests_per_second"]
        / max(theirs["throughput, text"]["requests_per_second"], 1e-9),
        "latency p95, rakuten / mlflow": latency["p95_ms"]
        / max(theirs["latency (1 s wait), text"]["p95_ms"], 1e-9),
        "photo run RSS, after / before": photo["rss_after_mib"] / photo["rss_before_mib"],
    }
    deliberate = max(r["overloaded_503"] / max(r["requests"], 1) for r in ours.values())
    targets = [
        ("text throughput >= 5 x mlflow", ratios["throughput text, rakuten / mlflow"] >= 5),
        ("photo throughput >= 40 req/s", photo["requests_per_second"] >= 40),
        ("latency load p95 < 150 ms", latency["p95_ms"] < 150),
        ("latency load without failure", latency["failures"] + latency["overloaded_503"] == 0),
        ("no failure but 503s", all(r["failures"] == 0 for r in ours.values())),
        ("503s < 1% of a run", deliberate < 0.01),
        ("photo run RSS within 20%", ratios["photo run RSS, after / before"] <= 1.2),
        ("/ready within 20 s", rakuten.startup_seconds <= 20),
    ]
    print(
        "\n| load | server | req/s | p50 / p95 / p99 ms | failures | 503s | RSS MiB before -> "
        "after |\n|---|---|---|---|---|---|---|"
    )
    for label, run in runs.items():
        load, server_name = label.split(" | ")
        print(_row(load, server_name, run))
    print(f"\nfusion weights: {weights or 'not known (existing registry)'}")
    print(
        f"start-up until ready: rakuten serve {rakuten.startup_seconds:.1f} s, "
        f"mlflow models serve {mlflow.startup_seconds:.1f} s"
    )
    for name, value in lone.items():
        print(
            f"lone requests on the idle {name}, text: p50 {value['p50_ms']:.0f} ms, "
            f"p95 {value['p95_ms']:.0f} ms"
        )
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    for name, met in targets:
        print(f"target {name}: {'met' if met else 'NOT met'}")
    payload = {
        "seconds": args.seconds,
        "users": args.users,
        "branches": args.branches.split(","),
        "fusion_weights": weights,
        "mlflow_workers": args.mlflow_workers,
        "startup_seconds": {
            "rakuten serve": rakuten.startup_seconds,
            "mlflow models serve": mlflow.startup_seconds,
        },
        "lone_requests": lone,
        "runs": runs,
        "ratios": ratios,
        "targets": dict(targets),
    }
    print(f"written to {write_result('api', payload)}")


if __name__ == "__main__":
    main()
