"""How the Keras branches predict: chunks of at most `batch_size` rows, each padded to a power of
two, through `predict_on_batch`.

`Model.predict` sets up a data adapter, an epoch iterator and its callbacks on every call: tens
of milliseconds, most of the cost of scoring one product. `predict_on_batch` runs the model's
compiled predict step on the array as it is. Padding each chunk to a power of two (at most
`batch_size`) keeps the shapes the step sees to a handful, so a backend that compiles per shape
(JAX, XLA) compiles a few times, not once per request size; a padded row changes no other row's
output (inference is per row).
"""

from __future__ import annotations

import keras
import numpy as np


def padded_size(rows: int, batch_size: int) -> int:
    """The smallest power of two holding `rows`, capped at `batch_size`."""
    return min(batch_size, 1 << max(rows - 1, 0).bit_length())


def class_probabilities(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's softmax outputs for `x` as float64 rows that sum to 1, in chunks."""
    parts = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        size = padded_size(len(chunk), batch_size)
        if size > len(chunk):
            chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *x.shape[1:]), x.dtype)])
        out = np.asarray(model.predict_on_batch(chunk), dtype=np.float64)[
            : min(batch_size, len(x) - start)
        ]
        parts.append(out / out.sum(axis=1, keepdims=True))
    return np.concatenate(parts) if parts else np.empty((0, model.output_shape[-1]))
