"""Cross-fitting: out-of-fold probabilities of a branch over train + val, for fusion.

The labelled non-test rows are cut into folds by a hash of their split group key (the key that
keeps copies of a product in one split, src/data/split.py), so copies never straddle two folds
either. For each fold the branch is fitted on the other folds with the configuration chosen on
val (its `refit_params`: the search's best trial, or the epoch count early stopping chose) and
predicts that fold. Every train + val row then has probabilities from a model that never trained
on it, so the combiner can be fitted on all of them rather than on val's alone, and on
predictions of models of about the size of the refitted one it will combine.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from src.config import SplitGrouping
from src.data.split import group_keys, split_bucket
from src.models.branch import CLASSES, Branch

logger = logging.getLogger(__name__)


def assign_folds(
    labelled: pd.DataFrame, folds: int, grouping: SplitGrouping, salt: str
) -> np.ndarray:
    """Each row's fold in [0, folds): a hash of its group key, so a group stays in one fold and a
    product keeps its fold whatever the other rows."""
    keys = group_keys(labelled, grouping)
    return np.fromiter(
        (split_bucket(key, f"{salt}:fold") % folds for key in keys), np.int64, len(keys)
    )


def out_of_fold(
    cls: type[Branch], params: Any, labelled: pd.DataFrame, folds: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """Each row's probabilities from the branch (with `params`) fitted on the other folds, and
    what the cross-fitting did."""
    started = time.perf_counter()
    proba = np.full((len(labelled), len(CLASSES)), np.nan)
    for fold in np.unique(folds):
        held = folds == fold
        branch = cls(params)
        branch.fit(labelled[~held], labelled.iloc[:0])
        proba[held] = branch.predict_proba(labelled[held])
    done = {
        "folds": len(np.unique(folds)),
        "rows": len(labelled),
        "seconds": round(time.perf_counter() - started, 1),
    }
    logger.info("branch %s cross-fitted on train + val: %s", cls.name, done)
    return proba, done
