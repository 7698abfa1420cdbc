"""The branch contract: every model branch fits, predicts class probabilities, saves and loads.

A branch sees products as a DataFrame with the processed dataset's columns (`designation`,
`description`, `text`, cleaned; `prdtypecode` when labelled) plus `image`: the photo as an
absolute path (str), raw bytes, or None when there is none. It returns probabilities over
`CLASSES` (the 27 codes, in that order), one row per product; a row of NaN means the branch
abstains for that product (an image branch without a usable photo), and fusion leaves its vote out.

Adding a branch means writing one subclass and naming it in `BRANCHES`.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Self

import numpy as np
import pandas as pd

from src.data.classes import PRDTYPECODES

CLASSES: Final = np.array(PRDTYPECODES, dtype=np.int64)
Modality = Literal["text", "image"]


class Branch(ABC):
    """One model over one modality, with a fixed interface that fusion and packaging rely on."""

    name: ClassVar[str]
    modality: ClassVar[Modality]

    def __init__(self, params: Any) -> None:
        """Keep the branch's params block (from params.yaml)."""
        self.params = params

    @abstractmethod
    def fit(self, train: pd.DataFrame, val: pd.DataFrame) -> dict[str, Any]:
        """Fit on `train` (using `val` for selection or early stopping); return a JSON summary."""

    @abstractmethod
    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        """Probabilities, shape (len(products), 27) in `CLASSES` order; NaN rows abstain."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything needed to predict into `directory` (created if missing)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> Self:
        """Read a branch written by `save`."""

    def refit_params(self, summary: dict[str, Any]) -> Any | None:
        """Params that fit the configuration `fit` chose again, on train + val and without
        validation rows (`summary` is what `fit` returned); None where the branch cannot."""
        return None


# name -> "module:Class"; imported on use, so a text-only run never imports a deep-learning stack.
BRANCHES: Final[dict[str, str]] = {
    "text_tfidf": "src.models.text_tfidf:TfidfTextBranch",
    "text_cnn": "src.models.text_neural:NeuralTextBranch",
    "image_cnn": "src.models.image_cnn:ImageBranch",
}

# Branches that train on a GPU where there is one (the DAG sends them to its `gpu` queue).
ACCELERATED: Final = frozenset({"text_cnn", "image_cnn"})


def branch_class(name: str) -> type[Branch]:
    """The class of a branch by its name in params.yaml."""
    try:
        module, attribute = BRANCHES[name].split(":")
    except KeyError:
        raise ValueError(f"unknown branch {name!r}; known: {', '.join(BRANCHES)}") from None
    cls: type[Branch] = getattr(importlib.import_module(module), attribute)
    return cls


def fit_summary(history: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """What a Keras branch's `fit` reports of its epochs: count, best (by val loss), history, time.

    `history` has one dict per epoch (`epoch`, `val_loss`, `val_accuracy`, ...); `started` is the
    fit's `time.perf_counter()` start.
    """
    best = min((h for h in history if "val_loss" in h), key=lambda h: h["val_loss"], default=None)
    return {
        "epochs": len(history),
        "best_epoch": None if best is None else best["epoch"],
        "val_loss": None if best is None else best["val_loss"],
        "val_accuracy": None if best is None else best["val_accuracy"],
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
    }


def labels_index(codes: pd.Series | np.ndarray) -> np.ndarray:
    """Column index in `CLASSES` of each product-type code (ValueError for an unknown code)."""
    values = np.asarray(codes, dtype=np.int64)
    positions = np.searchsorted(CLASSES, values).clip(max=len(CLASSES) - 1)
    unknown = CLASSES[positions] != values
    if unknown.any():
        raise ValueError(f"unknown prdtypecode(s): {sorted(set(values[unknown].tolist()))}")
    return positions
