"""The image branch's input pipeline: photos streamed from disk in batches, decoded in parallel.

`ImageBatches` is a `keras.utils.PyDataset`: Keras fetches its batches in a pool of `workers`
threads (PIL releases the GIL while it decodes and resizes, so threads decode in parallel without
copying the dataset into processes) and keeps at most a few batches queued. It uses numpy and PIL
only, so it feeds a model under any Keras backend. Rows without a photo are left out up front;
a photo that turns out not to decode is dropped from its batch, so batches hold only usable photos.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import keras
import numpy as np

from src.features.images import decode_batch, has_photo
from src.models.photo_cache import PhotoCache


class ImageBatches(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches of decoded photos: (x, y, sample_weight) with labels, (x,) without."""

    def __init__(
        self,
        images: Sequence[object],
        *,
        image_size: int,
        batch_size: int,
        labels: np.ndarray | None = None,
        sample_weights: np.ndarray | None = None,
        augment: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        workers: int = 1,
        cache: PhotoCache | None = None,
        replicas: int = 1,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
        self.images = list(images)
        self.rows = np.array(
            [i for i, image in enumerate(self.images) if has_photo(image)],
            dtype=np.int64,
        )
        self.image_size = image_size
        self.batch_size = batch_size
        self.labels = labels
        self.sample_weights = sample_weights
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.cache = cache  # the photos already decoded, aligned with `images`
        self.replicas = replicas  # labelled batches are padded to a multiple of this
        self.epoch = 0
        self.order = self._order()

    def __len__(self) -> int:
        """Number of batches in an epoch."""
        return math.ceil(len(self.rows) / self.batch_size)

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index`: the photos that decode, and their row positions in `images`."""
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        if self.cache is None:
            x, kept = decode_batch([self.images[row] for row in rows], self.image_size, rng)
        else:
            x, kept = decode_batch(list(rows), self.image_size, rng, self.cache.photo)
        return x, rows[kept]

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        """Batch `index` as Keras takes it, padded with black photos of weight 0 to a multiple of
        `replicas` (each device of a data-parallel fit gets an equal slice) and never empty."""
        x, rows = self.batch(index)
        if self.labels is None:
            return (x,)
        weights = (
            self.sample_weights[rows]
            if self.sample_weights is not None
            else np.ones(len(rows), dtype=np.float32)
        )
        y = self.labels[rows]
        padding = max(self.replicas, -(-len(rows) // self.replicas) * self.replicas) - len(rows)
        if padding:
            x = np.concatenate([x, np.zeros((padding, *x.shape[1:]), dtype=x.dtype)])
            y = np.concatenate([y, np.repeat(self.labels[:1], padding)])
            weights = np.concatenate([weights, np.zeros(padding, dtype=weights.dtype)])
        return x, y, weights.astype(np.float32)

    def on_epoch_end(self) -> None:
        """Next epoch: new augmentation draws and, when shuffling, a new row order."""
        self.epoch += 1
        self.order = self._order()

    def _order(self) -> np.ndarray:
        """The rows in this epoch's order (a seeded permutation when shuffling)."""
        if not self.shuffle:
            return self.rows
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.rows)


def prefetched(batches: ImageBatches) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every batch of `batches` in order, decoded ahead in its `workers` threads (few in flight)."""
    workers = max(1, batches.workers)
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()
        for index in range(len(batches)):
            pending.append(pool.submit(batches.batch, index))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
