"""The image branch's input pipeline: batches of decodable photos, streamed and reproducible."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.models.image_batches import ImageBatches, prefetched


def _jpeg(value: int, size: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, 255 - value, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def photos(tmp_path: Path) -> list[object]:
    """12 products: 8 photo files, 1 as bytes, 1 without photo, 1 missing file, 1 corrupt."""
    sources: list[object] = []
    for number in range(8):
        path = tmp_path / f"image_{number}.jpg"
        path.write_bytes(_jpeg(20 * number))
        sources.append(str(path))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(_jpeg(5)[:100])
    sources += [_jpeg(200), None, str(tmp_path / "absent.jpg"), str(corrupt)]
    return sources


def test_batches_hold_only_decodable_photos(photos: list[object]) -> None:
    labels = np.arange(len(photos)) % 27
    weights = np.linspace(0.5, 2, len(photos))
    batches = ImageBatches(
        photos, image_size=16, batch_size=4, labels=labels, sample_weights=weights
    )
    assert batches.rows.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11]  # no photo: left out
    assert len(batches) == 3
    seen = []
    for index in range(len(batches)):
        x, y, w = batches[index]
        assert x.shape[1:] == (16, 16, 3) and x.dtype == np.float32
        assert len(x) == len(y) == len(w)
        _, rows = batches.batch(index)
        np.testing.assert_array_equal(y, labels[rows])
        np.testing.assert_allclose(w, weights[rows])
        seen += rows.tolist()
    assert seen == [0, 1, 2, 3, 4, 5, 6, 7, 8]  # the missing and corrupt files are dropped


def test_unlabelled_batches_are_inputs_only(photos: list[object]) -> None:
    batches = ImageBatches(photos, image_size=16, batch_size=5)
    (x,) = batches[0]
    assert x.shape == (5, 16, 16, 3)


def test_a_batch_with_no_usable_photo_weighs_nothing(tmp_path: Path) -> None:
    broken = [str(tmp_path / "absent.jpg"), b"garbage", b"\xff\xd8\xff"]
    batches = ImageBatches(broken, image_size=16, batch_size=4, labels=np.array([3, 4, 5]))
    x, y, w = batches[0]
    assert x.shape == (1, 16, 16, 3)
    assert y.shape == (1,)
    assert w.tolist() == [0.0]


def test_no_photo_at_all_means_no_batches() -> None:
    assert len(ImageBatches([None, None], image_size=16, batch_size=4)) == 0


def test_shuffle_and_augmentation_are_seeded_and_change_each_epoch(photos: list[object]) -> None:
    def epoch_rows(batches: ImageBatches) -> list[int]:
        return [row for index in range(len(batches)) for row in batches.batch(index)[1]]

    def make() -> ImageBatches:
        labels = np.zeros(len(photos), dtype=np.int64)
        return ImageBatches(
            photos, image_size=16, batch_size=4, labels=labels, augment=True, shuffle=True, seed=3
        )

    first, second = make(), make()
    np.testing.assert_array_equal(first[0][0], second[0][0])
    rows = epoch_rows(first)
    assert rows == epoch_rows(second)
    assert sorted(rows) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    first.on_epoch_end()
    assert sorted(epoch_rows(first)) == sorted(rows)
    assert epoch_rows(first) != rows


def test_prefetched_gives_every_batch_in_order(photos: list[object]) -> None:
    batches = ImageBatches(photos, image_size=16, batch_size=3, workers=2)
    fetched = list(prefetched(batches))
    assert len(fetched) == len(batches)
    for index, (x, rows) in enumerate(fetched):
        expected_x, expected_rows = batches.batch(index)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_array_equal(x, expected_x)


def test_keras_streams_the_batches_with_parallel_workers(photos: list[object]) -> None:
    """Keras fits from the dataset in its worker threads, and every usable photo is seen."""
    import keras

    seen: list[int] = []

    class Recorded(ImageBatches):
        def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            x, rows = super().batch(index)
            seen.extend(rows.tolist())
            return x, rows

    labels = np.arange(len(photos)) % 3
    batches = Recorded(
        photos, image_size=16, batch_size=4, labels=labels, augment=True, shuffle=True, workers=2
    )
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(27, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(batches, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert sorted(set(seen)) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert batches.epoch >= 2  # a new order and new augmentations each epoch


def test_batches_pad_to_a_multiple_of_the_replicas_with_weightless_photos(
    photos: list[object],
) -> None:
    labels = np.arange(len(photos)) % 27
    batches = ImageBatches(photos, image_size=16, batch_size=4, labels=labels, replicas=2)
    sizes = []
    for index in range(len(batches)):
        x, y, w = batches[index]
        _, rows = batches.batch(index)
        assert len(x) == len(y) == len(w) and len(x) % 2 == 0
        assert (w[len(rows) :] == 0).all() and (w[: len(rows)] == 1).all()
        assert not x[len(rows) :].any()
        sizes.append(len(x))
    assert sizes == [4, 4, 2]  # the last batch: photo 8 and one black photo of weight 0
