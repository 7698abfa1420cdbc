"""Photo decoding, resizing and augmentation for the image branch."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.features.images import JITTER, augment, decode_batch, decode_image, has_photo


def _encode(image: Image.Image, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _photo(size: int = 500, seed: int = 0) -> Image.Image:
    """A smooth colourful photo, like a product on a background."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(0, 1, size)
    base = rng.uniform(0, 255, 3)
    pixels = base + 120 * np.sin(6 * axis[:, None, None] + 4 * axis[None, :, None] + np.arange(3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def real_photos(rakuten_sample: Path) -> list[Path]:
    photos = sorted((rakuten_sample / "images" / "image_train").glob("*.jpg"))
    assert len(photos) == 20
    return photos


def test_real_photos_decode_to_the_input_size(real_photos: list[Path]) -> None:
    for path in real_photos:
        image = decode_image(str(path), 96)
        assert image is not None
        assert image.shape == (96, 96, 3)
        assert image.dtype == np.uint8
        assert 0 < image.mean() < 255


def test_bytes_and_path_decode_the_same(real_photos: list[Path]) -> None:
    path = real_photos[0]
    from_path = decode_image(path, 64)
    assert from_path is not None
    np.testing.assert_array_equal(decode_image(path.read_bytes(), 64), from_path)
    np.testing.assert_array_equal(decode_image(str(path), 64), from_path)


def test_fast_decode_matches_a_full_decode_and_resize(real_photos: list[Path]) -> None:
    """Image.draft's reduced decode changes the pixels only slightly, against a full decode."""
    for path in real_photos[:5]:
        fast = decode_image(path, 96)
        with Image.open(path) as image:
            full = np.asarray(image.convert("RGB").resize((96, 96), Image.Resampling.BILINEAR))
        assert fast is not None
        assert np.abs(fast.astype(float) - full).mean() < 6


def test_real_image_only_photos_decode(shared_data: Path) -> None:
    photos = sorted((shared_data / "rakuten_image_only" / "image_train").glob("*.jpg"))
    assert len(photos) == 96
    decoded = [decode_image(path, 32) for path in photos]
    assert all(image is not None and image.shape == (32, 32, 3) for image in decoded)


@pytest.mark.parametrize(
    "source",
    [
        None,
        float("nan"),
        b"",
        "",
        b"not a photo at all",
        _encode(_photo())[:500],  # truncated
        "/nowhere/image_1_product_2.jpg",
    ],
    ids=["none", "nan", "empty-bytes", "empty-path", "garbage", "truncated", "missing-file"],
)
def test_unusable_photos_give_none(source: object) -> None:
    assert decode_image(source, 64) is None


def test_corrupt_synthetic_photos_give_none(tmp_path: Path) -> None:
    """The generator's deliberately broken files (cut JPEGs and random bytes) decode to None."""
    from src.data.synth import synthesize

    summary = synthesize(tmp_path / "raw", rows=1500, test_rows=0, image_size=32, seed=3)
    assert summary.images_corrupt >= 1
    photos = sorted((tmp_path / "raw" / "images" / "image_train").glob("*.jpg"))
    failed = [path for path in photos if decode_image(path, 32) is None]
    assert len(failed) == summary.images_corrupt


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_other_colour_modes_become_rgb(mode: str) -> None:
    image = _photo(40).convert(mode)
    data = _encode(image, "JPEG" if mode in ("L", "CMYK") else "PNG")
    decoded = decode_image(data, 32)
    assert decoded is not None
    assert decoded.shape == (32, 32, 3)


def test_non_square_photos_are_resized_to_a_square() -> None:
    decoded = decode_image(_encode(_photo(300).resize((300, 120))), 48)
    assert decoded is not None
    assert decoded.shape == (48, 48, 3)


def test_has_photo() -> None:
    assert has_photo("/a/b.jpg") and has_photo(Path("b.jpg")) and has_photo(b"\xff\xd8")
    assert not any(has_photo(x) for x in (None, float("nan"), "", b"", 3))


def test_augment_keeps_shape_and_dtype_and_is_deterministic() -> None:
    image = np.asarray(_photo(64))
    first = augment(image, np.random.default_rng(7))
    assert first.shape == image.shape
    assert first.dtype == np.uint8
    np.testing.assert_array_equal(augment(image, np.random.default_rng(7)), first)
    others = [augment(image, np.random.default_rng(seed)) for seed in range(8)]
    assert any(not np.array_equal(other, first) for other in others)
    assert any(not np.array_equal(other, image) for other in others)


def test_augment_is_small() -> None:
    """Shifts, flips and jitter change the look, not the colours a product is known by."""
    image = np.asarray(_photo(64, seed=1)) // 4 + np.array([150, 20, 60], dtype=np.uint8)
    for seed in range(20):
        out = augment(image, np.random.default_rng(seed))
        assert abs(out.mean() - image.mean()) <= 255 * JITTER / 2 + 1
        assert out.reshape(-1, 3).mean(0).argmax() == 0  # still a red product


def test_augment_flips_some_photos() -> None:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :8] = 255  # a white band on the left
    lefts = [augment(image, np.random.default_rng(seed))[:, :8].mean() for seed in range(20)]
    assert min(lefts) < 100 < max(lefts)


def test_decode_batch_keeps_the_photos_that_decode(real_photos: list[Path]) -> None:
    sources = [str(real_photos[0]), None, b"broken", real_photos[1].read_bytes(), "/missing.jpg"]
    batch, kept = decode_batch(sources, 40)
    assert batch.shape == (2, 40, 40, 3)
    assert batch.dtype == np.float32
    assert kept.tolist() == [0, 3]
    np.testing.assert_array_equal(batch[1], decode_image(sources[3], 40))
    augmented, kept_again = decode_batch(sources, 40, np.random.default_rng(0))
    assert kept_again.tolist() == [0, 3]
    assert augmented.shape == batch.shape
    assert not np.array_equal(augmented, batch)


def test_decode_batch_of_nothing_usable() -> None:
    batch, kept = decode_batch([None, b"x"], 16)
    assert batch.shape == (0, 16, 16, 3)
    assert kept.shape == (0,)
