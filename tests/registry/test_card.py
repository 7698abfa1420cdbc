"""The model card: what it says before and after the gate, the confusion matrix, and its storage
as an artifact of the version's run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from src.data.classes import PRDTYPECODES
from src.errors import RakutenError
from src.registry import card
from src.registry.tracking import experiment_id, run

CODES = [str(code) for code in PRDTYPECODES]


def _facts(gate: dict[str, Any] | None = None) -> dict[str, Any]:
    per_class = {
        code: {"precision": 0.5, "recall": 0.25, "f1": 0.3333, "support": 2} for code in CODES
    }
    headline = {"weighted_f1": 0.61, "macro_f1": 0.52, "accuracy": 0.63, "coverage": 1.0}
    return {
        "model": "rakuten-product-classifier",
        "version": "4",
        "run_id": "r" * 32,
        "model_id": "m-123",
        "experiment_id": "1",
        "registered_at": "2026-01-05T08:00:00+00:00",
        "lineage": {
            "data_version": "abc123",
            "data_source": "hub",
            "hub_repo": "owner/repo",
            "hub_commit": "f" * 40,
            "params_sha256": "9" * 64,
            "git_commit": "c" * 40,
        },
        "rows_per_class": {
            "train": dict.fromkeys(CODES, 10) | {"10": 25},
            "val": dict.fromkeys(CODES, 3),
            "test": dict.fromkeys(CODES, 2),
        },
        "photo_share": 0.06,
        "fusion": {"weights": {"text_tfidf": 0.75, "image_cnn": 0.25}},
        "scores": {
            "text_tfidf": {**headline, "rows": 54, "per_class": per_class},
            "image_cnn": {**headline, "coverage": 0.1, "rows": 5, "per_class": per_class},
            "fused": {**headline, "rows": 54, "per_class": per_class},
        },
        "gate": gate,
    }


def _gate(confusion: list[list[int]]) -> dict[str, Any]:
    report = {
        "decision": "failed",
        "reasons": ["class 60 (consoles) has F1 0.1000 under the floor 0.3000 on 25 rows"],
        "checks": [
            {"check": "min_weighted_f1", "passed": True, "value": 0.61, "threshold": 0.4},
            {"check": "per_class_f1_floor", "passed": False, "value": 0.1, "threshold": 0.3},
        ],
        "champion_version": "3",
        "comparison": {
            "weighted_f1_difference": 0.012,
            "ci_low": -0.004,
            "ci_high": 0.03,
            "confidence": 0.95,
        },
        "rows": {"all": 54, "pinned_test": 54},
        "unjudged_classes": {"2905": 2},
        "validated_at": "2026-01-05T09:00:00+00:00",
    }
    return card.gate_facts(report, confusion)


def test_confusion_counts_true_rows_by_predicted_columns() -> None:
    codes = np.array([10, 10, 40, 2583])
    predicted = np.array([10, 2705, 40, 2583])
    matrix = card.confusion_counts(codes, predicted)
    assert len(matrix) == 27 and all(len(row) == 27 for row in matrix)
    index = {code: position for position, code in enumerate(PRDTYPECODES)}
    assert matrix[index[10]][index[10]] == 1 and matrix[index[10]][index[2705]] == 1
    assert matrix[index[40]][index[40]] == 1 and matrix[index[2583]][index[2583]] == 1
    assert sum(map(sum, matrix)) == 4


def test_a_card_before_the_gate_says_how_to_gate_it() -> None:
    text = card.render(_facts())
    assert text.startswith("# Model card: rakuten-product-classifier version 4\n")
    for section in (
        "## Intended use",
        "## Data and lineage",
        "## Scores on the pinned test split",
        "## The fusion",
        "## Rows and scores per class (fused model)",
        "## Gate",
        "## Known limits",
        "## Retrain and roll back",
    ):
        assert section in text
    assert "Not validated yet: `rakuten model validate --version 4`" in text
    assert "## Confusion matrix" not in text  # it comes from the gate's scoring
    assert "`abc123`" in text and "owner/repo" in text and "f" * 40 in text
    assert "| 10 used books | 25 | 3 | 2 | 0.500 | 0.250 | 0.333 |" in text
    assert "| **all** | 285 | 81 | 54 |" in text  # 26 x 10 + 25 train rows
    assert "text_tfidf 0.75, image_cnn 0.25" in text
    assert "Learned from 366 labelled rows (train and val)" in text  # 285 + 81: a small set
    assert "6% of the training products had a photo" in text
    assert "rakuten model rollback" in text and "rakuten model card --version 4" in text


def test_a_card_after_the_gate_shows_its_decision_reasons_and_confusions() -> None:
    confusion = card.confusion_counts(np.array([10, 10, 10, 60]), np.array([2705, 2705, 10, 60]))
    text = card.render(_facts(_gate(confusion)))
    assert "**FAILED** on 2026-01-05T09:00:00+00:00" in text
    assert "against champion version 3" in text
    assert "class 60 (consoles) has F1 0.1000 under the floor" in text
    assert "| per_class_f1_floor | 0.100 | 0.300 | False |" in text
    assert "+0.0120 (95% paired-bootstrap CI [-0.0040, +0.0300])" in text
    assert "2905 (2 rows)" in text
    assert "## Confusion matrix (fused model, pinned test split)" in text
    assert "- 2 x 10 used books taken for 2705 new books" in text
    assert "Not validated yet" not in text


def test_the_card_is_stored_in_the_run_and_replaced(embedded: MlflowClient) -> None:
    experiment = experiment_id(embedded)
    with run(embedded, experiment, "pipeline") as run_id:
        pass
    facts = {**_facts(), "run_id": run_id}
    card.write(embedded, facts)
    assert "Not validated yet" in card.read(embedded, run_id)
    assert card.read_facts(embedded, run_id) == facts
    gated = {**facts, "gate": _gate(card.confusion_counts(np.array([10]), np.array([10])))}
    card.write(embedded, gated)
    assert "**FAILED**" in card.read(embedded, run_id)
    assert card.read_facts(embedded, run_id)["gate"]["decision"] == "failed"
    names = sorted(a.path for a in embedded.list_artifacts(run_id))
    assert names == ["model_card.json", "model_card.md"]


def test_a_run_without_a_card_says_so(embedded: MlflowClient) -> None:
    with run(embedded, experiment_id(embedded), "old") as run_id:
        pass
    with pytest.raises(RakutenError, match=r"has no model_card\.md"):
        card.read(embedded, run_id)


@pytest.mark.parametrize(
    ("cross_fitted", "says"),
    [
        ([], "the 81 validation rows, from models fitted on train alone"),
        (
            ["text_tfidf"],
            "out-of-fold over train + val (cross-fitted) for text_tfidf, from models ",
        ),
        (["text_tfidf", "image_cnn"], "out-of-fold probabilities of all 81 train + val rows"),
    ],
)
def test_the_card_says_which_held_out_rows_the_combiner_was_fitted_on(
    cross_fitted: list[str], says: str
) -> None:
    facts = _facts()
    facts["fusion"] |= {
        "combiner": "stacked",
        "fitted_on": {"rows": 81, "cross_fitted": cross_fitted},
    }
    text = " ".join(card.render(facts).split())
    assert says in text
    assert "a logistic model on the branches' log-probabilities" in text
