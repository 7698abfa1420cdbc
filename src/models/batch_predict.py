"""The batch-prediction step: score the products a model version has not scored yet; store them.

The products are the raw snapshot's test listings (`X_test_update.csv`, photos in
`images/image_test/`) and every CSV in the hub's X layout dropped into the incoming folder (photos
in its `images/` subfolder). The model is the version an alias (`champion`, or `challenger` for
shadow scoring) points to, resolved by `src.registry.lifecycle.model_ref`. The batch is stored by
`src.db.store.store_batch`, keyed by (logical date, model version), and written to Parquet under
the predictions folder.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any, Final

import pandas as pd
from sqlalchemy import Engine

from src.data.io import raw_version, read_raw_csv
from src.data.layout import TEST_IMAGE_DIR, X_TEST_FILE
from src.db.store import ModelRef, store_batch, unscored
from src.errors import RakutenError
from src.models.data import photo_paths
from src.models.packaged import load
from src.models.predict import REQUIRED_COLUMNS, model_inputs, score

logger = logging.getLogger(__name__)

INCOMING_IMAGES: Final = "images"  # photos of the incoming listings, hub naming


def batch_image_dirs(raw_dir: Path, incoming_dir: Path | None) -> list[Path]:
    """Where the photos of a batch's listings are: the raw test photos, then the incoming ones."""
    return [raw_dir / TEST_IMAGE_DIR] + ([incoming_dir / INCOMING_IMAGES] if incoming_dir else [])


def batch_listings(raw_dir: Path, incoming_dir: Path | None) -> pd.DataFrame:
    """The listings to score, with the path of their photo where there is one.

    A product that appears in several files is taken from the last one read: the incoming files,
    in name order, come after the raw test listings.
    """
    sources: list[tuple[Path, Path]] = []
    if (raw_dir / X_TEST_FILE).is_file():
        sources.append((raw_dir / X_TEST_FILE, raw_dir / TEST_IMAGE_DIR))
    if incoming_dir is not None and incoming_dir.is_dir():
        images = incoming_dir / INCOMING_IMAGES
        sources += [(path, images) for path in sorted(incoming_dir.glob("*.csv"))]
    if not sources:
        raise RakutenError(
            f"nothing to score: no {X_TEST_FILE} in {raw_dir} and no CSV in {incoming_dir}"
        )
    frames = []
    for path, images_dir in sources:
        listings = read_raw_csv(path)
        missing = [column for column in REQUIRED_COLUMNS if column not in listings]
        if missing:
            raise RakutenError(f"{path} lacks column(s) {', '.join(missing)} (hub X layout)")
        photos = photo_paths(listings, images_dir) if images_dir.is_dir() else None
        frames.append(listings.assign(image_path=pd.Series(photos, index=listings.index)))
        logger.info("%d listings from %s", len(listings), path)
    listings = pd.concat(frames, ignore_index=True)
    return listings.drop_duplicates("productid", keep="last").reset_index(drop=True)


def predict_batch(
    logical_date: date,
    *,
    model: ModelRef,
    raw_dir: Path,
    incoming_dir: Path | None,
    predictions_dir: Path,
    engine: Engine,
    tracking_uri: str,
    batch_size: int = 2048,
) -> dict[str, Any]:
    """Score the listings `model` has not scored on another date; store them as one batch."""
    listings = batch_listings(raw_dir, incoming_dir)
    todo = unscored(engine, listings, model, logical_date)
    if len(todo):
        packaged = load(f"models:/{model.name}/{model.version}", tracking_uri)
        predictions = score(packaged, model_inputs(todo, None), batch_size)
    else:
        predictions = pd.DataFrame(columns=["prdtypecode", "probability", "top3"])
    stored = store_batch(
        engine,
        pd.concat([todo.drop(columns="image_path"), predictions], axis=1),
        model=model,
        dataset_version=raw_version(raw_dir),
        logical_date=logical_date,
        predictions_dir=predictions_dir,
    )
    with_photo = int(todo["image_path"].notna().sum())
    return {**asdict(stored), "listings": len(listings), "with_photo": with_photo}
