"""Late fusion of the branches' class probabilities, fitted on held-out predictions.

The combiner is fitted on the rows for which every branch has a held-out probability (from a
model that never trained on that row): the validation rows, each branch's model fitted on train
alone; or, when every branch is cross-fitted (`train.cross_fit`, src/models/crossfit.py), every
train + val row, each predicted by a model fitted on the other folds. Three combiners:
- `grid`: a weighted mean of the probabilities (linear pooling), weights searched on a grid over
  the simplex;
- `log_linear`: a weighted geometric mean (log-linear pooling, a multinomial logistic model on
  the branches' log-probabilities with one non-negative weight per branch), fitted by L-BFGS.
  Unlike the mean it lets a confident branch sharpen another's doubt between two types (text
  says pool or book, photo says pool or garden: pool);
- `stacked`: log-linear pooling plus, for each class, a weight offset per branch, a bias, and a
  shift per branch when that branch abstains (the missing-photo indicator), all L2-regularised
  towards 0 (so a strong penalty gives back log-linear pooling); the penalty is chosen among
  `STACKED_L2` by the same cross-validation that chooses the combiner.
All minimise the log loss (a proper score: it rewards calibrated confidence, and unlike F1 it does
not jump on a handful of rows). `auto` chooses by measurement: the lowest mean log loss over
`folds` cross-validation folds of those rows (each candidate fitted on the other folds); the
grid on a tie; with a single branch, the grid (weight 1).

A branch that abstains for a product (a NaN row: an image branch without a usable photo) is left
out of that product's mean or product, and the other branches' weights are renormalised (mean)
or stand alone (product, stacked: the abstention moves only the stacked model's class biases);
its vote is never replaced by noise.
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
COMBINERS: Final = (*COMBINE, "stacked")


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


STACKED_L2: Final = (1.0, 0.1, 0.01, 0.001)  # penalties `auto` tries for `stacked`


def stack(probabilities: Mapping[str, np.ndarray], terms: Mapping[str, Any]) -> np.ndarray:
    """The stacked combiner's probabilities: per-class weights of the branches' log-probabilities
    (0 where a branch abstains), class biases, a per-class shift for each abstaining branch."""
    rows = next(iter(probabilities.values())).shape[0]
    logits = np.tile(np.asarray(terms["bias"], dtype=float), (rows, 1))
    for name, proba in probabilities.items():
        absent = np.isnan(proba).any(axis=1, keepdims=True)
        logits += np.asarray(terms["class_weights"][name]) * _log(proba)
        logits += absent * np.asarray(terms["abstain"][name])
    logits -= logits.max(axis=1, keepdims=True)
    fused: np.ndarray = np.exp(logits)
    fused /= fused.sum(axis=1, keepdims=True)
    return fused


def fit_stacked(
    probabilities: Mapping[str, np.ndarray], codes: np.ndarray, l2: float
) -> tuple[dict[str, float], dict[str, Any], float]:
    """The stacked combiner fitted with L2 penalty `l2`: its shared branch weights, its terms
    (for `stack`) and its log loss on these rows (without the penalty)."""
    from scipy.optimize import minimize

    names = list(probabilities)
    branches, classes = len(names), len(CLASSES)
    logs = np.stack([_log(probabilities[name]) for name in names])  # branch, row, class
    absent = np.stack([np.isnan(probabilities[n]).any(axis=1) for n in names]).astype(float)
    truth = labels_index(codes)
    rows = np.arange(len(truth))

    def unpack(x: np.ndarray) -> tuple[np.ndarray, ...]:
        shared = x[:branches]
        offsets = x[branches : branches * (1 + classes)].reshape(branches, classes)
        bias = x[branches * (1 + classes) : branches * (1 + classes) + classes]
        abstain = x[branches * (1 + classes) + classes :].reshape(branches, classes)
        return shared, offsets, bias, abstain

    def fused(x: np.ndarray) -> np.ndarray:
        shared, offsets, bias, abstain = unpack(x)
        logits = np.einsum("bc,brc->rc", shared[:, None] + offsets, logs) + bias
        logits += absent.T @ abstain
        logits -= logits.max(axis=1, keepdims=True)
        proba: np.ndarray = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def loss_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        proba = fused(x)
        _, offsets, bias, abstain = unpack(x)
        loss = -np.log(np.clip(proba[rows, truth], _EPSILON, 1)).mean()
        penalty = (offsets**2).sum() + (bias**2).sum() + (abstain**2).sum()
        residual = proba
        residual[rows, truth] -= 1
        residual /= len(truth)
        per_class = np.einsum("brc,rc->bc", logs, residual)  # d loss / d (branch, class) weight
        gradient = np.concatenate(
            [
                per_class.sum(axis=1),
                (per_class + 2 * l2 * offsets).ravel(),
                residual.sum(axis=0) + 2 * l2 * bias,
                (absent @ residual + 2 * l2 * abstain).ravel(),
            ]
        )
        return float(loss + l2 * penalty), gradient

    start = np.concatenate([np.ones(branches), np.zeros(branches * classes * 2 + classes)])
    bounds = [(0.0, 10.0)] * branches + [(None, None)] * (branches * classes * 2 + classes)
    found = minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds)
    shared, offsets, bias, abstain = unpack(found.x)
    terms = {
        "l2": l2,
        "class_weights": {
            n: (shared[i] + offsets[i]).round(6).tolist() for i, n in enumerate(names)
        },
        "bias": bias.round(6).tolist(),
        "abstain": {n: abstain[i].round(6).tolist() for i, n in enumerate(names)},
    }
    weights = {name: round(float(w), 4) for name, w in zip(names, shared, strict=True)}
    return weights, terms, log_loss(stack(probabilities, terms), codes)


def _candidates() -> dict[str, tuple[str, float | None]]:
    """What `auto` cross-validates: each combiner, `stacked` once per penalty."""
    return {
        "grid": ("grid", None),
        "log_linear": ("log_linear", None),
        **{f"stacked(l2={l2:g})": ("stacked", l2) for l2 in STACKED_L2},
    }


def fit_combiner(
    combiner: str,
    probabilities: Mapping[str, np.ndarray],
    codes: np.ndarray,
    step: float,
    l2: float | None = None,
) -> tuple[dict[str, float], dict[str, Any] | None, float]:
    """One combiner (`grid`, `log_linear`, or `stacked` with penalty `l2`) fitted on these rows:
    its branch weights, the stacked terms (None for the others) and its log loss."""
    if combiner == "grid":
        return (*_with_no_terms(fit_weights(probabilities, codes, step)),)
    if combiner == "log_linear":
        return (*_with_no_terms(fit_log_linear(probabilities, codes)),)
    return fit_stacked(probabilities, codes, STACKED_L2[0] if l2 is None else l2)


def _with_no_terms(
    fitted: tuple[dict[str, float], float],
) -> tuple[dict[str, float], None, float]:
    return fitted[0], None, fitted[1]


def combine_with(
    combiner: str,
    probabilities: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    terms: Mapping[str, Any] | None,
) -> np.ndarray:
    """Fused probabilities under one fitted combiner."""
    if combiner == "stacked":
        assert terms is not None, "the stacked combiner needs its terms"
        return stack(probabilities, terms)
    return COMBINE[combiner](probabilities, weights)


def cross_validated_losses(
    probabilities: Mapping[str, np.ndarray], codes: np.ndarray, step: float, folds: int, seed: int
) -> dict[str, float]:
    """Each candidate's mean log loss on held-out folds of these rows (fitted on the others)."""
    from sklearn.model_selection import KFold

    folds = min(folds, len(codes))
    candidates = _candidates()
    losses: dict[str, list[float]] = {name: [] for name in candidates}
    for fitted, held in KFold(folds, shuffle=True, random_state=seed).split(codes):
        part = {name: proba[fitted] for name, proba in probabilities.items()}
        rest = {name: proba[held] for name, proba in probabilities.items()}
        for name, (combiner, l2) in candidates.items():
            weights, terms, _ = fit_combiner(combiner, part, codes[fitted], step, l2)
            fused = combine_with(combiner, rest, weights, terms)
            losses[name].append(log_loss(fused, codes[held]))
    return {name: float(np.mean(values)) for name, values in losses.items()}


class FusedModel:
    """The branches, the combiner and its parameters: what is packaged and served."""

    def __init__(
        self,
        branches: Mapping[str, Branch],
        weights: Mapping[str, float],
        combiner: str = "grid",
        terms: Mapping[str, Any] | None = None,
        fitted_on: Mapping[str, Any] | None = None,
    ) -> None:
        unknown = set(weights) - set(branches)
        if unknown:
            raise ValueError(f"weights for branches that are not there: {sorted(unknown)}")
        if combiner not in COMBINERS:
            raise ValueError(f"unknown combiner {combiner!r}; known: {', '.join(COMBINERS)}")
        if (combiner == "stacked") != (terms is not None):
            raise ValueError("the stacked combiner, and it alone, has per-class terms")
        self.branches = dict(branches)
        self.weights = {name: float(weights.get(name, 0.0)) for name in self.branches}
        self.combiner = combiner
        self.terms = None if terms is None else dict(terms)
        # The held-out rows the combiner was fitted on: how many, which branches cross-fitted.
        self.fitted_on = None if fitted_on is None else dict(fitted_on)

    def voting(self) -> list[str]:
        """The branches whose probabilities the combiner uses (stacked: every branch)."""
        if self.combiner == "stacked":
            return list(self.branches)
        return [name for name in self.branches if self.weights[name] > 0]

    def branch_probabilities(self, products: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each branch's probabilities (NaN rows where it abstains)."""
        return {name: branch.predict_proba(products) for name, branch in self.branches.items()}

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        """Fused probabilities, shape (len(products), 27) in `CLASSES` order."""
        return self.combine({n: self.branches[n].predict_proba(products) for n in self.voting()})

    def combine(self, probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
        """The fused probabilities of branch probabilities (those of the voting branches at
        least; a branch that does not vote is left out)."""
        voting = {n: probabilities[n] for n in self.voting()}
        return combine_with(self.combiner, voting, self.weights, self.terms)

    def save(self, directory: Path) -> None:
        """Write the combiner's parameters and every branch under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, branch in self.branches.items():
            branch.save(directory / BRANCHES_DIR / name)
        config: dict[str, Any] = {"combiner": self.combiner, "weights": self.weights}
        if self.terms is not None:
            config["stacked"] = self.terms
        if self.fitted_on is not None:
            config["fitted_on"] = self.fitted_on
        config["classes"] = CLASSES.tolist()
        (directory / FUSION_FILE).write_text(json.dumps(config, indent=2) + "\n")

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
        combiner = config.get("combiner", "grid")
        return cls(
            branches, config["weights"], combiner, config.get("stacked"), config.get("fitted_on")
        )


def choose_combiner(
    held_out: Mapping[str, np.ndarray], codes: np.ndarray, params: FusionParams
) -> tuple[str, dict[str, float], dict[str, Any] | None, dict[str, Any]]:
    """The combiner (`params.combiner`, or by cross-validation under `auto`), its weights and
    stacked terms fitted on every row, and what the choice measured."""
    losses = None
    combiner: str = params.combiner
    l2 = None
    if combiner == "auto" and len(held_out) == 1:
        combiner = "grid"  # nothing to combine: the branch's own probabilities, weight 1
    elif combiner == "auto":
        losses = cross_validated_losses(
            held_out, codes, params.weight_step, params.folds, params.seed
        )
        # The lowest loss; on a tie, the first candidate (the grid, then log-linear pooling).
        best = min(losses, key=lambda name: losses[name])
        combiner, l2 = _candidates()[best]
    weights, terms, loss = fit_combiner(combiner, held_out, codes, params.weight_step, l2)
    logger.info(
        "fusion: %s, weights %s (log loss %.4f on %d held-out rows; cross-validated %s)",
        combiner,
        weights,
        loss,
        len(codes),
        losses,
    )
    measured = {"held_out_log_loss": loss, "cross_validated_log_loss": losses}
    if terms is not None:
        measured["stacked_l2"] = terms["l2"]
    return combiner, weights, terms, measured


def fit_fusion(
    branches: Mapping[str, Branch],
    held_out: Mapping[str, np.ndarray],
    codes: np.ndarray,
    params: FusionParams,
    cross_fitted: list[str] | None = None,
) -> tuple[FusedModel, dict[str, Any]]:
    """Fuse trained branches with a combiner fitted on their held-out probabilities.

    `held_out` holds each branch's probabilities for the labelled rows `codes` from models that
    never trained on them (val rows, or out-of-fold train + val rows when every branch is in
    `cross_fitted`). Returns the fused model and what the choice measured.
    """
    combiner, weights, terms, measured = choose_combiner(held_out, codes, params)
    fitted_on = {"rows": len(codes), "cross_fitted": list(cross_fitted or [])}
    model = FusedModel(branches, weights, combiner, terms, fitted_on)
    return model, {"combiner": combiner, **measured, "fitted_on": fitted_on}
