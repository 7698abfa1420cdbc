"""An opt-in cache of resized photos, so that a GPU is not left waiting for JPEG decoding.

With `RAKUTEN_PHOTO_CACHE_DIR` set, the image branch decodes each split's photos once, at the
model's input size and in parallel threads, into one uint8 array of shape (photos, size, size, 3)
saved as `.npy` and memory-mapped from then on; a second `.npy` says which photos decoded.
Every later epoch and every later training on the same photos reads pixels from the page cache
instead of decoding JPEGs; augmentation still runs per batch, on the cached pixels. The pixels
are `decode_image`'s, so a batch is identical with and without the cache.

A cache file is named by a key over the data version of its photos (each one's path, size in
bytes and modification time, or the bytes themselves), their order and the input size: new or
changed photos, another split or another size get a new file, never a stale one. Files are
written under a temporary name and renamed once complete; nothing removes old ones (delete the
folder to reclaim its space). The disk cost is photos x size x size x 3 bytes (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from tqdm import tqdm

from src.features.images import decode_image

logger = logging.getLogger(__name__)

# Part of every key: bump it when decode_image's pixels change, so old caches are not read.
FORMAT: Final = "rakuten-photo-cache-v1"
CHUNK: Final = 256  # photos per decoding task


@dataclass(frozen=True)
class PhotoCache:
    """The photos of one split at one size: row i of `pixels` is photo i (valid where `ok[i]`)."""

    pixels: np.ndarray  # (photos, size, size, 3) uint8, memory-mapped
    ok: np.ndarray  # (photos,) bool: whether photo i decoded

    @property
    def size(self) -> int:
        """The side of the cached photos in pixels."""
        return int(self.pixels.shape[1])

    def photo(self, row: object, size: int) -> np.ndarray | None:
        """Photo `row` as decode_image gives it (uint8 RGB), or None where it did not decode."""
        if size != self.size:
            raise ValueError(f"the cache holds {self.size} px photos, not {size} px")
        index = int(row)  # type: ignore[call-overload]
        return np.asarray(self.pixels[index]) if self.ok[index] else None


def cache_key(images: Sequence[object], size: int) -> str:
    """A digest of the photos' data version (paths, sizes, modification times), order and size."""
    digest = hashlib.sha256(f"{FORMAT}\n{size}\n{len(images)}\n".encode())
    for image in images:
        if isinstance(image, bytes | bytearray):
            digest.update(b"bytes:" + hashlib.sha256(image).digest())
        elif isinstance(image, str | os.PathLike) and str(image):
            try:
                stat = Path(image).stat()
                digest.update(f"{image}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            except OSError:
                digest.update(f"{image}:missing".encode())
        else:
            digest.update(b"none")
        digest.update(b"\n")
    return digest.hexdigest()


def open_cache(directory: Path, images: Sequence[object], size: int, workers: int) -> PhotoCache:
    """The cache of these photos at this size: read if written before, else written now."""
    key = cache_key(images, size)
    pixels_file = directory / f"photos-{size}px-{key[:24]}.npy"
    ok_file = pixels_file.with_name(f"{pixels_file.stem}-ok.npy")
    if not ok_file.is_file():  # the ok file is renamed last: it marks a complete cache
        _write(pixels_file, ok_file, images, size, workers)
    else:
        logger.info("photo cache: reading %d photos at %d px from %s", len(images), size, directory)
    return PhotoCache(np.load(pixels_file, mmap_mode="r"), np.load(ok_file))


def _write(
    pixels_file: Path, ok_file: Path, images: Sequence[object], size: int, workers: int
) -> None:
    """Decode every photo into a new cache, in `workers` threads, then rename it into place."""
    started = time.perf_counter()
    pixels_file.parent.mkdir(parents=True, exist_ok=True)
    partial = pixels_file.with_name(f".{pixels_file.name}.{os.getpid()}.partial")
    gib = len(images) * size * size * 3 / 1024**3
    logger.info(
        "photo cache: decoding %d photos at %d px into %s (%.2f GiB), %d threads",
        len(images),
        size,
        pixels_file,
        gib,
        workers,
    )
    pixels = np.lib.format.open_memmap(
        partial, mode="w+", dtype=np.uint8, shape=(len(images), size, size, 3)
    )
    ok = np.zeros(len(images), dtype=bool)

    def decode(start: int) -> int:
        for row in range(start, min(start + CHUNK, len(images))):
            image = decode_image(images[row], size)
            if image is not None:
                pixels[row] = image
                ok[row] = True
        return min(CHUNK, len(images) - start)

    try:
        with (
            ThreadPoolExecutor(max(1, workers), thread_name_prefix="cache") as pool,
            tqdm(total=len(images), unit="photo", desc="photo cache", disable=None) as progress,
        ):
            for done in pool.map(decode, range(0, len(images), CHUNK)):
                progress.update(done)
        pixels.flush()
        partial.replace(pixels_file)
        partial_ok = ok_file.with_name(f".{ok_file.name}.{os.getpid()}.partial.npy")
        np.save(partial_ok, ok)
        partial_ok.replace(ok_file)
    finally:
        partial.unlink(missing_ok=True)
    logger.info(
        "photo cache: %d of %d photos decoded in %.1f s",
        int(ok.sum()),
        len(images),
        time.perf_counter() - started,
    )
