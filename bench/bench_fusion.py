"""Fusion before and after issue 18: weighted F1 on the pinned test split and training time.

Variants (`--variants`, default all), each with `fusion.combiner: auto` but `before`:
- `before`: the branches fitted on train alone, fusion weights searched on the grid (the
  pipeline until issue 18: `train.refit: []`, `fusion.combiner: grid`);
- `refit`: text_tfidf refitted on train + val, no cross-fitting: the combiner is fitted on the
  val rows' probabilities from the models fitted on train alone;
- `refit_both`: both branches refitted, none cross-fitted (what `cross_fit` adds to the refit);
- `cross_fit_text`: text_tfidf cross-fitted and refitted, image_cnn not: the combiner is still
  fitted on the val rows, text_tfidf's out-of-fold probabilities there;
- `cross_fit`: both branches cross-fitted (`train.cross_fit_folds` folds over train + val) and
  refitted: the combiner is fitted on every train + val row's out-of-fold probabilities.
All on the same processed dataset (the copy-aware pinned split), with a plain TF-IDF +
LinearSVC fitted on every non-test row for reference. Each variant reports every candidate
combiner's cross-validated log loss.
Datasets: `sample`, the 357-row real sample (`../shared/data/rakuten_sample`; text_tfidf and
image_cnn, as tests/models/test_train.py); `synthetic`, `--rows` synthetic products with 48 px
photos (text_tfidf without search and image_cnn, as the 20,000-row test fixture), `--copies`
of them listed again under new productids. Also records, from the quality report, how many test
listings have a copy (same normalised title) in train when split by productid and as configured
(`--split-only`: only that).
Usage: uv run python bench/bench_fusion.py --data sample|synthetic [--rows 20000] [--copies 0]
       [--split-only] [--variants before refit refit_both
       cross_fit_text cross_fit]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from _measure import write_result

from src.config import MakeDatasetParams, Params
from src.data.make_dataset import make_dataset
from src.data.synth import synthesize
from src.models.train import evaluate_models, fuse_branches, train_branches
from tests.baselines import plain_tfidf_linearsvc

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "rakuten_sample"
FAST_IMAGE = {"image_size": 48, "epochs": 6, "batch_size": 64, "augment": False}
BOTH = ["text_tfidf", "image_cnn"]
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "before": {"train": {"refit": [], "cross_fit": []}, "fusion": {"combiner": "grid"}},
    "refit": {"train": {"refit": ["text_tfidf"], "cross_fit": []}},
    "refit_both": {"train": {"refit": BOTH, "cross_fit": []}},
    "cross_fit_text": {"train": {"refit": ["text_tfidf"], "cross_fit": ["text_tfidf"]}},
    "cross_fit": {"train": {"refit": BOTH, "cross_fit": BOTH}},
}


def _params(blocks: dict[str, dict[str, Any]]) -> Params:
    base = Params().model_dump()
    return Params.model_validate({**base, **{k: {**base[k], **v} for k, v in blocks.items()}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["sample", "synthetic"], required=True)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--copies", type=float, default=0.0)
    parser.add_argument("--split-only", action="store_true")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fusion-"))
    if args.data == "sample":
        raw = SAMPLE
        image = {**FAST_IMAGE, "epochs": 2, "image_size": 32}
        text: dict[str, Any] = {}
    else:
        raw = tmp / "raw"
        synthesize(raw, rows=args.rows, test_rows=200, image_size=48, seed=4, copies=args.copies)
        image, text = FAST_IMAGE, {"trials": 0}
    processed = tmp / "processed"
    make_dataset(raw, processed, MakeDatasetParams(), tmp / "interim")
    report = json.loads((processed / "quality_report.json").read_text())["split"]
    results: dict[str, Any] = {
        "split_rows": report["rows"],
        "test_with_copy_in_train": report["test_with_copy_in_train"],
    }
    for name in [] if args.split_only else args.variants:
        blocks = VARIANTS[name]
        params = _params(
            {
                "train": {"branches": ["text_tfidf", "image_cnn"], **blocks.get("train", {})},
                "text_tfidf": text,
                "image_cnn": image,
                **{k: v for k, v in blocks.items() if k != "train"},
            }
        )
        models = tmp / name / "models"
        started = time.perf_counter()
        train_branches(processed, raw, models, params)
        fusion = fuse_branches(processed, raw, models, params)
        seconds = time.perf_counter() - started
        scores = evaluate_models(processed, raw, models, tmp / name / "reports")["scores"]
        results[name] = {
            "train_and_fuse_seconds": round(seconds, 1),
            "combiner": fusion["combiner"],
            "weights": fusion["weights"],
            "cross_validated_log_loss": fusion["cross_validated_log_loss"],
            "fitted_on": fusion["fitted_on"],
            "weighted_f1": {k: round(v["weighted_f1"], 4) for k, v in scores.items()},
        }
    if not args.split_only:
        results["plain_tfidf_linearsvc"] = round(plain_tfidf_linearsvc(processed), 4)
    rows = None if args.data == "sample" else args.rows
    payload = {"data": args.data, "rows": rows, "copies": args.copies, **results}
    print(json.dumps(payload, indent=2))
    write_result(f"bench_fusion_{args.data}{'_split' if args.split_only else ''}", payload)


if __name__ == "__main__":
    main()
