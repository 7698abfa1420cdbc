"""Photo checks: missing, corrupt, decoding, and the cache of verdicts."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from src.data import images
from src.data.images import CORRUPT, MISSING, OK, check_images, decode_status, orphan_photos

FOLDER = "images/image_train"


def _jpeg(size: int = 64, progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (10, 120, 200)).save(
        buffer, format="JPEG", progressive=progressive
    )
    return buffer.getvalue()


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    folder = tmp_path / FOLDER
    folder.mkdir(parents=True)
    (folder / "good.jpg").write_bytes(_jpeg())
    (folder / "progressive.jpg").write_bytes(_jpeg(progressive=True))
    (folder / "truncated.jpg").write_bytes(_jpeg()[:300])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"not a photo at all")
    return tmp_path


def test_decode_status(raw: Path) -> None:
    folder = raw / FOLDER
    assert decode_status(str(folder / "good.jpg")) == OK
    assert decode_status(str(folder / "progressive.jpg")) == OK
    for name in ("truncated.jpg", "empty.jpg", "text.jpg"):
        assert decode_status(str(folder / name)) == CORRUPT


def test_check_images_in_the_order_asked_with_missing_ones(raw: Path) -> None:
    names = ["text.jpg", "good.jpg", "absent.jpg", "truncated.jpg", "good.jpg"]
    statuses = check_images(raw, [f"{FOLDER}/{name}" for name in names])
    assert statuses == [CORRUPT, OK, MISSING, CORRUPT, OK]


def test_pool_gives_the_same_verdicts(raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_POOL_MIN", 1)
    paths = [f"{FOLDER}/{name}" for name in ("good.jpg", "truncated.jpg", "progressive.jpg")]
    assert check_images(raw, paths, workers=2) == [OK, CORRUPT, OK]


def test_cache_spares_decoding_until_a_file_changes(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "interim" / "image_checks.parquet"
    paths = [f"{FOLDER}/good.jpg", f"{FOLDER}/truncated.jpg"]
    assert check_images(raw, paths, cache) == [OK, CORRUPT]

    decoded: list[str] = []
    monkeypatch.setattr(images, "decode_status", lambda path: decoded.append(path) or OK)
    assert check_images(raw, paths, cache) == [OK, CORRUPT]
    assert decoded == []

    good = raw / FOLDER / "good.jpg"
    good.write_bytes(b"garbage")
    os.utime(good, ns=(1, 1))
    monkeypatch.undo()
    assert check_images(raw, paths, cache) == [CORRUPT, CORRUPT]


def test_orphan_photos(raw: Path) -> None:
    assert orphan_photos(raw, [f"{FOLDER}/good.jpg", f"{FOLDER}/absent.jpg"]) == 4
