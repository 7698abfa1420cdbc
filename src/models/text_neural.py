"""The neural text branch: word ids -> embedding -> parallel 1-D convolutions -> softmax (Keras 3).

The tokenizer is plain Python and numpy (a vocabulary of the most frequent train words), not
`keras.layers.TextVectorization`, which needs TensorFlow: the input pipeline is numpy arrays,
so the branch trains under any Keras backend (TensorFlow, JAX, torch). Class weights counter
the imbalance, early stopping on the val loss keeps the best epoch, mixed precision is used
where a GPU is present, and every GPU of the host trains it data-parallel where the backend
allows (src/models/devices.py). The model outputs the classes present in train; absent ones get 0.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Self

import keras
import numpy as np
import pandas as pd

from src.config import TextCnnParams
from src.errors import RakutenError
from src.models import devices
from src.models.branch import CLASSES, Branch, Modality, fit_summary, labels_index
from src.models.image_cnn import balanced_class_weights, dtype_policy
from src.models.inference import class_probabilities

logger = logging.getLogger(__name__)

MODEL_FILE: Final = "model.keras"
VOCABULARY_FILE: Final = "vocabulary.json"
PAD: Final = 0
UNKNOWN: Final = 1
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The lowercased words of a text, in order."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Vocabulary:
    """Word ids: 0 pads, 1 is any word outside the vocabulary, then words by train frequency."""

    words: tuple[str, ...]
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {w: i + 2 for i, w in enumerate(self.words)})

    @classmethod
    def build(cls, texts: Iterable[str], size: int) -> Vocabulary:
        """The `size - 2` most frequent words (ties in alphabetical order, so deterministic)."""
        counts = Counter(word for text in texts for word in words(text))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls(tuple(word for word, _ in ranked[: size - 2]))

    @property
    def size(self) -> int:
        """Number of ids, padding and unknown included."""
        return len(self.words) + 2

    def encode(self, texts: Sequence[str], length: int) -> np.ndarray:
        """Ids of each text's first `length` words, padded with 0: shape (len(texts), length)."""
        ids = np.full((len(texts), length), PAD, dtype=np.int32)
        for row, text in enumerate(texts):
            tokens = [self._ids.get(word, UNKNOWN) for word in words(text)[:length]]
            ids[row, : len(tokens)] = tokens
        return ids


def build_model(params: TextCnnParams, vocabulary_size: int, classes: int) -> keras.Model:
    """Embedding, one Conv1D + global max pooling per kernel size, dropout, softmax."""
    inputs = keras.Input((params.sequence_length,), dtype="int32", name="word_ids")
    embedded = keras.layers.Embedding(vocabulary_size, params.embedding_dim)(inputs)
    embedded = keras.layers.Dropout(params.dropout)(embedded)
    pooled = [
        keras.layers.GlobalMaxPooling1D()(
            keras.layers.Conv1D(params.filters, width, padding="same", activation="relu")(embedded)
        )
        for width in params.kernel_sizes
    ]
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate()(pooled)
    x = keras.layers.Dropout(params.dropout)(x)
    # float32 output: a stable softmax under mixed precision.
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="text_cnn")


class NeuralTextBranch(Branch):
    """Product text -> probabilities over the 27 product types, by a small word CNN."""

    name: ClassVar[str] = "text_cnn"
    modality: ClassVar[Modality] = "text"
    params: TextCnnParams

    def __init__(self, params: TextCnnParams | None = None) -> None:
        super().__init__(params or TextCnnParams())
        self.model: keras.Model | None = None
        self.vocabulary: Vocabulary | None = None
        self.classes: np.ndarray = CLASSES  # the model's outputs: the classes present in train

    def fit(self, train: pd.DataFrame, val: pd.DataFrame) -> dict[str, Any]:
        """Build the vocabulary on train, train early-stopped on val; return a summary."""
        where = devices.placement(self.name, self.params.batch_size, sparse_gradients=True)
        with devices.distributed(where):
            summary = self._fit(train, val, where)
        if summary["mixed_precision"] or where.replicas > 1:  # a plain model, predicting anywhere
            self.model = self._float32(self.model)
        return {**summary, "devices": list(where.devices), "strategy": where.strategy}

    def _fit(
        self, train: pd.DataFrame, val: pd.DataFrame, where: devices.Placement
    ) -> dict[str, Any]:
        """`fit` on the devices chosen, under their strategy."""
        started = time.perf_counter()
        params = self.params
        keras.utils.set_random_seed(params.seed)
        present = np.unique(labels_index(train["prdtypecode"]))
        self.classes = CLASSES[present]
        self.vocabulary = Vocabulary.build(train["text"], params.vocab_size)
        mixed = params.mixed_precision and where.gpu
        with dtype_policy("mixed_float16" if mixed else "float32"):
            model = build_model(params, self.vocabulary.size, len(self.classes))
        model.compile(
            optimizer=keras.optimizers.Adam(params.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        x, y = self._inputs(train), self._targets(train)
        weights = balanced_class_weights(labels_index(train["prdtypecode"]))[present]
        # Class weights as sample weights: rows of weight 0 then fill the last batch where a
        # data-parallel fit must split every batch evenly over its devices.
        x, y, sample_weights = devices.even_batches(where, x, y, weights[y])
        callbacks: list[keras.callbacks.Callback] = [
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: logger.info(
                    "text_cnn epoch %d: %s", epoch + 1, logs
                )
            )
        ]
        # Val rows of a class absent from train cannot be scored by this model's outputs.
        val = val[val["prdtypecode"].isin(self.classes)]
        validation = None
        if len(val):
            ones = np.ones(len(val), dtype=np.float32)
            validation = devices.even_batches(where, self._inputs(val), self._targets(val), ones)
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=params.patience, restore_best_weights=True
                )
            )
        fitted = model.fit(
            x,
            y,
            sample_weight=sample_weights,
            batch_size=where.batch_size,
            epochs=params.epochs,
            validation_data=validation,
            callbacks=callbacks,
            verbose=0,
        )
        self.model = model
        history = [
            {
                "epoch": epoch,
                **{name: float(values[epoch]) for name, values in fitted.history.items()},
            }
            for epoch in range(len(fitted.history["loss"]))
        ]
        return {
            "vocabulary_size": self.vocabulary.size,
            "sequence_length": params.sequence_length,
            "mixed_precision": mixed,
            "train_rows": len(train),
            "val_rows": len(val),
            "classes_in_train": len(self.classes),
            **fit_summary(history, started),
        }

    def refit_params(self, summary: dict[str, Any]) -> TextCnnParams | None:
        """The epoch count early stopping chose (None where it had no validation rows)."""
        best = summary.get("best_epoch")
        return None if best is None else self.params.model_copy(update={"epochs": best + 1})

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        """Probabilities in `CLASSES` order; 0 for a class that had no train rows."""
        if self.model is None:
            raise RakutenError("the neural text branch is not trained: fit or load it first")
        proba = np.zeros((len(products), len(CLASSES)))
        if len(products):
            known = class_probabilities(self.model, self._inputs(products), self.params.batch_size)
            proba[:, labels_index(self.classes)] = known
        return proba

    def save(self, directory: Path) -> None:
        """Write `model.keras` and `vocabulary.json` (words, params, the model's classes)."""
        if self.model is None or self.vocabulary is None:
            raise RakutenError("the neural text branch is not trained: nothing to save")
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / MODEL_FILE)
        saved = {
            "params": self.params.model_dump(mode="json"),
            "classes": self.classes.tolist(),
            "words": list(self.vocabulary.words),
        }
        (directory / VOCABULARY_FILE).write_text(json.dumps(saved, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a branch written by `save`."""
        saved: dict[str, Any] = json.loads((directory / VOCABULARY_FILE).read_text())
        branch = cls(TextCnnParams.model_validate(saved["params"]))
        branch.classes = CLASSES[labels_index(np.array(saved["classes"]))]
        branch.vocabulary = Vocabulary(tuple(saved["words"]))
        branch.model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
        return branch

    def _inputs(self, products: pd.DataFrame) -> np.ndarray:
        assert self.vocabulary is not None
        return self.vocabulary.encode(products["text"].tolist(), self.params.sequence_length)

    def _targets(self, products: pd.DataFrame) -> np.ndarray:
        """Each product's column among the model's outputs (the classes present in train)."""
        return np.searchsorted(self.classes, products["prdtypecode"].to_numpy(dtype=np.int64))

    def _float32(self, model: keras.Model | None) -> keras.Model:
        """A float32 copy of a mixed-precision or distributed model, on no strategy, so the saved
        branch predicts on any device."""
        assert model is not None and self.vocabulary is not None
        with dtype_policy("float32"):
            copy = build_model(self.params, self.vocabulary.size, len(self.classes))
        copy.set_weights(model.get_weights())
        return copy
