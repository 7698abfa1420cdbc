"""The model steps: train branches, fuse and package them, evaluate on the pinned test split.

Each step reads the processed dataset (`make_dataset`'s output) with the raw snapshot for the
photos, and writes under `models_dir`: `branches/<name>/` (one fitted branch each), then
`packaged/` (the MLflow pyfunc model of the fused branches). Evaluation writes `reports/`.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from src.config import Params
from src.data.io import raw_version, read_raw_csv, write_json
from src.data.layout import X_TRAIN_FILE
from src.errors import RakutenError
from src.models import evaluate as evaluation
from src.models.branch import ACCELERATED, CLASSES, Branch, branch_class
from src.models.crossfit import assign_folds, out_of_fold
from src.models.data import load_split
from src.models.fusion import FusedModel, fit_fusion
from src.models.packaged import fused_model_dir, package
from src.models.profile import PROFILE_FILE, input_features, reference_profile

logger = logging.getLogger(__name__)

BRANCHES_DIR: Final = "branches"
PACKAGED_DIR: Final = "packaged"
SUMMARY_FILE: Final = "summary.json"
HELD_OUT_FILE: Final = "held_out_proba.npz"


def train_branches(
    processed_dir: Path,
    raw_dir: Path,
    models_dir: Path,
    params: Params,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Fit the named branches (default: those enabled in params) and save each one."""
    names = names or list(params.train.branches)
    neural = sorted(ACCELERATED.intersection(names))
    if neural:  # a GPU worker without its GPU stops here, before reading any data
        from src.models.devices import ensure_gpu

        ensure_gpu(", ".join(neural))
    train = load_split(processed_dir, raw_dir, "train")
    val = load_split(processed_dir, raw_dir, "val")
    labelled = pd.concat([train, val], ignore_index=True)
    summaries = {}
    for name in names:
        cls = branch_class(name)
        block = getattr(params, name, None)
        if block is None:
            raise RakutenError(f"params.yaml has no `{name}` block for branch {name}")
        logger.info("training branch %s on %d rows (%d for validation)", name, len(train), len(val))
        branch = cls(block)
        started_at = _utc_now()
        summary = {"branch": name, "raw_version": raw_version(raw_dir), **branch.fit(train, val)}
        directory = models_dir / BRANCHES_DIR / name
        # Fusion is fitted on held-out probabilities: val's from this model, which never trained
        # on val, or, cross-fitted, every train + val row's from models that never trained on it.
        rows, held_out = val, branch.predict_proba(val)
        if name in params.train.cross_fit and len(val):
            crossed = _cross_fit(cls, branch, summary, labelled, params)
            if crossed is not None:
                rows, (held_out, summary["cross_fit"]) = labelled, crossed
        if name in params.train.refit and len(val):
            branch, summary["refit"] = _refit(cls, branch, summary, labelled)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / HELD_OUT_FILE, proba=held_out, productid=rows["productid"].to_numpy())
        branch.save(directory)
        # Wall-clock bounds of the fit and save: the branch's MLflow run shows when it trained.
        summary |= {"started_at": started_at, "finished_at": _utc_now()}
        write_json(directory / SUMMARY_FILE, summary)
        summaries[name] = summary
    return summaries


def _cross_fit(
    cls: type[Branch],
    branch: Branch,
    summary: dict[str, Any],
    labelled: pd.DataFrame,
    params: Params,
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Out-of-fold probabilities of every train + val row with the configuration chosen on val
    (None where the branch cannot fit it again: its val probabilities serve)."""
    refit_params = branch.refit_params(summary)
    if refit_params is None:
        logger.info(
            "branch %s is not cross-fitted: it cannot fit its configuration again", cls.name
        )
        return None
    folds = assign_folds(
        labelled,
        params.train.cross_fit_folds,
        params.make_dataset.split_grouping,
        params.make_dataset.split_salt,
    )
    return out_of_fold(cls, refit_params, labelled, folds)


def _refit(
    cls: type[Branch], branch: Branch, summary: dict[str, Any], labelled: pd.DataFrame
) -> tuple[Branch, dict[str, Any] | None]:
    """The branch fitted again on every labelled non-test row with the configuration chosen on
    val (the branch itself where it cannot refit), and what the refit did."""
    refit_params = branch.refit_params(summary)
    if refit_params is None:
        logger.info("branch %s keeps its train-only model: it cannot refit", cls.name)
        return branch, None
    started = time.perf_counter()
    refitted = cls(refit_params)
    fitted = refitted.fit(labelled, labelled.iloc[:0])
    done = {
        "rows": len(labelled),
        "epochs": fitted.get("epochs"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    logger.info("branch %s refitted on train + val: %s", cls.name, done)
    return refitted, done


def _held_out(models_dir: Path, name: str, train: pd.DataFrame, val: pd.DataFrame) -> np.ndarray:
    """A branch's saved held-out probabilities: of val's rows, or of train + val's when it was
    cross-fitted."""
    path = models_dir / BRANCHES_DIR / name / HELD_OUT_FILE
    if not path.is_file():
        raise RakutenError(f"branch {name} has no held-out predictions: run `rakuten train`")
    val_ids = val["productid"].to_numpy()
    with np.load(path) as saved:
        ids = saved["productid"]
        labelled_ids = np.concatenate([train["productid"].to_numpy(), val_ids])
        if not (np.array_equal(ids, val_ids) or np.array_equal(ids, labelled_ids)):
            raise RakutenError(
                f"branch {name} was trained on another split: run `rakuten train --branch {name}`"
            )
        return np.asarray(saved["proba"])


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _trained(models_dir: Path, names: tuple[str, ...]) -> dict[str, Branch]:
    """Load trained branches; a missing one is an error that says how to train it."""
    branches = {}
    for name in names:
        directory = models_dir / BRANCHES_DIR / name
        if not (directory / SUMMARY_FILE).is_file():
            raise RakutenError(f"branch {name} is not trained: run `rakuten train --branch {name}`")
        branches[name] = branch_class(name).load(directory)
    return branches


def fuse_branches(
    processed_dir: Path, raw_dir: Path, models_dir: Path, params: Params
) -> dict[str, Any]:
    """Fit the combiner on the branches' held-out probabilities and package the fused model as
    an MLflow pyfunc model.

    The combiner sees the rows every branch has held-out probabilities for: every train + val
    row when every branch was cross-fitted, else the val rows (a cross-fitted branch then gives
    its out-of-fold probabilities of val).
    """
    branches = _trained(models_dir, params.train.branches)
    train = load_split(processed_dir, raw_dir, "train")
    val = load_split(processed_dir, raw_dir, "val")
    held_out = {name: _held_out(models_dir, name, train, val) for name in branches}
    cross_fitted = [name for name, proba in held_out.items() if len(proba) > len(val)]
    val_part = {name: proba[len(proba) - len(val) :] for name, proba in held_out.items()}
    if len(cross_fitted) == len(held_out):
        codes = pd.concat([train, val])["prdtypecode"].to_numpy()
    else:
        held_out, codes = val_part, val["prdtypecode"].to_numpy()
    fused, choice = fit_fusion(branches, held_out, codes, params.fusion, cross_fitted)
    package(fused, params.make_dataset.lowercase, models_dir / PACKAGED_DIR)
    # Inside the packaged model, so the profile is an artifact of every version made from it.
    # Its val predictions are the held-out ones: the refitted branches have seen val.
    profile = training_profile(
        processed_dir, raw_dir, fused.combine(val_part), params.drift.length_bins
    )
    write_json(models_dir / PACKAGED_DIR / PROFILE_FILE, profile)
    return {"weights": fused.weights, **choice, "packaged": str(models_dir / PACKAGED_DIR)}


def training_profile(
    processed_dir: Path, raw_dir: Path, val_proba: np.ndarray, length_bins: int
) -> dict[str, Any]:
    """The model's reference profile: the raw training listings, its probabilities on val."""
    train = load_split(processed_dir, raw_dir, "train")
    # Lengths and HTML of the text as received (a batch's stored inputs are raw), not cleaned.
    raw = read_raw_csv(raw_dir / X_TRAIN_FILE)
    raw.index = raw.index.astype("int64")  # read as text; row_index is the same number
    raw = raw.loc[train["row_index"]]
    features = input_features(
        raw["designation"].reset_index(drop=True),
        raw["description"].reset_index(drop=True),
        train["image"].notna().to_numpy(),
    )
    return reference_profile(
        features,
        train["prdtypecode"].to_numpy(),
        CLASSES[np.argmax(val_proba, axis=1)],
        np.max(val_proba, axis=1),
        length_bins,
    )


def evaluate_models(
    processed_dir: Path, raw_dir: Path, models_dir: Path, reports_dir: Path
) -> dict[str, Any]:
    """Score each branch and the fused model on the pinned test split; write `reports_dir`."""
    fused = _load_fused(models_dir)
    test = load_split(processed_dir, raw_dir, "test")
    probabilities = fused.branch_probabilities(test)
    probabilities["fused"] = fused.predict_proba(test)
    report = evaluation.write_report(test["prdtypecode"].to_numpy(), probabilities, reports_dir)
    headline = {
        name: {k: scores[k] for k in ("weighted_f1", "macro_f1", "accuracy", "coverage")}
        for name, scores in report.items()
    }
    logger.info("test scores: %s", json.dumps(headline))
    return {
        "raw_version": raw_version(raw_dir),
        "rows": len(test),
        "scores": headline,
        "report": str(reports_dir / evaluation.METRICS_FILE),
    }


def _load_fused(models_dir: Path) -> FusedModel:
    """The fused model inside the packaged pyfunc model."""
    directory = fused_model_dir(models_dir / PACKAGED_DIR)
    if not directory.is_dir():
        raise RakutenError(f"no packaged model in {models_dir / PACKAGED_DIR}: run `rakuten fuse`")
    return FusedModel.load(directory)
