"""Drift scores against hand-computed values, their behaviour on sampled batches, the verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from src.config import DriftParams
from src.models.profile import input_features
from src.monitoring.drift import (
    DRIFT,
    NO_DRIFT,
    TOO_FEW_ROWS,
    check_drift,
    corrected_psi,
    js_distance,
    psi,
    psi_bias,
)
from tests.monitoring.listings import REFERENCE, SHARES, listings, profile_of, skewed_shares

PARAMS = DriftParams()


def test_psi_by_hand() -> None:
    # shares (smoothed by half a row): reference (50.5, 50.5)/101, current (25.5, 75.5)/101;
    # -0.2475 ln(0.5050) + 0.2475 ln(1.4950) = 0.1691 + 0.0995
    r = np.array([0.5, 0.5])
    c = np.array([25.5, 75.5]) / 101
    expected = (c[0] - r[0]) * math.log(c[0] / r[0]) + (c[1] - r[1]) * math.log(c[1] / r[1])
    assert psi([50, 50], [25, 75]) == pytest.approx(expected)
    assert psi([50, 50], [25, 75]) == pytest.approx(0.2687, abs=1e-4)
    # unsmoothed, a classic textbook case: 0.6/0.4 against 0.5/0.5
    assert psi([5, 5], [6, 4], smoothing=0) == pytest.approx(
        0.1 * math.log(1.2) - 0.1 * math.log(0.8)
    )
    assert psi([7, 3], [7, 3]) == 0


def test_psi_refuses_different_bins() -> None:
    with pytest.raises(ValueError, match="bins differ"):
        psi([1, 2, 3], [1, 2])


def test_bias_is_k_minus_one_over_n() -> None:
    assert psi_bias(27, 84_916, 100) == pytest.approx(26 * (1 / 84_916 + 1 / 100))
    assert corrected_psi([50, 50], [25, 75]) == pytest.approx(
        psi([50, 50], [25, 75]) - (1 / 100 + 1 / 100)
    )


def test_js_distance_by_hand() -> None:
    # P = (1, 0), Q = (1/2, 1/2): M = (3/4, 1/4); JS divergence (base 2) =
    # 1/2 KL(P||M) + 1/2 KL(Q||M) = 1/2 log2(4/3) + 1/2 (1/2 log2(2/3) + 1/2 log2(2))
    divergence = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert js_distance([10, 0], [5, 5]) == pytest.approx(math.sqrt(divergence))
    assert js_distance([10, 0], [5, 5]) == pytest.approx(float(jensenshannon([1, 0], [1, 1], 2)))
    assert js_distance([3, 1], [6, 2]) == pytest.approx(0, abs=1e-7)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1)


def test_batches_from_the_reference_stay_under_the_threshold() -> None:
    rng = np.random.default_rng(0)
    scores = [corrected_psi(REFERENCE, rng.multinomial(100, SHARES)) for _ in range(200)]
    under = sum(score <= PARAMS.psi_threshold for score in scores)
    assert under >= 190, f"only {under}/200 batches of 100 rows under the threshold"
    # without the bias correction, the same batches would mostly be flagged
    raw = [psi(REFERENCE, rng.multinomial(100, SHARES)) for _ in range(200)]
    assert sum(score > PARAMS.psi_threshold for score in raw) > 100


def _swapped(rows: int, rng: np.random.Generator) -> np.ndarray:
    """A batch whose second half comes from the reference with its most and least common
    types swapped."""
    swapped = SHARES.copy()
    most, least = int(np.argmax(SHARES)), int(np.argmin(SHARES))
    swapped[most], swapped[least] = SHARES[least], SHARES[most]
    half = rows // 2
    return rng.multinomial(rows - half, SHARES) + rng.multinomial(half, swapped)


def test_two_types_swapped_for_half_the_rows_go_over() -> None:
    # At 100 rows the sampling noise of PSI over 27 types (sd ~0.07) is as large as this
    # shift's own PSI (~0.14): the swap is detected on a day's batch of a few thousand rows.
    rng = np.random.default_rng(1)
    scores = [corrected_psi(REFERENCE, _swapped(2000, rng)) for _ in range(200)]
    over = sum(score > PARAMS.psi_threshold for score in scores)
    assert over >= 190, f"only {over}/200 swapped batches over the threshold"


def _profile() -> dict:
    return profile_of(listings(5000, seed=0))


def _check(profile: dict, batch: pd.DataFrame):
    features = input_features(batch["designation"], batch["description"], batch["has_photo"])
    return check_drift(profile, batch, features, PARAMS)


def test_a_batch_like_the_reference_is_no_drift() -> None:
    profile = _profile()
    batch = listings(1000, seed=7)
    report = _check(profile, batch)
    assert report.verdict == NO_DRIFT, report.reasons
    assert not report.drifted
    assert report.rates["missing_description"]["reference"] == pytest.approx(0.35, abs=0.03)


def test_a_shifted_batch_is_drift_with_its_reasons() -> None:
    profile = _profile()
    batch = listings(1000, 7, skewed_shares(3), missing_description=0.9, missing_photo=0.8)
    batch["probability"] = 0.4
    report = _check(profile, batch)
    assert report.verdict == DRIFT and report.drifted
    text = " ".join(report.reasons)
    for expected in ("predicted-type PSI", "missing_description", "missing_photo", "confidence"):
        assert expected in text
    assert report.predicted_js is not None and report.predicted_js > 0.5


def test_too_few_rows_is_no_verdict_of_drift() -> None:
    profile = _profile()
    batch = listings(PARAMS.min_rows - 1, 3, skewed_shares(1), 1.0, 1.0)
    report = _check(profile, batch)
    assert report.verdict == TOO_FEW_ROWS
    assert not report.drifted
    assert report.predicted_psi is None
    assert "fewer than drift.min_rows" in report.reasons[0]
