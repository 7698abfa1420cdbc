"""Late fusion: a weighted mean of the branches' class probabilities, weights fitted on val.

A branch that abstains for a product (a NaN row: an image branch without a usable photo) is left
out of that product's mean, and the other branches' weights are renormalised; its vote is never
replaced by noise. The weights are searched on a grid over the simplex, minimising the log loss
on the validation split (a proper score: it rewards calibrated confidence, and unlike F1 it does
not jump on a handful of rows of a small validation set).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Self

import numpy as np
import pandas as pd

from src.models.branch import CLASSES, Branch, branch_class, labels_index

logger = logging.getLogger(__name__)

FUSION_FILE: Final = "fusion.json"
BRANCHES_DIR: Final = "branches"
_EPSILON: Final = 1e-12


def fuse(probabilities: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted mean of the branches' probabilities, leaving out abstaining (NaN) rows."""
    rows = next(iter(probabilities.values())).shape[0]
    total = np.zeros((rows, len(CLASSES)))
    weight_sum = np.zeros((rows, 1))
    for name, proba in probabilities.items():
        present = ~np.isnan(proba).any(axis=1, keepdims=True)
        weight = weights.get(name, 0.0) * present
        total += weight * np.nan_to_num(proba)
        weight_sum += weight
    uniform = np.full(len(CLASSES), 1 / len(CLASSES))
    # No branch voted for a row (every voter abstained or has weight 0): say nothing specific.
    return np.where(weight_sum > 0, total / np.maximum(weight_sum, _EPSILON), uniform)


def log_loss(proba: np.ndarray, codes: np.ndarray) -> float:
    """Mean negative log probability of the true class."""
    picked = proba[np.arange(len(codes)), labels_index(codes)]
    return float(-np.log(np.clip(picked, _EPSILON, 1)).mean())


def _simplex(names: list[str], step: float) -> Iterator[dict[str, float]]:
    """Every weighting of `names` on a grid of `step` whose weights sum to 1."""
    units = round(1 / step)
    for parts in itertools.product(range(units + 1), repeat=len(names) - 1):
        last = units - sum(parts)
        if last >= 0:
            yield dict(zip(names, [p / units for p in (*parts, last)], strict=True))


def fit_weights(
    probabilities: Mapping[str, np.ndarray], codes: np.ndarray, step: float
) -> tuple[dict[str, float], float]:
    """The grid weights with the lowest validation log loss, and that loss."""
    names = list(probabilities)
    best: tuple[float, dict[str, float]] | None = None
    for weights in _simplex(names, step):
        loss = log_loss(fuse(probabilities, weights), codes)
        if best is None or loss < best[0]:
            best = (loss, weights)
    assert best is not None  # the simplex always has a point
    return best[1], best[0]


class FusedModel:
    """The branches and their fusion weights: what is packaged and served."""

    def __init__(self, branches: Mapping[str, Branch], weights: Mapping[str, float]) -> None:
        unknown = set(weights) - set(branches)
        if unknown:
            raise ValueError(f"weights for branches that are not there: {sorted(unknown)}")
        self.branches = dict(branches)
        self.weights = {name: float(weights.get(name, 0.0)) for name in self.branches}

    def branch_probabilities(self, products: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each branch's probabilities (NaN rows where it abstains)."""
        return {name: branch.predict_proba(products) for name, branch in self.branches.items()}

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        """Fused probabilities, shape (len(products), 27) in `CLASSES` order."""
        voting = {name: b for name, b in self.branches.items() if self.weights[name] > 0}
        return fuse({n: b.predict_proba(products) for n, b in voting.items()}, self.weights)

    def save(self, directory: Path) -> None:
        """Write the weights and every branch under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, branch in self.branches.items():
            branch.save(directory / BRANCHES_DIR / name)
        (directory / FUSION_FILE).write_text(
            json.dumps({"weights": self.weights, "classes": CLASSES.tolist()}, indent=2) + "\n"
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a model written by `save`."""
        config: dict[str, Any] = json.loads((directory / FUSION_FILE).read_text())
        if config["classes"] != CLASSES.tolist():
            raise ValueError(f"{directory}: saved for other classes than {CLASSES.tolist()}")
        branches = {
            name: branch_class(name).load(directory / BRANCHES_DIR / name)
            for name in config["weights"]
        }
        return cls(branches, config["weights"])


def fit_fusion(branches: Mapping[str, Branch], val: pd.DataFrame, step: float) -> FusedModel:
    """Fit the fusion weights of trained branches on the validation split."""
    probabilities = {name: branch.predict_proba(val) for name, branch in branches.items()}
    codes = val["prdtypecode"].to_numpy()
    weights, loss = fit_weights(probabilities, codes, step)
    logger.info("fusion weights %s (validation log loss %.4f)", weights, loss)
    return FusedModel(branches, weights)
