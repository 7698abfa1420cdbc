"""Small raw snapshots in the hub's layout, written into tmp dirs for the data-step tests."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from src.data.classes import PRDTYPECODES
from src.data.layout import TEST_IMAGE_DIR, TRAIN_IMAGE_DIR, X_TEST_FILE, X_TRAIN_FILE, Y_TRAIN_FILE

RawFactory = Callable[..., Path]


def make_catalogue(rows: int, first: int = 0) -> pd.DataFrame:
    """Labelled rows: every class in turn, ids that follow the row number, some HTML."""
    numbers = range(first, first + rows)
    return pd.DataFrame(
        {
            "designation": [f"Produit N°{n} &amp; <b>Cie</b>" for n in numbers],
            "description": [
                f"<p>Une description du produit {n}</p>" if n % 3 else None for n in numbers
            ],
            "productid": [1_000_000 + n for n in numbers],
            "imageid": [5_000_000 + n for n in numbers],
            "prdtypecode": [PRDTYPECODES[n % len(PRDTYPECODES)] for n in numbers],
        },
        index=pd.Index(numbers),
    )


def jpeg_bytes(size: int = 16) -> bytes:
    """A small valid JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 80, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def catalogue() -> Callable[..., pd.DataFrame]:
    """`make_catalogue`, for tests to build rows with."""
    return make_catalogue


@pytest.fixture
def write_raw(tmp_path: Path) -> RawFactory:
    """Write a raw snapshot from labelled (and unlabelled) rows; photos (unless `photos` is False)
    for every row but those in `missing`, the ones in `corrupt` truncated. Returns its folder."""

    def write(
        labelled: pd.DataFrame,
        unlabelled: pd.DataFrame | None = None,
        *,
        name: str = "raw",
        photos: bool = True,
        missing: Collection[int] = (),
        corrupt: Collection[int] = (),
    ) -> Path:
        raw = tmp_path / name
        unlabelled = make_catalogue(3, first=90_000) if unlabelled is None else unlabelled
        raw.mkdir()
        x_columns = ["designation", "description", "productid", "imageid"]
        labelled[x_columns].to_csv(raw / X_TRAIN_FILE)
        labelled[["prdtypecode"]].to_csv(raw / Y_TRAIN_FILE)
        unlabelled[x_columns].to_csv(raw / X_TEST_FILE)
        photo_bytes = jpeg_bytes()
        for frame, folder in ((labelled, TRAIN_IMAGE_DIR), (unlabelled, TEST_IMAGE_DIR)):
            (raw / folder).mkdir(parents=True)
            for productid, imageid in zip(frame["productid"], frame["imageid"], strict=True):
                if not photos or productid in missing:
                    continue
                data = photo_bytes[:200] if productid in corrupt else photo_bytes
                (raw / folder / f"image_{imageid}_product_{productid}.jpg").write_bytes(data)
        return raw

    return write
