"""Late fusion: abstaining branches are left out, weights come from held-out predictions, the
combiner is chosen by cross-validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.config import FusionParams
from src.models.branch import CLASSES, labels_index
from src.models.fusion import (
    _simplex,
    choose_combiner,
    cross_validated_losses,
    fit_log_linear,
    fit_weights,
    fuse,
    log_loss,
    pool,
)

K = len(CLASSES)


def _one_hot(codes: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    proba = np.full((len(codes), K), (1 - confidence) / (K - 1))
    proba[np.arange(len(codes)), labels_index(codes)] = confidence
    return proba


def test_an_abstaining_branch_is_left_out_not_replaced() -> None:
    text = _one_hot(np.array([10, 40]))
    image = _one_hot(np.array([2583, 2583]))
    image[0] = np.nan  # no photo for the first product
    fused = fuse({"text": text, "image": image}, {"text": 0.5, "image": 0.5})
    np.testing.assert_allclose(fused[0], text[0])  # only the text votes
    np.testing.assert_allclose(fused[1], (text[1] + image[1]) / 2)
    np.testing.assert_allclose(fused.sum(axis=1), 1)


def test_a_product_nobody_voted_for_gets_the_uniform_distribution() -> None:
    image = np.full((1, K), np.nan)
    fused = fuse({"image": image, "text": _one_hot(np.array([10]))}, {"image": 1.0, "text": 0.0})
    np.testing.assert_allclose(fused, np.full((1, K), 1 / K))


@pytest.mark.parametrize(("branches", "step"), [(1, 0.1), (2, 0.1), (3, 0.05)])
def test_the_grid_covers_the_simplex(branches: int, step: float) -> None:
    names = [f"b{i}" for i in range(branches)]
    points = list(_simplex(names, step))
    units = round(1 / step)
    assert len(points) == math.comb(units + branches - 1, branches - 1)
    assert all(math.isclose(sum(p.values()), 1) for p in points)
    assert len({tuple(p.values()) for p in points}) == len(points)


def test_weights_go_to_the_informative_branch() -> None:
    rng = np.random.default_rng(0)
    codes = rng.choice(CLASSES, 400)
    informative = _one_hot(codes, 0.7)
    noise = rng.dirichlet(np.ones(K), 400)
    weights, loss = fit_weights({"text": informative, "noise": noise}, codes, 0.05)
    assert weights["text"] >= 0.9
    assert loss <= log_loss(informative, codes) + 1e-9


def test_complementary_branches_fuse_better_than_either() -> None:
    rng = np.random.default_rng(1)
    codes = rng.choice(CLASSES, 600)
    # Each branch is right on its own half of the products and unsure elsewhere.
    first, second = _one_hot(codes, 0.8), _one_hot(codes, 0.8)
    first[300:] = rng.dirichlet(np.ones(K), 300)
    second[:300] = rng.dirichlet(np.ones(K), 300)
    weights, loss = fit_weights({"a": first, "b": second}, codes, 0.05)
    assert 0.2 < weights["a"] < 0.8
    assert loss < min(log_loss(first, codes), log_loss(second, codes))
    fused = fuse({"a": first, "b": second}, weights)
    accuracy = (CLASSES[fused.argmax(axis=1)] == codes).mean()
    assert accuracy > max((CLASSES[p.argmax(axis=1)] == codes).mean() for p in (first, second))


def test_log_linear_pooling_leaves_an_abstaining_branch_out() -> None:
    text = _one_hot(np.array([10, 40]), 0.6)
    image = _one_hot(np.array([2583, 40]), 0.6)
    image[0] = np.nan
    pooled = pool({"text": text, "image": image}, {"text": 1.0, "image": 1.0})
    np.testing.assert_allclose(pooled[0], text[0])  # the text alone, as it said it
    assert pooled[1].max() > 0.6  # two branches agreeing are surer than either
    np.testing.assert_allclose(pooled.sum(axis=1), 1)
    nobody = pool({"image": np.full((1, K), np.nan)}, {"image": 1.0})
    np.testing.assert_allclose(nobody, np.full((1, K), 1 / K))


def _ambiguous_pairs(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two branches that each hesitate between the truth and another type (not the same one):
    the product of their beliefs finds the truth, their mean stays torn."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(CLASSES, rows)
    first, second = np.full((rows, K), 0.01 / (K - 2)), np.full((rows, K), 0.01 / (K - 2))
    truth = labels_index(codes)
    other_first = (truth + rng.integers(1, K // 2, rows)) % K
    other_second = (truth + rng.integers(K // 2, K - 1, rows)) % K
    lean = rng.random(rows) < 0.5  # which of its two candidates each branch leans to
    for proba, other, leaning in ((first, other_first, lean), (second, other_second, ~lean)):
        proba[np.arange(rows), truth] = np.where(leaning, 0.44, 0.55)
        proba[np.arange(rows), other] = np.where(leaning, 0.55, 0.44)
    return codes, first, second


def test_log_linear_pooling_wins_where_branches_narrow_each_other_down() -> None:
    codes, first, second = _ambiguous_pairs(600, 2)
    weights, loss = fit_log_linear({"a": first, "b": second}, codes)
    assert min(weights.values()) > 0.5
    _, grid_loss = fit_weights({"a": first, "b": second}, codes, 0.05)
    assert loss < grid_loss
    fused = pool({"a": first, "b": second}, weights)
    assert (CLASSES[fused.argmax(axis=1)] == codes).mean() > 0.95


def test_the_combiner_is_chosen_by_cross_validation_and_the_grid_kept_when_it_wins() -> None:
    codes, first, second = _ambiguous_pairs(400, 3)
    params = FusionParams(folds=4)
    losses = cross_validated_losses({"a": first, "b": second}, codes, 0.05, 4, 0)
    assert losses["log_linear"] < losses["grid"]
    combiner, _, measured = choose_combiner({"a": first, "b": second}, codes, params)
    assert combiner == "log_linear" and measured["cross_validated_log_loss"] == losses
    # Branches sometimes sure of a wrong type: the product would follow them, the mean hedges.
    rng = np.random.default_rng(0)
    codes = rng.choice(CLASSES, 400)
    first, second = _overconfident(codes, rng), _overconfident(codes, rng)
    losses = cross_validated_losses({"a": first, "b": second}, codes, 0.05, 4, 0)
    assert losses["grid"] < losses["log_linear"]
    combiner, weights, _ = choose_combiner({"a": first, "b": second}, codes, params)
    assert combiner == "grid" and sum(weights.values()) == pytest.approx(1)
    alone = choose_combiner({"a": first}, codes, params)
    assert alone[:2] == ("grid", {"a": 1.0})  # one branch: nothing to combine
    forced = choose_combiner({"a": first}, codes, FusionParams(combiner="log_linear"))
    assert forced[0] == "log_linear" and forced[2]["cross_validated_log_loss"] is None


def _overconfident(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Right at 0.9 on three products in four, all but certain of a wrong type on the fourth."""
    rows, truth = len(codes), labels_index(codes)
    proba = _one_hot(codes, 0.9)
    wrong = rng.random(rows) < 0.25
    other = (truth + rng.integers(1, K, rows)) % K
    proba[wrong] = 1e-6
    proba[wrong, other[wrong]] = 1 - 1e-6 * (K - 1)
    return proba
