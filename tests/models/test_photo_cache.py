"""The cache of resized photos: written once, keyed by the photos' version, same pixels."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from src.config import ImageCnnParams, get_settings
from src.models import photo_cache
from src.models.image_batches import ImageBatches
from src.models.image_cnn import ImageBranch
from src.models.photo_cache import cache_key, open_cache


def _jpeg(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def photos(tmp_path: Path) -> list[object]:
    """14 products: 10 photo files, 1 as bytes, 1 without photo, 1 missing file, 1 corrupt."""
    sources: list[object] = []
    for number in range(10):
        path = tmp_path / "photos" / f"image_{number}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(_jpeg(number))
        sources.append(str(path))
    corrupt = tmp_path / "photos" / "corrupt.jpg"
    corrupt.write_bytes(_jpeg(99)[:150])
    sources += [_jpeg(7), None, str(tmp_path / "absent.jpg"), str(corrupt)]
    return sources


@pytest.mark.parametrize("augment", [False, True])
def test_cached_batches_hold_the_same_pixels_as_streamed_ones(
    photos: list[object], tmp_path: Path, augment: bool
) -> None:
    labels = np.arange(len(photos)) % 27

    def batches(cache: photo_cache.PhotoCache | None) -> ImageBatches:
        return ImageBatches(
            photos, image_size=24, batch_size=4, labels=labels, augment=augment, shuffle=True,
            seed=3, cache=cache,
        )  # fmt: skip

    streamed, cached = batches(None), batches(open_cache(tmp_path / "cache", photos, 24, 2))
    for _ in range(2):  # two epochs: new order and new augmentation draws in both
        for index in range(len(streamed)):
            for got, expected in zip(cached[index], streamed[index], strict=True):
                np.testing.assert_array_equal(got, expected)
        streamed.on_epoch_end()
        cached.on_epoch_end()


def test_one_uint8_array_per_photo_list_and_size_written_once(
    photos: list[object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "cache"
    cache = open_cache(directory, photos, 24, workers=2)
    assert cache.pixels.dtype == np.uint8 and cache.pixels.shape == (14, 24, 24, 3)
    assert isinstance(cache.pixels, np.memmap)
    assert cache.ok.tolist() == [True] * 11 + [False] * 3
    files = sorted(path.name for path in directory.iterdir())
    assert len(files) == 2 and not any(name.startswith(".") for name in files)

    def no_decoding(source: object, size: int) -> None:
        raise AssertionError("the cache was decoded again")

    monkeypatch.setattr(photo_cache, "decode_image", no_decoding)
    again = open_cache(directory, photos, 24, workers=2)
    np.testing.assert_array_equal(again.pixels, cache.pixels)
    with pytest.raises(ValueError, match="holds 24 px photos"):
        again.photo(0, 32)


def test_the_key_follows_the_photos_version_order_and_size(
    photos: list[object], tmp_path: Path
) -> None:
    key = cache_key(photos, 24)
    assert cache_key(list(photos), 24) == key
    assert cache_key(photos, 32) != key
    assert cache_key(photos[::-1], 24) != key
    changed = Path(str(photos[0]))
    changed.write_bytes(_jpeg(123))
    os.utime(changed, ns=(1, 1))
    assert cache_key(photos, 24) != key


def test_the_image_branch_uses_the_cache_only_when_a_folder_is_set(
    photos: list[object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    products = pd.DataFrame({"image": photos})
    branch = ImageBranch(ImageCnnParams(image_size=32, workers=1))
    get_settings.cache_clear()
    monkeypatch.delenv("RAKUTEN_PHOTO_CACHE_DIR", raising=False)
    try:
        assert branch._photo_cache(products) is None
        monkeypatch.setenv("RAKUTEN_PHOTO_CACHE_DIR", str(tmp_path / "cache"))
        get_settings.cache_clear()
        cache = branch._photo_cache(products)
        assert cache is not None and cache.pixels.shape == (14, 32, 32, 3)
        assert len(list((tmp_path / "cache").glob("photos-32px-*.npy"))) == 2
    finally:
        get_settings.cache_clear()
