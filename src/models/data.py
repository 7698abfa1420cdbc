"""Products as the branches see them: cleaned text columns plus an `image` (path, bytes or None)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pandas as pd

from src.features.text import text_features

SPLIT_FILES: Final = {
    "train": "train.parquet",
    "val": "val.parquet",
    "test": "test.parquet",
    "unlabelled": "unlabelled.parquet",
}


def load_split(processed_dir: Path, raw_dir: Path, split: str) -> pd.DataFrame:
    """One split of the processed dataset, with `image` the photo's absolute path or None."""
    frame = pd.read_parquet(processed_dir / SPLIT_FILES[split])
    root = raw_dir.absolute()
    frame["image"] = [None if pd.isna(p) else str(root / p) for p in frame["image_path"]]
    return frame


def photo_paths(listings: pd.DataFrame, images_dir: Path) -> list[str | None]:
    """Each listing's photo in `images_dir` (hub naming), or None where there is no such file."""
    paths = [
        images_dir.absolute() / f"image_{imageid}_product_{productid}.jpg"
        for imageid, productid in zip(listings["imageid"], listings["productid"], strict=True)
    ]
    return [str(path) if path.is_file() else None for path in paths]


def products_from_listings(
    listings: pd.DataFrame, *, lowercase: bool = True, images_dir: Path | None = None
) -> pd.DataFrame:
    """Products from raw listings (hub X layout, or `designation`/`description`/`image` inputs).

    The text is cleaned exactly as make_dataset cleans it. `image` is kept where given (path or
    bytes); otherwise, with `images_dir`, it is the file `image_<imageid>_product_<productid>.jpg`
    there when that exists.
    """
    if "designation" not in listings:
        raise ValueError("listings need a 'designation' column")
    description = listings.get("description", pd.Series(None, index=listings.index, dtype=object))
    products = text_features(listings["designation"], description, lowercase=lowercase)
    for column in ("productid", "imageid"):
        if column in listings:
            products[column] = listings[column]
    if "image" in listings:
        products["image"] = listings["image"].astype(object).where(listings["image"].notna(), None)
    elif images_dir is not None and {"productid", "imageid"} <= set(listings.columns):
        products["image"] = photo_paths(listings, images_dir)
    else:
        products["image"] = None
    return products
