"""The quality gate: weighted F1, the paired bootstrap, the checks and the rows it scores on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from src.config import GateParams
from src.data.layout import X_TRAIN_FILE, Y_TRAIN_FILE
from src.errors import RakutenError
from src.models.branch import CLASSES
from src.registry.gate import (
    PINNED_TEST,
    SUPPLIED,
    EvaluationRows,
    comparability,
    decide,
    paired_bootstrap,
    supplied_rows,
    weighted_f1,
)

GATE = GateParams(
    min_weighted_f1=0.5,
    tolerance=0.02,
    per_class_f1_floor=0.3,
    per_class_min_support=5,
    bootstrap_samples=200,
)


def _noisy(codes: np.ndarray, error_rate: float, seed: int) -> np.ndarray:
    """Predictions that miss a share of the rows at random."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(codes)) < error_rate
    predicted = codes.copy()
    predicted[wrong] = rng.choice(CLASSES, int(wrong.sum()))
    return predicted


def _rows(codes: np.ndarray) -> EvaluationRows:
    inputs = pd.DataFrame({"designation": ["x"] * len(codes)})
    return EvaluationRows(inputs, codes, np.full(len(codes), PINNED_TEST))


@pytest.fixture
def codes() -> np.ndarray:
    return np.random.default_rng(0).choice(CLASSES, 2000)


def test_weighted_f1_is_scikit_learns(codes: np.ndarray) -> None:
    predicted = _noisy(codes, 0.3, 1)
    assert weighted_f1(codes, predicted) == pytest.approx(
        f1_score(codes, predicted, average="weighted")
    )


def test_the_bootstrap_interval_of_identical_models_is_zero(codes: np.ndarray) -> None:
    predicted = _noisy(codes, 0.2, 1)
    assert paired_bootstrap(codes, predicted, predicted, 200, 0.95, 0) == (0.0, 0.0)


def test_the_bootstrap_interval_covers_a_real_improvement_and_is_seeded(
    codes: np.ndarray,
) -> None:
    better, worse = _noisy(codes, 0.1, 1), _noisy(codes, 0.3, 2)
    low, high = paired_bootstrap(codes, better, worse, 300, 0.95, 7)
    difference = weighted_f1(codes, better) - weighted_f1(codes, worse)
    assert 0 < low < difference < high
    assert paired_bootstrap(codes, better, worse, 300, 0.95, 7) == (low, high)
    narrower = paired_bootstrap(codes, better, worse, 300, 0.5, 7)
    assert low < narrower[0] < narrower[1] < high


def test_without_a_champion_only_the_floors_apply(codes: np.ndarray) -> None:
    result = decide(_rows(codes), _noisy(codes, 0.2, 1), None, GATE)
    assert result["decision"] == "passed" and result["reasons"] == []
    assert [check["check"] for check in result["checks"]] == [
        "min_weighted_f1",
        "per_class_f1_floor",
    ]
    assert result["comparison"] is None and result["champion"] is None


def test_a_challenger_under_the_floor_fails_with_its_reason(codes: np.ndarray) -> None:
    result = decide(_rows(codes), _noisy(codes, 0.7, 1), None, GATE)
    assert result["decision"] == "failed"
    assert any("under the floor 0.5000" in reason for reason in result["reasons"])


def test_a_challenger_worse_than_the_champion_fails_and_the_interval_is_reported(
    codes: np.ndarray,
) -> None:
    champion, challenger = _noisy(codes, 0.1, 1), _noisy(codes, 0.25, 2)
    result = decide(_rows(codes), challenger, champion, GATE)
    assert result["decision"] == "failed"
    comparison = result["comparison"]
    assert comparison["ci_low"] < comparison["weighted_f1_difference"] < comparison["ci_high"] < 0
    assert len(result["reasons"]) == 1  # the drop against the champion, nothing else
    assert "below the champion's" in result["reasons"][0] and "CI" in result["reasons"][0]
    tolerance = next(check for check in result["checks"] if check["check"] == "tolerance")
    assert tolerance == {
        "check": "tolerance",
        "passed": False,
        "value": comparison["weighted_f1_difference"],
        "threshold": -0.02,
    }


def test_a_challenger_within_the_tolerance_passes(codes: np.ndarray) -> None:
    champion = _noisy(codes, 0.1, 1)
    challenger = champion.copy()
    challenger[:10] = np.where(challenger[:10] == 10, 40, 10)  # a few more mistakes
    result = decide(_rows(codes), challenger, champion, GATE)
    assert -0.02 < result["comparison"]["weighted_f1_difference"] < 0
    assert result["decision"] == "passed"


SPLIT = {
    "definition_version": 2,
    "grouping": "title",
    "salt": "rakuten-split-v1",
    "test_fraction": 0.15,
    "val_fraction": 0.15,
}


def test_models_split_alike_are_comparable_others_are_not_and_it_says_why() -> None:
    assert comparability(SPLIT, dict(SPLIT)) == {
        "comparable": True,
        "reason": None,
        "challenger_split": SPLIT,
        "champion_split": SPLIT,
    }
    salted = comparability({**SPLIT, "salt": "v2"}, SPLIT)
    assert salted["comparable"] is False
    assert "salt 'rakuten-split-v1' -> 'v2'" in salted["reason"]
    regrouped = comparability(SPLIT, {**SPLIT, "grouping": "productid", "definition_version": 1})
    assert "definition_version 1 -> 2" in regrouped["reason"]
    assert "grouping 'productid' -> 'title'" in regrouped["reason"]
    unrecorded = comparability(SPLIT, None)
    assert unrecorded["comparable"] is False
    assert unrecorded["reason"].startswith("the champion records no split definition")


def test_against_an_incomparable_champion_the_drop_is_reported_not_judged(
    codes: np.ndarray,
) -> None:
    champion, challenger = _noisy(codes, 0.1, 1), _noisy(codes, 0.25, 2)
    result = decide(_rows(codes), challenger, champion, GATE, comparable=False)
    assert result["decision"] == "passed" and result["comparable"] is False
    assert result["comparison"]["weighted_f1_difference"] < -0.02  # scored on the same rows
    assert "tolerance" not in [check["check"] for check in result["checks"]]
    assert result["champion"]["all"]["rows"] == len(codes)


def test_a_weak_class_fails_only_with_enough_rows(codes: np.ndarray) -> None:
    predicted = codes.copy()
    predicted[codes == 10] = 40  # class 10 always missed
    result = decide(_rows(codes), predicted, None, GATE)
    assert result["decision"] == "failed"
    assert result["reasons"] == [
        f"class 10 (used books) has F1 0.0000 under the floor 0.3000 on "
        f"{int((codes == 10).sum())} rows"
    ]
    # The same miss on a class with fewer rows than per_class_min_support is not judged.
    rare = np.concatenate([np.full(200, 40), np.full(3, 10)])
    result = decide(_rows(rare), np.full(203, 40), None, GATE)
    assert result["decision"] == "passed"
    assert result["unjudged_classes"] == {"10": 3}


def test_scores_are_reported_per_source(codes: np.ndarray) -> None:
    source = np.where(np.arange(len(codes)) < 1500, PINNED_TEST, SUPPLIED)
    rows = EvaluationRows(pd.DataFrame(index=range(len(codes))), codes, source)
    predicted = codes.copy()
    predicted[1500:] = 10  # the supplied rows are all wrong but class 10's
    result = decide(rows, predicted, None, GATE)
    assert result["rows"] == {"all": 2000, PINNED_TEST: 1500, SUPPLIED: 500}
    assert result["challenger"][PINNED_TEST]["weighted_f1"] == 1.0
    assert result["challenger"][SUPPLIED]["weighted_f1"] < 0.2


def test_supplied_rows_keep_to_the_data_contract(tmp_path: Path) -> None:
    x = pd.DataFrame(
        {
            "designation": ["Piscine tubulaire", "Roman policier", ""],
            "description": ["<p>Acier</p>", None, "vide"],
            "productid": ["11", "12", "13"],
            "imageid": ["21", "22", "23"],
        }
    )
    x.to_csv(tmp_path / X_TRAIN_FILE)
    pd.DataFrame({"prdtypecode": ["2583", "10", "10"]}).to_csv(tmp_path / Y_TRAIN_FILE)
    images = tmp_path / "images" / "image_train"
    images.mkdir(parents=True)
    (images / "image_21_product_11.jpg").write_bytes(b"\xff\xd8")
    rows, quarantined = supplied_rows(tmp_path)
    assert quarantined == 1  # the blank designation
    assert rows.codes.tolist() == [2583, 10]
    assert rows.source.tolist() == [SUPPLIED, SUPPLIED]
    assert rows.inputs["designation"].tolist() == ["Piscine tubulaire", "Roman policier"]
    photos = rows.inputs["image_path"]
    assert photos[0] == str(images.absolute() / "image_21_product_11.jpg")
    assert pd.isna(photos[1])  # no photo file for the second product


def test_supplied_data_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(RakutenError, match="not a folder"):
        supplied_rows(tmp_path / "absent")
