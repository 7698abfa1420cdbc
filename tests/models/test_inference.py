"""The Keras branches' fast predict path gives what `Model.predict` gives, at every batch size."""

from __future__ import annotations

import numpy as np
import pytest

from src.config import ImageCnnParams, TextCnnParams
from src.models import image_cnn, text_neural
from src.models.inference import class_probabilities, padded_size

BATCH = 8


def test_padded_sizes_are_few_powers_of_two_capped_at_the_batch() -> None:
    assert [padded_size(n, BATCH) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 8]
    assert len({padded_size(n, 128) for n in range(1, 129)}) == 8


@pytest.mark.parametrize("rows", [1, 3, BATCH, 2 * BATCH + 3])
def test_the_branches_models_answer_as_model_predict_does(rows: int) -> None:
    rng = np.random.default_rng(rows)
    text_params = TextCnnParams(vocab_size=50, sequence_length=12, embedding_dim=8, filters=4)
    text = text_neural.build_model(text_params, 50, 27)
    words = rng.integers(0, 50, (rows, 12), dtype=np.int32)
    photo_params = ImageCnnParams(image_size=32, conv_filters=(4, 8))
    photo, _ = image_cnn.build_model(photo_params, "small", None)
    photos = rng.uniform(0, 255, (rows, 32, 32, 3)).astype(np.float32)

    for model, x in ((text, words), (photo, photos)):
        expected = np.asarray(model.predict(x, batch_size=BATCH, verbose=0), dtype=np.float64)
        expected /= expected.sum(axis=1, keepdims=True)

        fast = class_probabilities(model, x, BATCH)

        assert fast.shape == (rows, 27)
        np.testing.assert_allclose(fast, expected, atol=1e-6)
