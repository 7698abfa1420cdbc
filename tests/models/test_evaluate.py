"""Evaluation: the challenge metric and its companions, coverage of abstaining branches, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from src.models.branch import CLASSES, labels_index
from src.models.evaluate import CONFUSION_DIR, METRICS_FILE, scores, write_report


def _proba_for(predicted: list[int]) -> np.ndarray:
    proba = np.zeros((len(predicted), len(CLASSES)))
    proba[np.arange(len(predicted)), labels_index(np.array(predicted))] = 1
    return proba


def test_scores_match_a_hand_count() -> None:
    truth = np.array([10, 10, 40, 40, 2583])
    result = scores(truth, _proba_for([10, 40, 40, 40, 2583]))
    assert result["accuracy"] == 0.8
    # Per class F1: 10 -> 2/3, 40 -> 0.8, 2583 -> 1; weighted by support 2, 2, 1.
    assert np.isclose(result["weighted_f1"], (2 * 2 / 3 + 2 * 0.8 + 1) / 5)
    assert np.isclose(result["macro_f1"], (2 / 3 + 0.8 + 1) / 3)
    assert result["per_class"]["10"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert result["coverage"] == 1.0 and result["rows"] == 5


def test_an_abstaining_branch_is_scored_on_what_it_answered() -> None:
    proba = _proba_for([10, 40, 40])
    proba[1] = np.nan
    result = scores(np.array([10, 10, 40]), proba)
    assert result["accuracy"] == 1.0
    assert np.isclose(result["coverage"], 2 / 3) and result["rows"] == 2


def test_report_writes_metrics_and_one_confusion_png_per_model(tmp_path: Path) -> None:
    truth = np.array([10, 40, 2583, 2583])
    report = write_report(
        truth,
        {"text": _proba_for([10, 40, 2583, 10]), "fused": _proba_for([10, 40, 2583, 2583])},
        tmp_path,
    )
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == report
    assert report["fused"]["weighted_f1"] == 1.0
    for name in ("text", "fused"):
        with Image.open(tmp_path / CONFUSION_DIR / f"{name}.png") as image:
            assert image.format == "PNG" and image.size[0] > 500
