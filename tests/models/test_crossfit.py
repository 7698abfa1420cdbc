"""Cross-fitting: copy-aware folds, and out-of-fold probabilities from models that never saw
their rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from src.models.branch import CLASSES, Branch, labels_index
from src.models.crossfit import assign_folds, out_of_fold


def _listings(titles: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "productid": np.arange(len(titles)),
            "designation": titles,
            "description": [""] * len(titles),
            "prdtypecode": CLASSES[np.arange(len(titles)) % len(CLASSES)],
        }
    )


def test_copies_share_a_fold_and_a_product_keeps_its_fold() -> None:
    titles = [f"produit {i}" for i in range(200)]
    titles += ["Produit 7!", "PRODUIT  12", "produit 150"]  # copies of earlier listings
    labelled = _listings(titles)
    folds = assign_folds(labelled, 5, "title", "salt")
    assert set(folds) == set(range(5))
    assert folds[200] == folds[7] and folds[201] == folds[12] and folds[202] == folds[150]
    # Another set of rows around them: the same products keep their folds.
    again = assign_folds(labelled.iloc[100:], 5, "title", "salt")
    np.testing.assert_array_equal(again, folds[100:])
    assert not np.array_equal(assign_folds(labelled, 5, "title", "other salt"), folds)


class _Memory(Branch):
    """Remembers the products it was fitted on; answers the truth for them, uniform otherwise,
    and abstains where it has no photo (products with an odd id)."""

    name = "memory"
    modality = "text"

    def fit(self, train: pd.DataFrame, val: pd.DataFrame) -> dict[str, Any]:
        self.seen = dict(zip(train["productid"], train["prdtypecode"], strict=True))
        return {}

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        proba = np.full((len(products), len(CLASSES)), 1 / len(CLASSES))
        for row, productid in enumerate(products["productid"]):
            if productid in self.seen:
                proba[row] = np.eye(len(CLASSES))[labels_index([self.seen[productid]])[0]]
        proba[products["productid"].to_numpy() % 2 == 1] = np.nan
        return proba

    # Cross-fitting never saves nor loads its fold models: doing so fails the test.
    def save(self, directory: Path) -> None:
        raise AssertionError(f"a fold model was saved to {directory}")

    @classmethod
    def load(cls, directory: Path) -> Self:
        raise AssertionError(f"a fold model was loaded from {directory}")


def test_every_row_is_predicted_by_a_model_that_never_trained_on_it() -> None:
    labelled = _listings([f"produit {i}" for i in range(120)])
    folds = assign_folds(labelled, 4, "title", "salt")
    proba, done = out_of_fold(_Memory, None, labelled, folds)
    assert done["folds"] == 4 and done["rows"] == 120
    even = labelled["productid"].to_numpy() % 2 == 0
    # A model that had seen a row would answer it with certainty: none did.
    np.testing.assert_allclose(proba[even], 1 / len(CLASSES))
    assert np.isnan(proba[~even]).all()  # abstentions are kept as such
