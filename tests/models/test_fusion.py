"""Late fusion: abstaining branches are left out, weights come from held-out predictions, the
combiner is chosen by cross-validation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import pytest

from src.config import FusionParams
from src.models.branch import BRANCHES, CLASSES, Branch, labels_index
from src.models.fusion import (
    FusedModel,
    _simplex,
    choose_combiner,
    cross_validated_losses,
    fit_log_linear,
    fit_stacked,
    fit_weights,
    fuse,
    log_loss,
    pool,
    stack,
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
    combiner, _, _, measured = choose_combiner({"a": first, "b": second}, codes, params)
    assert combiner in {"log_linear", "stacked"} and measured["cross_validated_log_loss"] == losses
    assert losses[min(losses, key=lambda name: losses[name])] < losses["grid"]
    # Branches sometimes sure of a wrong type: the product would follow them, the mean hedges.
    rng = np.random.default_rng(0)
    codes = rng.choice(CLASSES, 400)
    first, second = _overconfident(codes, rng), _overconfident(codes, rng)
    losses = cross_validated_losses({"a": first, "b": second}, codes, 0.05, 4, 0)
    assert losses["grid"] < losses["log_linear"]
    combiner, weights, terms, _ = choose_combiner({"a": first, "b": second}, codes, params)
    assert combiner == "grid" and sum(weights.values()) == pytest.approx(1) and terms is None
    alone = choose_combiner({"a": first}, codes, params)
    assert alone[:3] == ("grid", {"a": 1.0}, None)  # one branch: nothing to combine
    forced = choose_combiner({"a": first}, codes, FusionParams(combiner="log_linear"))
    assert forced[0] == "log_linear" and forced[3]["cross_validated_log_loss"] is None


def _overconfident(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Right at 0.9 on three products in four, all but certain of a wrong type on the fourth."""
    rows, truth = len(codes), labels_index(codes)
    proba = _one_hot(codes, 0.9)
    wrong = rng.random(rows) < 0.25
    other = (truth + rng.integers(1, K, rows)) % K
    proba[wrong] = 1e-6
    proba[wrong, other[wrong]] = 1 - 1e-6 * (K - 1)
    return proba


def _dumping(codes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A branch right at 0.5 everywhere, and one right at 0.8 on three rows in five that on the
    others is sure of one dumping type: only a per-class weight can discount that type alone."""
    steady = _one_hot(codes, 0.5)
    dumping = _one_hot(codes, 0.8)
    wrong = rng.random(len(codes)) < 0.4
    dumping[wrong] = 0.2 / (K - 1)
    dumping[wrong, 0] = 0.8
    return steady, dumping


def test_the_stacked_combiner_discounts_a_branch_on_the_types_it_gets_wrong() -> None:
    rng = np.random.default_rng(5)
    codes = rng.choice(CLASSES, 600)
    steady, dumping = _dumping(codes, rng)
    held_out = {"steady": steady, "dumping": dumping}
    losses = cross_validated_losses(held_out, codes, 0.05, 4, 0)
    stacked = min(v for k, v in losses.items() if k.startswith("stacked"))
    assert stacked < losses["log_linear"] <= losses["grid"] + 0.05
    combiner, _, terms, measured = choose_combiner(held_out, codes, FusionParams(folds=4))
    assert combiner == "stacked" and terms is not None and measured["stacked_l2"] == terms["l2"]
    # Where the dumping branch was wrong, its type gets less of the fused belief than under
    # log-linear pooling, and the truth more.
    wrong = (dumping[:, 0] == 0.8) & (codes != CLASSES[0])
    linear = pool(held_out, fit_log_linear(held_out, codes)[0])
    stacked_proba = stack(held_out, terms)
    assert stacked_proba[wrong, 0].mean() < linear[wrong, 0].mean()
    truth = labels_index(codes[wrong])
    rows = np.flatnonzero(wrong)
    assert stacked_proba[rows, truth].mean() > linear[rows, truth].mean()


def _weak(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise, leaning to the truth on two products in five."""
    proba = rng.dirichlet(np.ones(K), len(codes))
    leaning = rng.random(len(codes)) < 0.4
    proba[leaning, labels_index(codes[leaning])] += 0.3
    return proba / proba.sum(axis=1, keepdims=True)


def test_the_stacked_combiner_learns_what_a_missing_photo_says() -> None:
    rng = np.random.default_rng(6)
    codes = rng.choice(CLASSES, 800)
    text, image = _weak(codes, rng), _weak(codes, rng)
    # Books (code 10) never have a photo here: the abstention itself is a clue.
    image[codes == 10] = np.nan
    image[rng.random(len(codes)) < 0.3] = np.nan
    held_out = {"text": text, "image": image}
    _, terms, loss = fit_stacked(held_out, codes, 0.01)
    _, linear_loss = fit_log_linear(held_out, codes)
    assert loss < linear_loss
    shift = np.asarray(terms["abstain"]["image"])
    assert shift[labels_index(np.array([10]))[0]] > np.median(shift)
    assert not np.isnan(stack(held_out, terms)).any()
    # The text branch never abstains: it has no abstention shift to learn.
    np.testing.assert_allclose(terms["abstain"]["text"], 0, atol=1e-6)


def test_a_strong_penalty_gives_back_log_linear_pooling() -> None:
    codes, first, second = _ambiguous_pairs(300, 7)
    held_out = {"a": first, "b": second}
    weights, terms, _ = fit_stacked(held_out, codes, 1e4)
    linear, _ = fit_log_linear(held_out, codes)
    for name in held_out:
        assert weights[name] == pytest.approx(linear[name], abs=0.05)
        np.testing.assert_allclose(terms["class_weights"][name], weights[name], atol=0.05)
    np.testing.assert_allclose(terms["bias"], 0, atol=0.01)


class _Fixed(Branch):
    """A branch answering saved probabilities, one row per product (packaging tests only)."""

    name = "fixed"
    modality = "text"

    def fit(self, train: pd.DataFrame, val: pd.DataFrame) -> dict[str, Any]:
        return {}

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.params)[products["row"].to_numpy()]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        proba = np.asarray(self.params)
        (directory / "proba.json").write_text(
            json.dumps(np.where(np.isnan(proba), -1, proba).tolist())
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        proba = np.array(json.loads((directory / "proba.json").read_text()))
        return cls(np.where(proba < 0, np.nan, proba))


def test_a_saved_stacked_model_loads_and_fuses_as_fitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BRANCHES, "text", f"{__name__}:_Fixed")
    monkeypatch.setitem(BRANCHES, "image", f"{__name__}:_Fixed")
    rng = np.random.default_rng(8)
    codes = rng.choice(CLASSES, 200)
    text, image = _one_hot(codes, 0.4), _one_hot(codes, 0.4)
    image[::3] = np.nan  # no photo
    weights, terms, _ = fit_stacked({"text": text, "image": image}, codes, 0.1)
    model = FusedModel({"text": _Fixed(text), "image": _Fixed(image)}, weights, "stacked", terms)
    model.save(tmp_path)
    loaded = FusedModel.load(tmp_path)
    assert loaded.combiner == "stacked" and loaded.voting() == ["text", "image"]
    products = pd.DataFrame({"row": np.arange(len(codes))})
    fused = loaded.predict_proba(products)
    np.testing.assert_allclose(fused, stack({"text": text, "image": image}, terms))
    np.testing.assert_allclose(fused.sum(axis=1), 1)
    with pytest.raises(ValueError, match="per-class terms"):
        FusedModel({"text": _Fixed(text)}, {"text": 1.0}, "stacked")
