"""Late fusion: abstaining branches are left out, weights come from the validation split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.models.branch import CLASSES, labels_index
from src.models.fusion import _simplex, fit_weights, fuse, log_loss

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
