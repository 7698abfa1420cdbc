"""The drift check of a day's batch: time of `rakuten monitor drift`'s step on 13,812 rows.

Makes (not timed) a synthetic catalogue, text only: its train rows give a reference profile,
registered with a version in an embedded MLflow registry (SQLite); its 13,812 test rows, with
made-up predictions, are stored as the champion's batch of a day in a SQLite store. Then, in a
worker process pinned to `--cores` cores, times `src.monitoring.loop.drift` (read the batch from
the store, download the profile from MLflow, look for the photos, score, write the report and
the store row; no Pushgateway) and the pure scoring (`check_drift`) alone, best of `--repeat`.
Usage: uv run python bench/bench_drift.py [--rows 13812] [--cores 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _measure import TABLE_HEADER, asdict, measure, result_row, write_result

DAY = date(2026, 3, 1)


def _setup(root: Path, rows: int) -> dict[str, str]:
    """A store holding the day's batch and a registry whose champion carries a profile."""
    import numpy as np

    from src.data.classes import PRDTYPECODES
    from src.data.io import read_raw_csv
    from src.data.layout import X_TEST_FILE, X_TRAIN_FILE, Y_TRAIN_FILE
    from src.data.synth import synthesize
    from src.db.engine import make_engine
    from src.db.migrate import upgrade
    from src.db.store import ModelRef, store_batch
    from src.models.packaged import MODEL_NAME
    from src.models.profile import PROFILE_FILE, input_features, reference_profile
    from src.registry.tracking import experiment_id, tracking_client

    raw = root / "raw"
    synthesize(raw, rows=5000, test_rows=rows, images=False, seed=1)
    train = read_raw_csv(raw / X_TRAIN_FILE)
    labels = read_raw_csv(raw / Y_TRAIN_FILE)["prdtypecode"].astype(int).to_numpy()
    features = input_features(train["designation"], train["description"], np.ones(len(train)))
    rng = np.random.default_rng(0)
    profile = reference_profile(features, labels, labels, rng.uniform(0.5, 1, len(labels)), 10)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = tracking_client(uri)
    experiment = experiment_id(client)
    run_id = client.create_run(experiment).info.run_id
    model = client.create_logged_model(experiment, name="model", source_run_id=run_id)
    (root / "model").mkdir()
    (root / "model" / PROFILE_FILE).write_text(json.dumps(profile))
    client.log_model_artifacts(model.model_id, str(root / "model"))
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(
        MODEL_NAME, source=f"models:/{model.model_id}", run_id=run_id, model_id=model.model_id
    ).version
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    store = f"sqlite:///{root / 'predictions.db'}"
    upgrade(store)
    listings = read_raw_csv(raw / X_TEST_FILE)
    codes = np.array(PRDTYPECODES)[rng.integers(0, len(PRDTYPECODES), len(listings))]
    store_batch(
        make_engine(store),
        listings.assign(
            prdtypecode=codes,
            probability=rng.uniform(0.3, 1, len(listings)).round(6),
            top3=[[{"prdtypecode": int(c)}] for c in codes],
        ),
        model=ModelRef(MODEL_NAME, str(version), "champion", run_id),
        dataset_version="bench",
        logical_date=DAY,
    )
    return {"tracking": uri, "store": store, "raw": str(raw)}


def worker(root: Path, urls: dict[str, str], repeat: int, out: Path) -> None:
    """Time the drift step and the pure scoring, best of `repeat`."""
    from src.config import Params
    from src.db.engine import make_engine
    from src.db.monitoring import day_batch
    from src.models.batch_predict import batch_image_dirs
    from src.models.profile import input_features
    from src.monitoring.drift import check_drift
    from src.monitoring.loop import drift, photos_present
    from src.registry.reference import reference_profile
    from src.registry.tracking import tracking_client

    params = Params()
    engine = make_engine(urls["store"])
    client = tracking_client(urls["tracking"])
    dirs = batch_image_dirs(Path(urls["raw"]), root / "incoming")
    step, scoring = [], []
    summary: dict = {}
    for _ in range(repeat):
        start = time.perf_counter()
        summary = drift(
            DAY,
            "champion",
            engine=engine,
            client=client,
            params=params,
            reports_dir=root / "reports",
            image_dirs=dirs,
        )
        step.append(time.perf_counter() - start)
        batch = day_batch(engine, DAY, "champion")
        profile = reference_profile(client, batch.model.name, batch.model.version)
        frame = batch.frame
        start = time.perf_counter()
        features = input_features(
            frame["designation"], frame["description"], photos_present(frame, dirs)
        )
        check_drift(profile, frame, features, params.drift)
        scoring.append(time.perf_counter() - start)
    out.write_text(
        json.dumps(
            {
                "rows": summary["rows"],
                "verdict": summary["verdict"],
                "step": step,
                "scoring": scoring,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=13_812)
    parser.add_argument("--cores", type=int, default=2, help="0: no pinning")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        root, urls, out = args.worker
        worker(Path(root), json.loads(urls), args.repeat, Path(out))
        return
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        urls = _setup(root, args.rows)
        out = root / "times.json"
        pin = ["taskset", "-c", f"0-{args.cores - 1}"] if args.cores else []
        command = [*pin, sys.executable, __file__, "--repeat", str(args.repeat), "--worker"]
        measurement = measure([*command, str(root), json.dumps(urls), str(out)])
        if measurement.returncode != 0:
            raise SystemExit(f"the drift worker failed ({measurement.returncode})")
        times = json.loads(out.read_text())
    lines = [
        TABLE_HEADER,
        result_row("worker (imports, setup, all repeats)", measurement),
        f"| drift step, best of {args.repeat} | {min(times['step']):8.2f} | | | "
        f"{times['rows']} rows, verdict {times['verdict']} |",
        f"| scoring only (features + check_drift) | {min(times['scoring']):8.2f} | | | |",
    ]
    print("\n".join(lines))
    path = write_result(
        "drift",
        {
            "rows": times["rows"],
            "cores": args.cores,
            "step_seconds": times["step"],
            "scoring_seconds": times["scoring"],
            "worker": asdict(measurement),
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
