"""Predictions for a file of listings (hub X layout), with the packaged model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm import tqdm

from src.data.io import read_raw_csv, write_atomic
from src.errors import RakutenError
from src.models.data import photo_paths
from src.models.packaged import CHAMPION_URI, load

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("designation", "productid", "imageid")


def model_inputs(listings: pd.DataFrame, images_dir: Path | None) -> pd.DataFrame:
    """The packaged model's input columns for listings in the hub's X layout.

    The photos are looked up in `images_dir` (hub naming); without it, they are the listings'
    own `image_path` column where there is one.
    """
    description = listings.get("description")
    return pd.DataFrame(
        {
            "designation": listings["designation"].fillna(""),
            "description": "" if description is None else description.fillna(""),
            "image_path": (
                photo_paths(listings, images_dir) if images_dir else listings.get("image_path")
            ),
        },
        index=listings.index,
    )


def score(model: PyFuncModel, inputs: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """The model's predictions for `inputs` (same index), in batches, with a progress bar."""
    parts: list[pd.DataFrame] = []
    with tqdm(total=len(inputs), unit="products", desc="predict", disable=None) as progress:
        for start in range(0, len(inputs), batch_size):
            parts.append(pd.DataFrame(model.predict(inputs.iloc[start : start + batch_size])))
            progress.update(min(batch_size, len(inputs) - start))
    if not parts:
        return pd.DataFrame(columns=["prdtypecode", "label", "probability", "top3"])
    predictions = pd.concat(parts, ignore_index=True)
    predictions.index = inputs.index
    return predictions


def predict_listings(
    input_csv: Path,
    output_csv: Path,
    images_dir: Path | None,
    model_uri: str | None,
    tracking_uri: str,
    batch_size: int = 2048,
) -> dict[str, Any]:
    """Score every listing of `input_csv` and write productid, prdtypecode, probability, top 3."""
    listings = read_raw_csv(input_csv)
    missing = [column for column in REQUIRED_COLUMNS if column not in listings]
    if missing:
        raise RakutenError(f"{input_csv} lacks column(s) {', '.join(missing)} (hub X layout)")
    if images_dir is not None and not images_dir.is_dir():
        raise RakutenError(f"photo folder {images_dir} does not exist")
    uri = model_uri or CHAMPION_URI
    model = load(uri, tracking_uri)
    inputs = model_inputs(listings, images_dir)
    predictions = score(model, inputs, batch_size).reset_index(drop=True)
    predictions.insert(0, "productid", listings["productid"].to_numpy())
    write_atomic(output_csv, lambda tmp: predictions.to_csv(tmp, index=False))
    with_photo = int(inputs["image_path"].notna().sum()) if images_dir else 0
    logger.info("%d listings scored with %s (%d with a photo)", len(predictions), uri, with_photo)
    return {
        "model": uri,
        "rows": len(predictions),
        "with_photo": with_photo,
        "output": str(output_csv),
    }
