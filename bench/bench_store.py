"""The store's write path: time and peak memory of recording the 13,812-row test set.

Makes the synthetic test set, text only (`rakuten data synth`, not timed), and made-up model
output for it (the packaged model's columns: prdtypecode, probability, top3 as JSON). Then, in a
worker process pinned to `--cores` cores, times on a new PostgreSQL database (and on SQLite, for
comparison): `store_batch` into an empty store, the same batch again (a rerun replaces it), and
`unscored` for the next day. Scoring and storing together: bench/bench_predict_batch.py.
Usage: uv run python bench/bench_store.py [--rows 13812] [--cores 2] [--server postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from _measure import TABLE_HEADER, asdict, measure, result_row, write_result
from psycopg import sql
from sqlalchemy import make_url

DAY = date(2026, 3, 1)


def _predictions(listings_csv: Path, seed: int = 0) -> pd.DataFrame:
    """Listings as received plus made-up output in the packaged model's columns."""
    from src.data.classes import CLASS_NAMES, PRDTYPECODES
    from src.data.io import read_raw_csv

    listings = read_raw_csv(listings_csv)
    codes = np.array(PRDTYPECODES)
    proba = np.random.default_rng(seed).dirichlet(np.full(len(codes), 0.3), size=len(listings))
    top = np.argsort(-proba, axis=1)[:, :3]
    listings["prdtypecode"] = codes[top[:, 0]]
    listings["probability"] = proba[np.arange(len(proba)), top[:, 0]]
    listings["top3"] = [
        json.dumps(
            [
                {
                    "prdtypecode": int(codes[i]),
                    "label": CLASS_NAMES[int(codes[i])],
                    "probability": round(float(row[i]), 6),
                }
                for i in picks
            ]
        )
        for row, picks in zip(proba, top, strict=True)
    ]
    return listings


def worker(urls: list[str], listings_csv: Path, out: Path) -> None:
    """Time the store's steps on each URL (already migrated) and write them as JSON."""
    from src.db.engine import make_engine
    from src.db.store import ModelRef, store_batch, unscored

    predictions = _predictions(listings_csv)
    model = ModelRef("rakuten-product-classifier", "1", "champion")
    timings: dict[str, dict[str, float]] = {}
    for url in urls:
        engine = make_engine(url)
        steps: dict[str, float] = {}
        for step in ("store, empty store", "store again (replace)", "unscored, next day"):
            start = time.perf_counter()
            if step.startswith("unscored"):
                left = unscored(engine, predictions, model, date(2026, 3, 2))
                assert left.empty, "every listing was scored"
            else:
                store_batch(
                    engine,
                    predictions,
                    model=model,
                    dataset_version="bench",
                    logical_date=DAY,
                    predictions_dir=out.parent / "predictions",
                )
            steps[step] = time.perf_counter() - start
        engine.dispose()
        timings[engine.dialect.name] = steps
    out.write_text(json.dumps(timings))


def main() -> None:
    """Measure the steps on PostgreSQL and SQLite, print a table, write bench/results/store.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=13_812)
    parser.add_argument("--cores", type=int, default=2, help="0: no pinning")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        urls, listings, out = args.worker
        worker(urls.split(","), Path(listings), Path(out))
        return

    from src.db.migrate import upgrade

    rakuten = str(Path(sys.executable).parent / "rakuten")
    pin = ["taskset", "-c", f"0-{args.cores - 1}"] if args.cores else []
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    server = make_url(args.server)
    database = f"rakuten_bench_{uuid.uuid4().hex[:8]}"
    dsn = f"host={server.host} port={server.port or 5432} user={server.username} dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        size = ["--rows", "27", "--test-rows", str(args.rows), "--no-images", "--seed", "0"]
        synth = [rakuten, "--log-level", "WARNING", "data", "synth", "--out", str(work / "raw")]
        subprocess.run([*synth, *size], check=True, stdout=subprocess.DEVNULL)
        urls = [
            server.set(database=database).render_as_string(hide_password=False),
            f"sqlite:///{work / 'predictions.db'}",
        ]
        for url in urls:
            upgrade(url)
        timings = work / "timings.json"
        listings = work / "raw" / "X_test_update.csv"
        command = [*pin, sys.executable, __file__, "--worker", ",".join(urls), str(listings),
                   str(timings)]  # fmt: skip
        measurement = measure(command)
        if measurement.returncode != 0:
            raise SystemExit(f"the store worker failed ({measurement.returncode})")
        steps = json.loads(timings.read_text())
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            connection.execute(drop.format(sql.Identifier(database)))
        shutil.rmtree(work, ignore_errors=True)

    lines = [TABLE_HEADER, result_row("worker (all steps, both stores)", measurement)]
    lines += ["", "| store | step | seconds | rows/s |", "|---|---|---|---|"]
    for backend, timed in steps.items():
        for step, seconds in timed.items():
            lines.append(f"| {backend} | {step} | {seconds:.2f} | {args.rows / seconds:,.0f} |")
    print("\n".join(lines))
    payload = {
        "rows": args.rows,
        "cores": args.cores,
        "worker": asdict(measurement),
        "steps": steps,
    }
    print(f"written to {write_result('store', payload)}")


if __name__ == "__main__":
    main()
