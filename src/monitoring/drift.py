"""Drift of a day's batch against the champion's reference profile (src/models/profile.py).

Pure numpy/scipy: counts and rates in, scores and a verdict out.
- Predicted-type distribution: PSI with the small-sample bias subtracted, and the Jensen-Shannon
  distance (base 2, in [0, 1]).
- Inputs: PSI over the reference's quantile bins of designation and description length, and the
  change of the missing-description, missing-photo and HTML rates.
- The drop of the mean confidence (top probability) against the model's on val.

PSI = sum_i (c_i - r_i) ln(c_i / r_i) over K bins, the shares smoothed by half a row per bin
(Jeffreys) so that an empty bin stays finite. Two samples of one distribution, of n_ref and n
rows, still score about (K-1)(1/n_ref + 1/n) (PSI is a symmetrised KL divergence, whose plug-in
estimate is chi-square-like): that bias is subtracted before the threshold, so a small batch is
not flagged for its sampling noise alone. Under `min_rows` the verdict is "too few rows".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

from src.config import DriftParams
from src.models.profile import LENGTH_FEATURES, RATE_FEATURES, bin_counts, code_counts

SMOOTHING: Final = 0.5  # pseudo-rows per bin
NO_DRIFT: Final = "no_drift"
DRIFT: Final = "drift"
TOO_FEW_ROWS: Final = "too_few_rows"


def _shares(counts: np.ndarray, smoothing: float) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    shares: np.ndarray = (counts + smoothing) / (counts.sum() + smoothing * counts.size)
    return shares


def psi(
    reference_counts: Sequence[float] | np.ndarray,
    current_counts: Sequence[float] | np.ndarray,
    smoothing: float = SMOOTHING,
) -> float:
    """Population stability index of two histograms over the same bins (smoothed shares)."""
    reference = _shares(np.asarray(reference_counts), smoothing)
    current = _shares(np.asarray(current_counts), smoothing)
    if reference.shape != current.shape:
        raise ValueError(f"bins differ: {reference.size} in the reference, {current.size} now")
    return float(np.sum((current - reference) * np.log(current / reference)))


def psi_bias(bins: int, reference_rows: int, current_rows: int) -> float:
    """The PSI expected between two samples of one distribution: (K-1)(1/n_ref + 1/n)."""
    if reference_rows <= 0 or current_rows <= 0:
        raise ValueError("both samples need rows")
    return (bins - 1) * (1 / reference_rows + 1 / current_rows)


def corrected_psi(
    reference_counts: Sequence[float] | np.ndarray, current_counts: Sequence[float] | np.ndarray
) -> float:
    """PSI with its small-sample bias subtracted; may be below 0 for a batch like the reference."""
    reference, current = np.asarray(reference_counts), np.asarray(current_counts)
    bias = psi_bias(reference.size, int(reference.sum()), int(current.sum()))
    return psi(reference, current) - bias


def js_distance(
    reference_counts: Sequence[float] | np.ndarray, current_counts: Sequence[float] | np.ndarray
) -> float:
    """Jensen-Shannon distance (base 2, 0: same, 1: disjoint) of two histograms' shares."""
    return float(jensenshannon(reference_counts, current_counts, base=2))


@dataclass(frozen=True)
class DriftReport:
    """The scores of one batch against a reference, and the verdict they lead to."""

    rows: int
    verdict: str
    predicted_psi: float | None = None
    predicted_js: float | None = None
    length_psi: dict[str, float | None] = field(default_factory=dict)
    rates: dict[str, dict[str, float]] = field(default_factory=dict)
    confidence: dict[str, float | None] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        """Whether the verdict is drift (too few rows is not)."""
        return self.verdict == DRIFT

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "rows": self.rows,
            "verdict": self.verdict,
            "predicted_psi": self.predicted_psi,
            "predicted_js": self.predicted_js,
            "length_psi": self.length_psi,
            "rates": self.rates,
            "confidence": self.confidence,
            "reasons": self.reasons,
        }


def check_drift(
    profile: dict[str, Any], batch: pd.DataFrame, features: pd.DataFrame, params: DriftParams
) -> DriftReport:
    """Score a batch (`prdtypecode`, `probability`) and its `input_features` against `profile`."""
    rows = len(batch)
    if rows < params.min_rows:
        return DriftReport(
            rows=rows,
            verdict=TOO_FEW_ROWS,
            reasons=[f"{rows} rows, fewer than drift.min_rows={params.min_rows}"],
        )
    reasons: list[str] = []
    reference = np.asarray(profile["predicted_counts"])
    current = code_counts(batch["prdtypecode"].to_numpy())
    predicted_psi = max(corrected_psi(reference, current), 0.0)
    if predicted_psi > params.psi_threshold:
        reasons.append(
            f"predicted-type PSI {predicted_psi:.3f} > drift.psi_threshold={params.psi_threshold}"
        )
    length_psi: dict[str, float | None] = {}
    for name in LENGTH_FEATURES:
        bins = profile["lengths"][name]
        values = features[name].to_numpy(dtype=np.float64)
        counts = bin_counts(values, bins["edges"])
        if counts.sum() == 0 or sum(bins["counts"]) == 0:
            length_psi[name] = None  # e.g. no description at all: the missing rate says it
            continue
        score = max(corrected_psi(bins["counts"], counts), 0.0)
        length_psi[name] = score
        if score > params.input_psi_threshold:
            reasons.append(
                f"{name} length PSI {score:.3f} > "
                f"drift.input_psi_threshold={params.input_psi_threshold}"
            )
    rates: dict[str, dict[str, float]] = {}
    for name in RATE_FEATURES:
        now, then = float(features[name].mean()), float(profile["rates"][name])
        rates[name] = {"batch": now, "reference": then, "change": now - then}
        if abs(now - then) > params.rate_change_threshold:
            reasons.append(
                f"{name} rate {now:.3f} vs {then:.3f} in the reference "
                f"(change > drift.rate_change_threshold={params.rate_change_threshold})"
            )
    mean_now = float(batch["probability"].mean())
    mean_then = profile.get("mean_confidence")
    drop = None if mean_then is None else float(mean_then) - mean_now
    if drop is not None and drop > params.confidence_drop_threshold:
        reasons.append(
            f"mean confidence {mean_now:.3f} vs {mean_then:.3f} on val "
            f"(drop > drift.confidence_drop_threshold={params.confidence_drop_threshold})"
        )
    return DriftReport(
        rows=rows,
        verdict=DRIFT if reasons else NO_DRIFT,
        predicted_psi=predicted_psi,
        predicted_js=js_distance(reference, current),
        length_psi=length_psi,
        rates=rates,
        confidence={"batch": mean_now, "reference": mean_then, "drop": drop},
        reasons=reasons,
    )
