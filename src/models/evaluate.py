"""Evaluation on the pinned test split: the challenge metric and its companions, per model.

Weighted F1 is the challenge's metric; macro F1 shows the small classes and accuracy the plain
hit rate. A branch that abstains for some products (an image branch without photos) is scored on
the products it answered, and its coverage says how many that was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from src.data.classes import CLASS_NAMES
from src.data.io import write_json
from src.models.branch import CLASSES

METRICS_FILE: Final = "metrics.json"
CONFUSION_DIR: Final = "confusion"


def scores(codes: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """Weighted and macro F1, accuracy, coverage and per-class precision/recall/F1/support."""
    answered = ~np.isnan(proba).any(axis=1)
    truth = np.asarray(codes)[answered]
    predicted = CLASSES[np.argmax(proba[answered], axis=1)] if answered.any() else truth[:0]
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=CLASSES, zero_division=0
    )
    return {
        "weighted_f1": _f1(truth, predicted, "weighted"),
        "macro_f1": _f1(truth, predicted, "macro"),
        "accuracy": float(accuracy_score(truth, predicted)) if len(truth) else 0.0,
        "coverage": float(answered.mean()) if len(answered) else 0.0,
        "rows": int(answered.sum()),
        "per_class": {
            str(code): {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for code, p, r, f, s in zip(CLASSES, precision, recall, f1, support, strict=True)
        },
    }


def _f1(truth: np.ndarray, predicted: np.ndarray, average: str) -> float:
    """F1 over the classes present in the truth or the predictions (scikit-learn's default)."""
    return (
        float(f1_score(truth, predicted, average=average, zero_division=0)) if len(truth) else 0.0
    )


def plot_confusion(codes: np.ndarray, proba: np.ndarray, title: str, path: Path) -> None:
    """Write a row-normalised confusion matrix over the 27 classes as a PNG."""
    answered = ~np.isnan(proba).any(axis=1)
    predicted = CLASSES[np.argmax(proba[answered], axis=1)]
    matrix = confusion_matrix(np.asarray(codes)[answered], predicted, labels=CLASSES)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    # Imported here: a second of start-up that scoring (which imports this module) never needs.
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 10))
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = [f"{code} {CLASS_NAMES[int(code)]}" for code in CLASSES]
    axes.set_xticks(range(len(CLASSES)), [str(c) for c in CLASSES], rotation=90, fontsize=7)
    axes.set_yticks(range(len(CLASSES)), ticks, fontsize=7)
    axes.set_xlabel("predicted prdtypecode")
    axes.set_ylabel("true prdtypecode")
    axes.set_title(title)
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if shares[row, column] > 0.5 else "black"
            axes.text(column, row, str(count), ha="center", va="center", fontsize=6, color=colour)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(
    codes: np.ndarray, probabilities: dict[str, np.ndarray], reports_dir: Path
) -> dict[str, Any]:
    """Score every model; write metrics.json (DVC metrics) and confusion/NAME.png (DVC plots)."""
    report = {name: scores(codes, proba) for name, proba in probabilities.items()}
    reports_dir.mkdir(parents=True, exist_ok=True)
    for name, proba in probabilities.items():
        plot_confusion(
            codes,
            proba,
            f"{name} on the pinned test split",
            reports_dir / CONFUSION_DIR / f"{name}.png",
        )
    write_json(reports_dir / METRICS_FILE, report)
    return report
