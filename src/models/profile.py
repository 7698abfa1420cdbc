"""The reference profile a model carries: its training data and its predictions on val.

`rakuten fuse` writes it as `reference_profile.json` inside the packaged model, and `rakuten model
register` logs it with the model (`log_packaged`), so it is an artifact of every registered
version made from it: any champion carries its own reference, and the drift check
(src/monitoring/drift.py) compares a day's batch with it.
It holds the class distribution of the training labels, the model's predicted-type distribution
and mean confidence on val (from the held-out val probabilities of branches fitted on train alone:
a branch refitted on train + val has seen those rows), quantile bins of the raw designation and
description lengths (with the training counts per bin), and the rates of missing descriptions,
missing photos and HTML.
Pure: frames and arrays in, a JSON-ready dict out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from src.data.classes import PRDTYPECODES
from src.features.text import contains_html

PROFILE_FILE: Final = "reference_profile.json"
PROFILE_VERSION: Final = 1
LENGTH_FEATURES: Final = ("designation", "description")
RATE_FEATURES: Final = ("missing_description", "missing_photo", "html")


def input_features(
    designation: pd.Series, description: pd.Series, has_photo: Sequence[bool] | np.ndarray
) -> pd.DataFrame:
    """Per raw listing: designation and description length (NaN if no description), flags.

    The same definitions serve the reference (training rows) and a batch (stored inputs).
    """
    present = description.notna() & (description.astype("string").str.len() > 0)
    html = contains_html(designation) | contains_html(description.where(present))
    return pd.DataFrame(
        {
            "designation": designation.astype("string").str.len().astype("float64").to_numpy(),
            "description": description.astype("string")
            .str.len()
            .astype("float64")
            .where(present)
            .to_numpy(),
            "missing_description": (~present).to_numpy(),
            "missing_photo": ~np.asarray(has_photo, dtype=bool),
            "html": html.to_numpy(),
        }
    )


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner edges of `bins` quantile bins of `values` (NaN left out), duplicates merged."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return []
    inner = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(edge) for edge in np.unique(inner)]


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """How many of `values` (NaN left out) fall in each bin: (-inf, e0], (e0, e1], ... (en, inf)."""
    values = values[~np.isnan(values)]
    positions = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    return np.bincount(positions, minlength=len(edges) + 1)


def code_counts(codes: np.ndarray) -> np.ndarray:
    """How many of `codes` are each of the 27 product types, in PRDTYPECODES order."""
    index = {code: i for i, code in enumerate(PRDTYPECODES)}
    positions = np.fromiter((index[int(c)] for c in codes), dtype=np.int64, count=len(codes))
    return np.bincount(positions, minlength=len(PRDTYPECODES))


def reference_profile(
    train_inputs: pd.DataFrame,
    train_labels: np.ndarray,
    val_codes: np.ndarray,
    val_confidence: np.ndarray,
    length_bins: int,
) -> dict[str, Any]:
    """The profile of a model: `train_inputs` from `input_features`, val predictions and their
    top probability."""
    lengths = {}
    for feature in LENGTH_FEATURES:
        values = train_inputs[feature].to_numpy(dtype=np.float64)
        edges = quantile_edges(values, length_bins)
        lengths[feature] = {"edges": edges, "counts": bin_counts(values, edges).tolist()}
    return {
        "version": PROFILE_VERSION,
        "prdtypecodes": list(PRDTYPECODES),
        "train_rows": len(train_inputs),
        "val_rows": len(val_codes),
        "label_counts": code_counts(train_labels).tolist(),
        "predicted_counts": code_counts(val_codes).tolist(),
        "mean_confidence": float(np.mean(val_confidence)) if len(val_confidence) else None,
        "lengths": lengths,
        "rates": {f: float(train_inputs[f].mean()) for f in RATE_FEATURES},
    }
