"""Where the time of one API-sized model call goes: the registered pyfunc model's `predict` on
one listing (text only, then with its 500x500 photo) and on 64, under cProfile.

Not timed: making the champion (as bench_api.py does, or an existing registry with
`--tracking-uri`). `--all-vote` gives every branch an equal fusion weight first, so that the
Keras branches' costs show even where the fitted weights leave them out.
Usage: uv run python bench/profile_scoring.py [--tracking-uri sqlite:///…/mlflow.db]
       [--rows 1500] [--calls 200] [--all-vote] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from _champion import make_champion

from src.config import load_params
from src.data.io import read_raw_csv
from src.data.layout import TEST_IMAGE_DIR, X_TEST_FILE
from src.models.data import photo_paths
from src.models.packaged import CHAMPION_URI, load
from src.registry.tracking import tracking_client

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _inputs(listings: pd.DataFrame, photos: bool) -> pd.DataFrame:
    """The pyfunc model's input columns, the photo as bytes (what the API passes)."""
    return pd.DataFrame(
        {
            "designation": listings["designation"].tolist(),
            "description": listings["description"].fillna("").tolist(),
            "image": pd.Series(
                [Path(p).read_bytes() if photos else None for p in listings["image_path"]],
                dtype=object,
            ),
        }
    )


def main() -> None:
    """Profile the champion's predict on API-sized inputs; print ms per call and the profile."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracking-uri", help="an existing registry with a @champion")
    parser.add_argument("--raw-dir", type=Path, help="its raw data (test listings and photos)")
    parser.add_argument("--rows", type=int, default=1_500)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--all-vote", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.tracking_uri is None:
        base = load_params(PARAMS)
        params = base.model_copy(
            update={
                "synthetic": base.synthetic.model_copy(update={"rows": args.rows}),
                "text_tfidf": base.text_tfidf.model_copy(update={"trials": 0}),
                "text_cnn": base.text_cnn.model_copy(update={"epochs": 1}),
                "image_cnn": base.image_cnn.model_copy(update={"epochs": 1}),
            }
        )
        uri, _, paths = make_champion(Path(tempfile.mkdtemp(prefix="profile-")), params)
        raw_dir = paths.raw_dir
    else:
        uri, raw_dir = args.tracking_uri, args.raw_dir
        tracking_client(uri)
    model = load(CHAMPION_URI, uri)
    fused: Any = model.unwrap_python_model()._model
    if args.all_vote:
        fused.weights = {name: 1 / len(fused.weights) for name in fused.weights}
    print(f"fusion weights: {fused.weights}")
    listings = read_raw_csv(raw_dir / X_TEST_FILE)
    listings["image_path"] = photo_paths(listings, raw_dir / TEST_IMAGE_DIR)
    listings = listings[listings["image_path"].notna()].head(64).reset_index(drop=True)
    cases = {
        "1 listing, text only": _inputs(listings.head(1), photos=False),
        "1 listing with its photo": _inputs(listings.head(1), photos=True),
        "64 listings with photos": _inputs(listings, photos=True),
    }
    for case, inputs in cases.items():
        for _ in range(5):  # warm-up: first calls trace the Keras graphs
            model.predict(inputs)
        calls = args.calls if len(inputs) == 1 else max(args.calls // 10, 5)
        seconds = []
        profiler = cProfile.Profile()
        for _ in range(calls):
            started = time.perf_counter()
            profiler.enable()
            model.predict(inputs)
            profiler.disable()
            seconds.append(time.perf_counter() - started)
        print(f"\n## {case}: median {statistics.median(seconds) * 1000:.1f} ms per call")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
