"""Made-up listings with their predictions, for the drift tests: a reference mix and shifts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.data.classes import PRDTYPECODES, TRAIN_COUNTS
from src.models.profile import input_features, reference_profile

# The real training class mix (DESIGN §5): 84,916 rows over 27 types.
REFERENCE = np.array([TRAIN_COUNTS[code] for code in PRDTYPECODES])
SHARES = REFERENCE / REFERENCE.sum()


def skewed_shares(types: int = 3) -> np.ndarray:
    """All products in the first `types` types, evenly."""
    shares = np.zeros_like(SHARES)
    shares[:types] = 1 / types
    return shares


def listings(
    rows: int,
    seed: int,
    shares: np.ndarray = SHARES,
    missing_description: float = 0.35,
    missing_photo: float = 0.02,
    first_productid: int = 1,
) -> pd.DataFrame:
    """Listings as received, a predicted type and its probability, and whether a photo exists."""
    rng = np.random.default_rng(seed)
    codes = np.asarray(PRDTYPECODES)[rng.choice(len(shares), size=rows, p=shares)]
    words = rng.integers(2, 15, size=rows)
    description = [
        None if rng.random() < missing_description else "<p>" + "mot " * int(n * 5) + "</p>"
        for n in words
    ]
    productid = np.arange(first_productid, first_productid + rows)
    return pd.DataFrame(
        {
            "productid": productid,
            "imageid": productid + 500_000,
            "designation": ["produit " * int(n) for n in words],
            "description": pd.Series(description, dtype=object),
            "prdtypecode": codes,
            "probability": rng.uniform(0.6, 1.0, size=rows).round(6),
            "has_photo": rng.random(rows) >= missing_photo,
        }
    )


def profile_of(frame: pd.DataFrame, length_bins: int = 10) -> dict:
    """The reference profile of listings (as training and val both)."""
    features = input_features(frame["designation"], frame["description"], frame["has_photo"])
    codes = frame["prdtypecode"].to_numpy()
    return reference_profile(features, codes, codes, frame["probability"].to_numpy(), length_bins)
