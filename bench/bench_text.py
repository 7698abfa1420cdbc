"""Text branch speed: fit time against plain scikit-learn, and batch inference throughput.

Makes the full-size synthetic catalogue without photos (84,916 labelled + 13,812 test rows) and
its processed dataset (not timed). Then, pinned to `--cores` cores (the calibration folds fit in
one thread per core): `TfidfTextBranch.fit` with `trials: 0` (the params.yaml configuration, no
search) against the same TF-IDF + calibrated LinearSVC written out in plain scikit-learn, fitted
on the same rows, in alternating rounds; then text-only batch inference on the raw test
listings (`products_from_listings` + `predict_proba`). Also scores both, and a bare
TfidfVectorizer + LinearSVC, on the pinned test split; and times the neural text branch
(params.yaml's `text_cnn`) for `--cnn-epochs` epochs and its inference on the same listings, so
that the fused model's text-only cost is known.
Budget (issue: models): fit < 120 s and <= 1.5x plain scikit-learn; >= 2,000 products/s.
Usage: uv run python bench/bench_text.py [--rows 84916] [--test-rows 13812] [--cores 2]
       [--rounds 2] [--cnn-epochs 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from _measure import write_result
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.svm import LinearSVC

from src.config import MakeDatasetParams, TextTfidfParams, load_params
from src.data.io import read_raw_csv
from src.data.layout import X_TEST_FILE
from src.data.make_dataset import make_dataset
from src.data.synth import synthesize
from src.models.branch import CLASSES, Branch
from src.models.data import load_split, products_from_listings
from src.models.text_neural import NeuralTextBranch
from src.models.text_tfidf import TOKEN_PATTERN, TfidfTextBranch, french_stop_words

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def plain_sklearn(config: TextTfidfParams, cores: int) -> Pipeline:
    """The branch's model for one configuration, written as plain scikit-learn."""
    words: dict[str, Any] = {
        "ngram_range": (1, config.word_ngram_max),
        "token_pattern": TOKEN_PATTERN,
        "stop_words": french_stop_words(),
        "max_features": config.max_features,
        "sublinear_tf": True,
        "dtype": np.float32,
    }
    chars = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(config.char_ngram_min, config.char_ngram_max),
        max_features=config.max_features,
        sublinear_tf=True,
        dtype=np.float32,
    )
    tfidf = ColumnTransformer(
        [
            ("words", TfidfVectorizer(**words), "text"),
            ("chars", chars, "text"),
            ("designation", TfidfVectorizer(**words), "designation"),
        ],
        transformer_weights={"words": 1, "chars": 1, "designation": config.designation_weight},
    )
    svc = LinearSVC(C=config.C, random_state=config.seed)
    folds = StratifiedKFold(config.calibration_folds, shuffle=True, random_state=config.seed)
    calibrated = CalibratedClassifierCV(svc, method="sigmoid", cv=folds, n_jobs=cores)
    return Pipeline([("tfidf", tfidf), ("svc", calibrated)])


def weighted_f1(codes: pd.Series, predicted: np.ndarray) -> float:
    """The challenge metric."""
    return float(f1_score(codes, predicted, average="weighted"))


def main() -> None:
    """Time both fits and the inference, print a table, write bench/results/text.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=84_916)
    parser.add_argument("--test-rows", type=int, default=13_812)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating fits of each")
    parser.add_argument("--cnn-epochs", type=int, default=1, help="0: leave text_cnn out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
    params = load_params(PARAMS)
    config = params.text_tfidf.model_copy(update={"trials": 0, "n_jobs": args.cores})
    work = Path(tempfile.mkdtemp(prefix="bench-text-"))
    try:
        raw, processed = work / "raw", work / "processed"
        synthesize(raw, rows=args.rows, test_rows=args.test_rows, images=False, seed=0)
        make_dataset(raw, processed, MakeDatasetParams(), work / "interim")
        train, val, test = (load_split(processed, raw, s) for s in ("train", "val", "test"))
        listings = read_raw_csv(raw / X_TEST_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    fits: dict[str, list[float]] = {"branch": [], "sklearn": []}
    for _ in range(args.rounds):
        started = time.perf_counter()
        plain = plain_sklearn(config, args.cores)
        with joblib.parallel_config(backend="threading"):
            plain.fit(train[["text", "designation"]], train["prdtypecode"])
        fits["sklearn"].append(time.perf_counter() - started)
        started = time.perf_counter()
        branch = TfidfTextBranch(config)
        branch.fit(train, val)
        fits["branch"].append(time.perf_counter() - started)

    test_proba = branch.predict_proba(test)
    plain_proba = plain.predict_proba(test[["text", "designation"]])
    bare = make_pipeline(TfidfVectorizer(), LinearSVC()).fit(train["text"], train["prdtypecode"])
    quality = {
        "branch": weighted_f1(test["prdtypecode"], CLASSES[test_proba.argmax(axis=1)]),
        "sklearn": weighted_f1(test["prdtypecode"], plain.classes_[plain_proba.argmax(axis=1)]),
        "bare TfidfVectorizer + LinearSVC": weighted_f1(
            test["prdtypecode"], bare.predict(test["text"])
        ),
    }

    with tempfile.TemporaryDirectory(prefix="bench-text-model-") as saved:
        branch.save(Path(saved))
        model_mib = sum(f.stat().st_size for f in Path(saved).iterdir()) / 1024**2
    inference = _inference(branch, listings)
    best = min(inference, key=lambda run: run["clean"] + run["predict"])
    per_second = len(listings) / (best["clean"] + best["predict"])
    cnn: dict[str, Any] = {}
    if args.cnn_epochs:
        neural = NeuralTextBranch(params.text_cnn.model_copy(update={"epochs": args.cnn_epochs}))
        started = time.perf_counter()
        history = neural.fit(train, val)["history"]
        cnn["fit_seconds_per_epoch"] = (time.perf_counter() - started) / len(history)
        cnn["inference_seconds"] = _inference(neural, listings)
        cnn["products_per_second"] = len(listings) / min(
            run["clean"] + run["predict"] for run in cnn["inference_seconds"]
        )

    ratio = min(fits["branch"]) / min(fits["sklearn"])
    difference = np.abs(test_proba - _in_classes(plain, plain_proba)).max()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "| measure | value | budget |",
        "|---|---|---|",
        f"| rows (train / val / test) | {len(train)} / {len(val)} / {len(test)} | |",
        f"| branch fit, s (rounds) | {', '.join(f'{s:.1f}' for s in fits['branch'])} | < 120 |",
        f"| plain scikit-learn fit, s | {', '.join(f'{s:.1f}' for s in fits['sklearn'])} | |",
        f"| ratio (best of each) | {ratio:.2f} | <= 1.5 |",
        f"| inference, {len(listings)} listings, s | {best['clean']:.2f} clean + "
        f"{best['predict']:.2f} predict | |",
        f"| inference, products/s | {per_second:.0f} | >= 2000 |",
        *(
            [
                f"| text_cnn fit, s per epoch | {cnn['fit_seconds_per_epoch']:.1f} | |",
                f"| text_cnn inference, products/s | {cnn['products_per_second']:.0f} | |",
                "| both text branches, products/s | "
                f"{1 / (1 / per_second + 1 / cnn['products_per_second']):.0f} | |",
            ]
            if cnn
            else []
        ),
        f"| saved branch, MiB | {model_mib:.0f} | |",
        f"| peak RSS, MiB | {peak_mib:.0f} | |",
        *(f"| test weighted F1, {name} | {score:.4f} | |" for name, score in quality.items()),
        f"| largest probability difference, branch vs sklearn | {difference:.1e} | |",
    ]
    print("\n".join(lines))
    payload = {
        "cores": args.cores,
        "rows": {
            "train": len(train),
            "val": len(val),
            "test": len(test),
            "listings": len(listings),
        },
        "config": config.model_dump(mode="json"),
        "fit_seconds": fits,
        "ratio": ratio,
        "inference_seconds": inference,
        "products_per_second": per_second,
        "text_cnn": cnn,
        "saved_branch_mib": model_mib,
        "peak_rss_mib": peak_mib,
        "test_weighted_f1": quality,
        "largest_probability_difference": difference,
    }
    print(f"written to {write_result('text', payload)}")


def _inference(branch: Branch, listings: pd.DataFrame) -> list[dict[str, float]]:
    """Three timed runs of raw listings -> products -> probabilities."""
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        products = products_from_listings(listings)
        cleaned = time.perf_counter()
        branch.predict_proba(products)
        runs.append({"clean": cleaned - started, "predict": time.perf_counter() - cleaned})
    return runs


def _in_classes(pipeline: Pipeline, proba: np.ndarray) -> np.ndarray:
    """Probabilities of a pipeline's classes placed in `CLASSES` order."""
    full = np.zeros((len(proba), len(CLASSES)))
    full[:, np.searchsorted(CLASSES, pipeline.classes_)] = proba
    return full


if __name__ == "__main__":
    main()
