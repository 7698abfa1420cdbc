"""Late fusion of the branches' class probabilities, fitted on held-out predictions.

Two combiners, both fitted on the validation rows' probabilities from branches that never trained
on them (each branch's model fitted on train alone, before its refit on train + val):
- `grid`: a weighted mean of the probabilities (linear pooling), weights searched on a grid over
  the simplex;
- `log_linear`: a weighted geometric mean (log-linear pooling, a stacked multinomial logistic
  model on the branches' log-probabilities), one non-negative weight per branch fitted by
  L-BFGS. Unlike the mean it lets a confident branch sharpen another's doubt between two types
  (text says pool or book, photo says pool or garden: pool).
Both minimise the log loss (a proper score: it rewards calibrated confidence, and unlike F1 it
does not jump on a handful of rows). `auto` chooses between them by measurement: the lower mean
log loss over `folds` cross-validation folds of the validation rows (each combiner fitted on the
other folds), and keeps the grid on a tie; with a single branch it is the grid (weight 1).

A branch that abstains for a product (a NaN row: an image branch without a usable photo) is left
out of that product's mean or product, and the other branches' weights are renormalised (mean)
or stand alone (product); its vote is never replaced by noise.
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

from src.config import FusionParams
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


def pool(probabilities: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted geometric mean of the branches' probabilities, renormalised; abstainers left out."""
    rows = next(iter(probabilities.values())).shape[0]
    logits = np.zeros((rows, len(CLASSES)))
    weight_sum = np.zeros((rows, 1))
    for name, proba in probabilities.items():
        weight = weights.get(name, 0.0) * ~np.isnan(proba).any(axis=1, keepdims=True)
        logits += weight * _log(proba)
        weight_sum += weight
    logits -= logits.max(axis=1, keepdims=True)
    fused = np.exp(logits)
    fused /= fused.sum(axis=1, keepdims=True)
    uniform = np.full(len(CLASSES), 1 / len(CLASSES))
    return np.where(weight_sum > 0, fused, uniform)


def _log(proba: np.ndarray) -> np.ndarray:
    """Log-probabilities, 0 where the branch abstains (NaN rows)."""
    logs: np.ndarray = np.log(np.clip(np.nan_to_num(proba, nan=1.0), _EPSILON, 1))
    return logs


COMBINE: Final = {"grid": fuse, "log_linear": pool}


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


def fit_log_linear(
    probabilities: Mapping[str, np.ndarray], codes: np.ndarray
) -> tuple[dict[str, float], float]:
    """The non-negative log-linear pooling weights with the lowest log loss, and that loss."""
    from scipy.optimize import minimize

    names = list(probabilities)
    logs = np.stack([_log(probabilities[name]) for name in names])  # branch, row, class
    truth = labels_index(codes)
    rows = np.arange(len(truth))

    def loss_and_gradient(weights: np.ndarray) -> tuple[float, np.ndarray]:
        fused = pool(probabilities, dict(zip(names, weights, strict=True)))
        loss = -np.log(np.clip(fused[rows, truth], _EPSILON, 1)).mean()
        # d loss / d logit = fused - one-hot(truth); each weight scales its branch's log-probs.
        residual = fused.copy()
        residual[rows, truth] -= 1
        return float(loss), np.einsum("brc,rc->b", logs, residual) / len(truth)

    start = np.ones(len(names))
    found = minimize(
        loss_and_gradient, start, jac=True, method="L-BFGS-B", bounds=[(0.0, 10.0)] * len(names)
    )
    weights = {name: round(float(w), 4) for name, w in zip(names, found.x, strict=True)}
    return weights, log_loss(pool(probabilities, weights), codes)


def fit_combiner(
    combiner: str,
    probabilities: Mapping[str, np.ndarray],
    codes: np.ndarray,
    step: float,
) -> tuple[dict[str, float], float]:
    """Weights of one combiner (`grid` or `log_linear`) fitted on these rows, and their loss."""
    if combiner == "grid":
        return fit_weights(probabilities, codes, step)
    return fit_log_linear(probabilities, codes)


def cross_validated_losses(
    probabilities: Mapping[str, np.ndarray], codes: np.ndarray, step: float, folds: int, seed: int
) -> dict[str, float]:
    """Each combiner's mean log loss on held-out folds of these rows (fitted on the others)."""
    from sklearn.model_selection import KFold

    folds = min(folds, len(codes))
    losses: dict[str, list[float]] = {name: [] for name in COMBINE}
    for fitted, held in KFold(folds, shuffle=True, random_state=seed).split(codes):
        part = {name: proba[fitted] for name, proba in probabilities.items()}
        rest = {name: proba[held] for name, proba in probabilities.items()}
        for combiner, combine in COMBINE.items():
            weights, _ = fit_combiner(combiner, part, codes[fitted], step)
            losses[combiner].append(log_loss(combine(rest, weights), codes[held]))
    return {name: float(np.mean(values)) for name, values in losses.items()}


class FusedModel:
    """The branches, the combiner and its weights: what is packaged and served."""

    def __init__(
        self,
        branches: Mapping[str, Branch],
        weights: Mapping[str, float],
        combiner: str = "grid",
    ) -> None:
        unknown = set(weights) - set(branches)
        if unknown:
            raise ValueError(f"weights for branches that are not there: {sorted(unknown)}")
        if combiner not in COMBINE:
            raise ValueError(f"unknown combiner {combiner!r}; known: {', '.join(COMBINE)}")
        self.branches = dict(branches)
        self.weights = {name: float(weights.get(name, 0.0)) for name in self.branches}
        self.combiner = combiner

    def branch_probabilities(self, products: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each branch's probabilities (NaN rows where it abstains)."""
        return {name: branch.predict_proba(products) for name, branch in self.branches.items()}

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        """Fused probabilities, shape (len(products), 27) in `CLASSES` order."""
        voting = [name for name in self.branches if self.weights[name] > 0]
        return self.combine({n: self.branches[n].predict_proba(products) for n in voting})

    def combine(self, probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
        """The fused probabilities of branch probabilities (those of the voting branches at
        least; a branch that does not vote is left out)."""
        voting = {n: p for n, p in probabilities.items() if self.weights.get(n, 0.0) > 0}
        return COMBINE[self.combiner](voting, self.weights)

    def save(self, directory: Path) -> None:
        """Write the weights and every branch under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, branch in self.branches.items():
            branch.save(directory / BRANCHES_DIR / name)
        (directory / FUSION_FILE).write_text(
            json.dumps(
                {"combiner": self.combiner, "weights": self.weights, "classes": CLASSES.tolist()},
                indent=2,
            )
            + "\n"
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
        # Models saved before the log-linear combiner existed are weighted means.
        return cls(branches, config["weights"], config.get("combiner", "grid"))


def choose_combiner(
    held_out: Mapping[str, np.ndarray], codes: np.ndarray, params: FusionParams
) -> tuple[str, dict[str, float], dict[str, Any]]:
    """The combiner (`params.combiner`, or by cross-validation under `auto`), its weights fitted
    on every row, and what the choice measured."""
    losses = None
    combiner = params.combiner
    if combiner == "auto" and len(held_out) == 1:
        combiner = "grid"  # nothing to combine: the branch's own probabilities, weight 1
    elif combiner == "auto":
        losses = cross_validated_losses(
            held_out, codes, params.weight_step, params.folds, params.seed
        )
        combiner = "log_linear" if losses["log_linear"] < losses["grid"] else "grid"
    weights, loss = fit_combiner(combiner, held_out, codes, params.weight_step)
    logger.info(
        "fusion: %s, weights %s (validation log loss %.4f; cross-validated %s)",
        combiner,
        weights,
        loss,
        losses,
    )
    return combiner, weights, {"val_log_loss": loss, "cross_validated_log_loss": losses}


def fit_fusion(
    branches: Mapping[str, Branch],
    held_out: Mapping[str, np.ndarray],
    codes: np.ndarray,
    params: FusionParams,
) -> tuple[FusedModel, dict[str, Any]]:
    """Fuse trained branches with a combiner fitted on their held-out val probabilities.

    `held_out` holds each branch's probabilities for the validation rows `codes` from a model
    that never trained on them. Returns the fused model and what the choice measured.
    """
    combiner, weights, measured = choose_combiner(held_out, codes, params)
    return FusedModel(branches, weights, combiner), {"combiner": combiner, **measured}
