"""The quality gate: is a challenger good enough, and not worse than the champion, on the same rows?

Three checks, thresholds from params.yaml `gate`:
- an absolute floor on weighted F1 (the challenge metric);
- no drop in weighted F1 against the champion beyond a tolerance; the paired bootstrap confidence
  interval of the difference (both models resampled on the same rows) says how sure that is;
- no class under a per-class F1 floor, among classes with enough rows to be judged: on a handful
  of rows one product swings a class's F1 by a large step, so small classes would fail at random.
Without a champion yet, only the floors apply. Rows come from the pinned test split (raw listings,
as the packaged model receives them) plus, optionally, a labelled dataset in the hub's layout.

Comparability: each registered version records the split definition of the data it was trained
on (salt, fractions, grouping and the definition's version, src/data/split.py). Challenger and
champion are compared only when their definitions match; otherwise the champion may have trained
on the challenger's test rows. Then the gate says so, still scores both on the challenger's test
rows (the numbers are reported, the tolerance check is not applied) and the version needs a
person's approval to become champion, with the reason on the version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from src.config import GateParams
from src.data.classes import CLASS_NAMES
from src.data.contract import validate_raw
from src.data.io import read_raw_csv
from src.data.layout import IMAGE_SETS, TRAIN_IMAGE_DIR, X_TRAIN_FILE, Y_TRAIN_FILE
from src.errors import RakutenError
from src.models.branch import CLASSES, labels_index
from src.models.data import SPLIT_FILES
from src.models.evaluate import scores
from src.models.predict import model_inputs

PINNED_TEST: Final = "pinned_test"
SUPPLIED: Final = "supplied"


@dataclass(frozen=True)
class EvaluationRows:
    """Labelled listings as the packaged model takes them, and where each row comes from."""

    inputs: pd.DataFrame  # designation, description, image_path
    codes: np.ndarray
    source: np.ndarray


def pinned_test_rows(processed_dir: Path, raw_dir: Path) -> EvaluationRows:
    """The pinned test split as raw listings: the raw X rows by `row_index`, photo by path."""
    test = pd.read_parquet(processed_dir / SPLIT_FILES["test"])
    raw = read_raw_csv(raw_dir / X_TRAIN_FILE)
    raw.index = raw.index.astype(np.int64)
    try:
        listings = raw.loc[test["row_index"].to_numpy()]
    except KeyError:
        raise RakutenError(
            f"the test split of {processed_dir} is not from the raw snapshot {raw_dir}: "
            "run `rakuten data make-dataset` on it again"
        ) from None
    inputs = model_inputs(listings, None).reset_index(drop=True)
    root = raw_dir.absolute()
    inputs["image_path"] = [None if pd.isna(p) else str(root / p) for p in test["image_path"]]
    codes = test["prdtypecode"].to_numpy(dtype=np.int64)
    return EvaluationRows(inputs, codes, np.full(len(codes), PINNED_TEST))


def supplied_rows(data_dir: Path) -> tuple[EvaluationRows, int]:
    """A labelled dataset in the hub's layout, and how many rows the data contract set aside."""
    if not data_dir.is_dir():
        raise RakutenError(f"validation data {data_dir} is not a folder in the hub's layout")
    checked = validate_raw(
        read_raw_csv(data_dir / X_TRAIN_FILE),
        read_raw_csv(data_dir / Y_TRAIN_FILE),
        x_name=X_TRAIN_FILE,
        y_name=Y_TRAIN_FILE,
    )
    if checked.valid.empty:
        raise RakutenError(f"no row of {data_dir} keeps to the data contract: nothing to validate")
    images = next(
        (d for d in (data_dir / TRAIN_IMAGE_DIR, data_dir / IMAGE_SETS[0]) if d.is_dir()), None
    )
    inputs = model_inputs(checked.valid, images).reset_index(drop=True)
    codes = checked.valid["prdtypecode"].to_numpy(dtype=np.int64)
    return EvaluationRows(inputs, codes, np.full(len(codes), SUPPLIED)), len(checked.quarantine)


def combine(parts: list[EvaluationRows]) -> EvaluationRows:
    """Several row sets as one, in order."""
    return EvaluationRows(
        pd.concat([part.inputs for part in parts], ignore_index=True),
        np.concatenate([part.codes for part in parts]),
        np.concatenate([part.source for part in parts]),
    )


def _counts(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per class: support, predictions and true positives (truth, predicted: class indices)."""
    size = len(CLASSES)
    hits = truth[truth == predicted]
    return (
        np.bincount(truth, minlength=size),
        np.bincount(predicted, minlength=size),
        np.bincount(hits, minlength=size),
    )


def _weighted_f1(support: np.ndarray, predicted: np.ndarray, hits: np.ndarray) -> float:
    """scikit-learn's weighted F1 from per-class counts."""
    denominator = support + predicted
    f1 = np.divide(2 * hits, denominator, out=np.zeros(len(support)), where=denominator > 0)
    total = support.sum()
    return float((support * f1).sum() / total) if total else 0.0


def weighted_f1(codes: np.ndarray, predicted: np.ndarray) -> float:
    """Weighted F1 of predicted product-type codes against the true ones."""
    return _weighted_f1(*_counts(labels_index(codes), labels_index(predicted)))


def paired_bootstrap(
    codes: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    samples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float]:
    """Confidence interval of weighted F1 (challenger - champion), resampling rows for both."""
    truth = labels_index(codes)
    first, second = labels_index(challenger), labels_index(champion)
    rng = np.random.default_rng(seed)
    differences = np.empty(samples)
    for sample in range(samples):
        rows = rng.integers(0, len(truth), len(truth))
        differences[sample] = _weighted_f1(*_counts(truth[rows], first[rows])) - _weighted_f1(
            *_counts(truth[rows], second[rows])
        )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)


def _one_hot(predicted: np.ndarray) -> np.ndarray:
    """Predicted codes as probabilities, for `evaluate.scores`."""
    proba = np.zeros((len(predicted), len(CLASSES)))
    proba[np.arange(len(predicted)), labels_index(predicted)] = 1.0
    return proba


def _scores_by_source(rows: EvaluationRows, predicted: np.ndarray) -> dict[str, Any]:
    """Scores on every row and on each source's rows."""
    result = {"all": scores(rows.codes, _one_hot(predicted))}
    for source in dict.fromkeys(rows.source.tolist()):
        chosen = rows.source == source
        result[source] = scores(rows.codes[chosen], _one_hot(predicted[chosen]))
    return result


def comparability(
    challenger: Mapping[str, Any] | None, champion: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Whether a champion's scores compare with a challenger's: same split definition."""
    if challenger is not None and challenger == champion:
        reason = None
    elif challenger is None or champion is None:
        which = "the challenger" if challenger is None else "the champion"
        reason = f"{which} records no split definition: it may have trained on these test rows"
    else:
        changed = sorted(
            k for k in {*challenger, *champion} if challenger.get(k) != champion.get(k)
        )
        reason = (
            "the champion was trained on another split ("
            + ", ".join(f"{k} {champion.get(k)!r} -> {challenger.get(k)!r}" for k in changed)
            + "): it may have trained on the challenger's test rows"
        )
    return {
        "comparable": reason is None,
        "reason": reason,
        "challenger_split": challenger,
        "champion_split": champion,
    }


def _check(name: str, passed: bool, value: float | None, threshold: float) -> dict[str, Any]:
    return {"check": name, "passed": passed, "value": value, "threshold": threshold}


def decide(
    rows: EvaluationRows,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    params: GateParams,
    comparable: bool = True,
) -> dict[str, Any]:
    """The gate's decision on predicted codes, with every check, its numbers and the reasons.

    With a champion that is not `comparable` (another split definition), the comparison is
    reported but the tolerance check is not applied: promotion then needs a person.
    """
    if len(rows.codes) == 0:
        raise RakutenError("the gate has no labelled rows to score the models on")
    challenger_scores = _scores_by_source(rows, challenger)
    overall = challenger_scores["all"]
    f1 = overall["weighted_f1"]
    checks = [_check("min_weighted_f1", f1 >= params.min_weighted_f1, f1, params.min_weighted_f1)]
    reasons = []
    if f1 < params.min_weighted_f1:
        reasons.append(f"weighted F1 {f1:.4f} is under the floor {params.min_weighted_f1:.4f}")

    judged = {
        code: per_class
        for code, per_class in overall["per_class"].items()
        if per_class["support"] >= params.per_class_min_support
    }
    weak = {code: c for code, c in judged.items() if c["f1"] < params.per_class_f1_floor}
    lowest = min((c["f1"] for c in judged.values()), default=None)
    checks.append(_check("per_class_f1_floor", not weak, lowest, params.per_class_f1_floor))
    for code, per_class in weak.items():
        reasons.append(
            f"class {code} ({CLASS_NAMES[int(code)]}) has F1 {per_class['f1']:.4f} under the "
            f"floor {params.per_class_f1_floor:.4f} on {per_class['support']} rows"
        )

    comparison = None
    champion_scores = None
    if champion is not None:
        champion_scores = _scores_by_source(rows, champion)
        difference = f1 - champion_scores["all"]["weighted_f1"]
        low, high = paired_bootstrap(
            rows.codes,
            challenger,
            champion,
            params.bootstrap_samples,
            params.confidence,
            params.seed,
        )
        comparison = {
            "weighted_f1_difference": difference,
            "ci_low": low,
            "ci_high": high,
            "confidence": params.confidence,
            "bootstrap_samples": params.bootstrap_samples,
        }
        not_worse = difference >= -params.tolerance or not comparable
        if comparable:
            checks.append(_check("tolerance", not_worse, difference, -params.tolerance))
        if not not_worse:
            reasons.append(
                f"weighted F1 is {-difference:.4f} below the champion's "
                f"({champion_scores['all']['weighted_f1']:.4f}; {params.confidence:.0%} CI of "
                f"the difference [{low:+.4f}, {high:+.4f}]), more than the tolerance "
                f"{params.tolerance:.4f}"
            )
    return {
        "decision": "failed" if reasons else "passed",
        "reasons": reasons,
        "checks": checks,
        "rows": {source: s["rows"] for source, s in challenger_scores.items()},
        "unjudged_classes": {  # present, but too few rows to hold to the per-class floor
            code: c["support"]
            for code, c in overall["per_class"].items()
            if 0 < c["support"] < params.per_class_min_support
        },
        "challenger": challenger_scores,
        "champion": champion_scores,
        "comparison": comparison,
        "comparable": comparable,
        "thresholds": params.model_dump(),
    }
