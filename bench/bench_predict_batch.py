"""Batch prediction: scoring and storing the 13,812-row test set, text only, into PostgreSQL.

Not timed: the full-size synthetic catalogue without photos (84,916 labelled + 13,812 test rows),
its processed dataset, the text branches of `--branches` (params.yaml's configs, no search),
their fusion and packaging, and the model's registration as @champion in an embedded MLflow
registry. Timed, on `--cores` cores: `predict_batch` (read the listings, `unscored`, load the
model from the registry, score, store in one transaction, write the Parquet file) into a new
PostgreSQL database, then the same day again (a rerun replaces the batch); and the packaged
model's `score` alone on the same listings (the fused text-only inference rate).
Budget (issues: batch predictions, models): predict-batch < 30 s; >= 2,000 products/s scored.
Usage: uv run python bench/bench_predict_batch.py [--rows 84916] [--test-rows 13812]
       [--branches text_tfidf,text_cnn] [--cnn-epochs 2] [--cores 2]
       [--server postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import psycopg
from _champion import make_champion
from _measure import write_result
from psycopg import sql
from sqlalchemy import make_url

from src.config import load_params
from src.data.io import read_raw_csv
from src.data.layout import X_TEST_FILE
from src.db.engine import make_engine
from src.db.migrate import upgrade
from src.models.batch_predict import predict_batch
from src.models.packaged import MODEL_NAME, load
from src.models.predict import model_inputs, score
from src.registry.lifecycle import CHAMPION, model_ref
from src.registry.tracking import tracking_client

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
DAY = date(2026, 3, 1)


def main() -> None:
    """Make the champion, time predict-batch and scoring; write bench/results/predict_batch.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=84_916)
    parser.add_argument("--test-rows", type=int, default=13_812)
    parser.add_argument("--branches", default="text_tfidf,text_cnn", help="text branches, a,b")
    parser.add_argument("--cnn-epochs", type=int, default=2, help="text_cnn's (speed, not quality)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
    base = load_params(PARAMS)
    params = base.model_copy(
        update={
            "synthetic": base.synthetic.model_copy(
                update={"rows": args.rows, "test_rows": args.test_rows, "images": False}
            ),
            "train": base.train.model_copy(update={"branches": args.branches.split(",")}),
            "text_tfidf": base.text_tfidf.model_copy(update={"trials": 0}),
            "text_cnn": base.text_cnn.model_copy(update={"epochs": args.cnn_epochs}),
        }
    )
    server = make_url(args.server)
    database = f"rakuten_bench_{uuid.uuid4().hex[:8]}"
    dsn = f"host={server.host} port={server.port or 5432} user={server.username} dbname=postgres"
    work = Path(tempfile.mkdtemp(prefix="bench-predict-batch-"))
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        tracking_uri, version, paths = make_champion(work, params)
        client = tracking_client(tracking_uri)
        store = server.set(database=database).render_as_string(hide_password=False)
        upgrade(store)
        engine = make_engine(store)

        runs: dict[str, float] = {}
        summaries = []
        for run in ("predict-batch, empty store", "predict-batch again (replace)"):
            started = time.perf_counter()
            summaries.append(
                predict_batch(
                    DAY,
                    model=model_ref(client, CHAMPION),
                    raw_dir=paths.raw_dir,
                    incoming_dir=None,
                    predictions_dir=work / "predictions",
                    engine=engine,
                    tracking_uri=tracking_uri,
                )
            )
            runs[run] = time.perf_counter() - started
        engine.dispose()

        listings = read_raw_csv(paths.raw_dir / X_TEST_FILE)
        started = time.perf_counter()
        model = load(f"models:/{MODEL_NAME}/{version}", tracking_uri)
        loading = time.perf_counter() - started
        inputs = model_inputs(listings, None)
        scoring = []
        for _ in range(3):
            started = time.perf_counter()
            score(model, inputs, 2048)
            scoring.append(time.perf_counter() - started)
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            connection.execute(drop.format(sql.Identifier(database)))
        shutil.rmtree(work, ignore_errors=True)

    rows = summaries[0]["predictions"]
    per_second = len(listings) / min(scoring)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "| measure | value | budget |",
        "|---|---|---|",
        f"| branches | {args.branches} | |",
        *(
            f"| {run}, {rows} rows, s | {seconds:.1f} ({rows / seconds:.0f} rows/s) | < 30 |"
            for run, seconds in runs.items()
        ),
        f"| model load from the registry, s | {loading:.1f} | |",
        f"| scoring alone, s (3 runs) | {', '.join(f'{s:.2f}' for s in scoring)} | |",
        f"| fused text-only inference, products/s | {per_second:.0f} | >= 2000 |",
        f"| peak RSS, MiB | {peak_mib:.0f} | |",
    ]
    print("\n".join(lines))
    payload = {
        "cores": args.cores,
        "branches": args.branches.split(","),
        "rows": rows,
        "runs_seconds": runs,
        "model_load_seconds": loading,
        "scoring_seconds": scoring,
        "products_per_second": per_second,
        "peak_rss_mib": peak_mib,
        "summaries": summaries,
    }
    print(f"written to {write_result('predict_batch', payload)}")


if __name__ == "__main__":
    main()
