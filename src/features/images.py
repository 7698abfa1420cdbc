"""Product photos as model inputs: decode, resize and augment, with PIL and numpy only.

JPEGs decode straight to a reduced size (`Image.draft`: libjpeg's DCT scaling to the smallest
1/2, 1/4 or 1/8 scale still at least the model's input size), then are resized to the input
size. A photo that is missing or does not decode gives None, never an exception, so that one bad
file costs a model one product's vote and never a batch. Nothing here imports a deep-learning
framework: the image branch's input pipeline runs the same under every Keras backend.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from typing import Final, cast

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

MAX_SHIFT: Final = 0.1  # largest translation, as a share of the side
JITTER: Final = 0.2  # largest relative change of contrast, and of brightness (share of 255)


def has_photo(source: object) -> bool:
    """Whether a product's `image` names a photo (a path or bytes), rather than None or NaN."""
    if isinstance(source, str | bytes | bytearray):
        return len(source) > 0
    return isinstance(source, os.PathLike)


def decode_image(source: object, size: int) -> np.ndarray | None:
    """The photo as a (size, size, 3) uint8 RGB array, or None if it is missing or corrupt."""
    if not has_photo(source):
        return None
    opened = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        with Image.open(cast(str | os.PathLike[str] | io.BytesIO, opened)) as image:
            image.draft("RGB", (size, size))
            rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)
    except Exception as error:  # PIL reports a broken file with many types (OSError, SyntaxError…)
        logger.debug("photo %s not usable: %s", _describe(source), error)
        return None


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A randomly flipped, shifted and brightness/contrast-jittered copy (uint8, same shape)."""
    flip, shift_y, shift_x, contrast, brightness = rng.random(5)
    out = image[:, ::-1] if flip < 0.5 else image
    height, width = image.shape[:2]
    pad_y, pad_x = round(MAX_SHIFT * height), round(MAX_SHIFT * width)
    if pad_y or pad_x:
        padded = np.pad(out, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="edge")
        top, left = round(shift_y * 2 * pad_y), round(shift_x * 2 * pad_x)
        out = padded[top : top + height, left : left + width]
    pixels = out.astype(np.float32)
    gain = 1 + JITTER * (2 * contrast - 1)
    offset = 255 * JITTER * (brightness - 0.5)  # at most half of JITTER either way
    # (pixels - mean) * gain + mean + offset, in place: a few times faster than with temporaries
    mean = float(pixels.mean())
    pixels *= gain
    pixels += mean * (1 - gain) + offset
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8)


def decode_batch(
    sources: Sequence[object],
    size: int,
    rng: np.random.Generator | None = None,
    decode: Callable[[object, int], np.ndarray | None] = decode_image,
) -> tuple[np.ndarray, np.ndarray]:
    """The photos that decode as a float32 (n, size, size, 3) batch in [0, 255] (augmented when
    given a generator), and their positions in `sources`; `decode` reads one (a photo cache's
    reader where there is one)."""
    batch = np.empty((len(sources), size, size, 3), dtype=np.float32)
    kept: list[int] = []
    for position, source in enumerate(sources):
        image = decode(source, size)
        if image is None:
            continue
        batch[len(kept)] = augment(image, rng) if rng is not None else image
        kept.append(position)
    return batch[: len(kept)], np.array(kept, dtype=np.int64)


def _describe(source: object) -> str:
    """A short name for a photo in a log line."""
    if isinstance(source, bytes | bytearray):
        return f"<{len(source)} bytes>"
    return str(source)
