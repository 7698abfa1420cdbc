"""The prediction API: start-up, /predict latency and throughput of `rakuten serve` over HTTP.

Not timed: a synthetic catalogue with 500x500 photos, the branches of `--branches` trained on it
(params.yaml's configs, no search, short schedules), their fusion, and the model's registration
as @champion in an embedded MLflow registry; a migrated SQLite store.
Timed, with the server pinned to `--cores` cores and the clients on the others where there are
any: the start-up until /ready (process start, imports, model load); `--requests` sequential
calls of one product without a photo, one with its photo, and 32 products with photos; then
`--clients` concurrent clients sending one product with a photo for `--seconds`.
Budget (the serving design): one product p95 < 100 ms without a photo, < 200 ms with one.
Usage: uv run python bench/bench_api.py [--rows 5000] [--branches text_tfidf,image_cnn]
       [--requests 200] [--clients 4] [--seconds 15] [--cores 2]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from _champion import make_champion
from _measure import write_result

from src.config import load_params
from src.data.io import read_raw_csv
from src.data.layout import TEST_IMAGE_DIR, X_TEST_FILE
from src.db.migrate import upgrade
from src.models.data import photo_paths

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _post(url: str, body: bytes) -> float:
    """Seconds to get a 200 for one /predict call."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/predict answered {response.status}")
    return time.perf_counter() - started


def _percentiles(seconds: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(seconds, n=100)
    return {"p50_ms": cuts[49] * 1000, "p95_ms": cuts[94] * 1000, "p99_ms": cuts[98] * 1000}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _products(listings: Any, photos: bool) -> list[dict[str, Any]]:
    products = []
    for _, row in listings.iterrows():
        product: dict[str, Any] = {
            "productid": int(row["productid"]),
            "designation": row["designation"],
        }
        if isinstance(row["description"], str):
            product["description"] = row["description"]
        if photos:
            product["image"] = base64.b64encode(Path(row["image_path"]).read_bytes()).decode()
        products.append(product)
    return products


def main() -> None:
    """Make the champion, serve it, time the calls; write bench/results/api.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--branches", default="text_tfidf,image_cnn", help="branches, a,b")
    parser.add_argument(
        "--epochs", type=int, default=1, help="Keras branches' (speed, not quality)"
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = load_params(PARAMS)
    params = base.model_copy(
        update={
            "synthetic": base.synthetic.model_copy(
                update={"rows": args.rows, "test_rows": args.test_rows, "images": True}
            ),
            "train": base.train.model_copy(update={"branches": tuple(args.branches.split(","))}),
            "text_tfidf": base.text_tfidf.model_copy(update={"trials": 0}),
            "text_cnn": base.text_cnn.model_copy(update={"epochs": args.epochs}),
            "image_cnn": base.image_cnn.model_copy(update={"epochs": args.epochs}),
        }
    )
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server = None
    try:
        tracking_uri, version, paths = make_champion(work, params)
        store = f"sqlite:///{work / 'predictions.db'}"
        upgrade(store)
        listings = read_raw_csv(paths.raw_dir / X_TEST_FILE)
        listings["image_path"] = photo_paths(listings, paths.raw_dir / TEST_IMAGE_DIR)
        listings = listings[listings["image_path"].notna()].head(64)

        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cores = sorted(os.sched_getaffinity(0))
        command = [
            "taskset",
            "--cpu-list",
            ",".join(map(str, cores[: args.cores])),
            str(Path(sys.executable).parent / "rakuten"),
            "--log-level",
            "WARNING",
            "serve",
            "--port",
            str(port),
        ]
        environ = {
            **os.environ,
            "RAKUTEN_MLFLOW_TRACKING_URI": tracking_uri,
            "RAKUTEN_DATABASE_URL": store,
        }
        started = time.perf_counter()
        server = subprocess.Popen(command, env=environ, stderr=subprocess.DEVNULL)
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=2):
                    break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError("rakuten serve exited before it was ready") from None
                time.sleep(0.2)
        startup = time.perf_counter() - started

        text = _products(listings.head(1), photos=False)
        photo = _products(listings.head(1), photos=True)
        batch = _products(listings.head(32), photos=True)
        cases = {
            "1 product, text only": json.dumps({"products": text}).encode(),
            "1 product with its photo": json.dumps({"products": photo}).encode(),
            "32 products with photos": json.dumps({"products": batch}).encode(),
        }
        latencies: dict[str, dict[str, float]] = {}
        for case, body in cases.items():
            count = args.requests if case.startswith("1 ") else max(args.requests // 10, 10)
            for _ in range(5):  # warm-up: first calls build the model's graphs
                _post(f"{url}/predict", body)
            seconds = [_post(f"{url}/predict", body) for _ in range(count)]
            latencies[case] = {"requests": count, **_percentiles(seconds)}

        body = cases["1 product with its photo"]
        deadline = time.perf_counter() + args.seconds

        def client(_: int) -> int:
            done = 0
            while time.perf_counter() < deadline:
                _post(f"{url}/predict", body)
                done += 1
            return done

        with ThreadPoolExecutor(args.clients) as pool:
            calls = sum(pool.map(client, range(args.clients)))
        throughput = calls / args.seconds
        rss_mib = psutil.Process(server.pid).memory_info().rss / 1024**2
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "| measure | value | budget |",
        "|---|---|---|",
        f"| branches | {args.branches} (model v{version}) | |",
        f"| start-up until /ready, s | {startup:.1f} | |",
        *(
            f"| {case}: p50 / p95 / p99, ms | {v['p50_ms']:.0f} / {v['p95_ms']:.0f} / "
            f"{v['p99_ms']:.0f} | {'< 100 (p95)' if 'text' in case else ''}"
            f"{'< 200 (p95)' if case == '1 product with its photo' else ''} |"
            for case, v in latencies.items()
        ),
        f"| {args.clients} concurrent clients, 1 product with photo, requests/s | "
        f"{throughput:.1f} | |",
        f"| server RSS after the run, MiB | {rss_mib:.0f} | |",
    ]
    print("\n".join(lines))
    payload = {
        "cores": args.cores,
        "branches": args.branches.split(","),
        "rows": args.rows,
        "startup_seconds": startup,
        "latencies": latencies,
        "clients": args.clients,
        "requests_per_second": throughput,
        "server_rss_mib": rss_mib,
    }
    print(f"written to {write_result('api', payload)}")


if __name__ == "__main__":
    main()
