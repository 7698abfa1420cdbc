"""The make_dataset step: validated raw rows -> cleaned text, checked photos, a pinned split.

Outputs in `out_dir`, Parquet with the explicit schemas below: `train.parquet`, `val.parquet`,
`test.parquet` (the labelled rows, split by `src.data.split`), `unlabelled.parquet` (the hub's
X_test, for batch predictions) and `quality_report.json`; `interim_dir/quarantine.csv` holds the
rows set aside. `image_path` is relative to the raw snapshot (`images/image_train/...`), so the
dataset stays valid wherever the snapshot is mounted; it is null where the photo is missing or
does not decode (`image_status` says which). Photos are not copied nor resized: training reads
and resizes them lazily. Every file is written atomically and is a function of the raw snapshot
and the `make_dataset` parameters alone (no timestamps), as DVC expects.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from src.config import MakeDatasetParams
from src.data.classes import PRDTYPECODES
from src.data.images import OK
from src.data.io import write_json, write_parquet
from src.data.split import (
    SPLITS,
    assign_splits,
    copies_across_split,
    group_keys,
    pinned_to_test,
    sample,
    split_definition,
)
from src.data.validate import REPORT_FILE, check_raw
from src.features.text import text_features

logger = logging.getLogger(__name__)

UNLABELLED_FILE: Final = "unlabelled.parquet"


def _field(name: str, kind: pa.DataType, description: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, kind, nullable=nullable, metadata={"description": description})


UNLABELLED_SCHEMA: Final = pa.schema(
    [
        _field("row_index", pa.int64(), "index of the row in the raw CSV"),
        _field("productid", pa.int64(), "Rakuten product id"),
        _field("imageid", pa.int64(), "Rakuten image id"),
        _field("designation", pa.string(), "cleaned title"),
        _field("description", pa.string(), "cleaned description, empty where missing"),
        _field("text", pa.string(), "cleaned designation and description, space separated"),
        _field(
            "image_path", pa.string(), "photo, relative to the raw snapshot; null if unusable", True
        ),
        _field("image_status", pa.string(), "ok, missing or corrupt"),
    ]
)
LABELLED_SCHEMA: Final = UNLABELLED_SCHEMA.append(
    _field("prdtypecode", pa.int64(), "product-type code, one of the 27")
)


def make_dataset(
    raw_dir: Path,
    out_dir: Path,
    params: MakeDatasetParams,
    interim_dir: Path,
    workers: int | None = None,
) -> dict[str, Any]:
    """Build train/val/test and unlabelled Parquet files and the quality report from raw data."""
    checked = check_raw(raw_dir, interim_dir, workers)
    labelled = _features(checked.labelled, params.lowercase)
    labelled["prdtypecode"] = checked.labelled["prdtypecode"]
    if params.sample_rows is not None and params.sample_rows < len(labelled):
        labelled = labelled[sample(labelled["productid"], params.sample_rows, params.split_salt)]
        logger.info("sample of %d labelled rows kept (make_dataset.sample_rows)", len(labelled))
    definition = split_definition(
        test_fraction=params.test_fraction,
        val_fraction=params.val_fraction,
        salt=params.split_salt,
        grouping=params.split_grouping,
    )
    split = assign_splits(labelled, **_split_args(definition))
    metadata = {
        "raw_version": checked.version,
        "make_dataset": params.model_dump_json(),
        "split_definition": json.dumps(definition, sort_keys=True),
    }
    for name in SPLITS:
        part = labelled[split == name]
        write_parquet(out_dir / f"{name}.parquet", part, LABELLED_SCHEMA.with_metadata(metadata))
    unlabelled = _features(checked.unlabelled, params.lowercase)
    write_parquet(out_dir / UNLABELLED_FILE, unlabelled, UNLABELLED_SCHEMA.with_metadata(metadata))

    pinned = pinned_to_test(
        group_keys(labelled, params.split_grouping),
        test_fraction=params.test_fraction,
        salt=params.split_salt,
    )
    by_productid = assign_splits(labelled, **_split_args({**definition, "grouping": "productid"}))
    report = {
        **checked.report,
        "split": {
            "definition": definition,
            **_split_report(labelled["prdtypecode"], split, pinned),
            # Test listings with a copy (same normalised title) in train: split by productid
            # alone (before grouping) and as configured (after).
            "test_with_copy_in_train": {
                "by_productid": copies_across_split(labelled, by_productid),
                f"by_{params.split_grouping}": copies_across_split(labelled, split),
            },
        },
    }
    write_json(out_dir / REPORT_FILE, report)
    counts = {name: int((split == name).sum()) for name in SPLITS}
    logger.info("dataset written to %s: %s, %d unlabelled", out_dir, counts, len(unlabelled))
    return {
        "raw_version": checked.version,
        "out_dir": str(out_dir),
        "rows": {**counts, "unlabelled": len(unlabelled)},
        "quarantined": len(checked.quarantine),
        "images": {
            "labelled": checked.report["labelled"]["images"],
            "unlabelled": checked.report["unlabelled"]["images"],
        },
    }


def split_definition_of(processed_dir: Path) -> dict[str, Any] | None:
    """The split definition a processed dataset was made with (None: made before it was kept)."""
    metadata = pq.read_schema(processed_dir / f"{SPLITS[-1]}.parquet").metadata or {}
    recorded = metadata.get(b"split_definition")
    return None if recorded is None else dict(json.loads(recorded))


def _split_args(definition: dict[str, Any]) -> dict[str, Any]:
    """`assign_splits`' keyword arguments from a split definition."""
    return {
        "test_fraction": definition["test_fraction"],
        "val_fraction": definition["val_fraction"],
        "salt": definition["salt"],
        "grouping": definition["grouping"],
    }


def _features(checked: pd.DataFrame, lowercase: bool) -> pd.DataFrame:
    """The output columns of kept rows: cleaned texts, and the photo where it is usable."""
    texts = text_features(checked["designation"], checked["description"], lowercase=lowercase)
    usable = checked["image_status"] == OK
    return pd.DataFrame(
        {
            "row_index": checked.index,
            "productid": checked["productid"],
            "imageid": checked["imageid"],
            **texts,
            "image_path": checked["image_path"].where(usable),
            "image_status": checked["image_status"],
        },
        index=checked.index,
    )


def _split_report(codes: pd.Series, split: pd.Series, pinned: pd.Series) -> dict[str, Any]:
    """Rows and classes per split, and how far each split's class shares are from the whole's."""
    share = codes.value_counts(normalize=True)
    report: dict[str, Any] = {"rows": {}, "max_class_share_gap": {}, "classes_missing": {}}
    for name in SPLITS:
        in_split = codes[split == name]
        gap = (
            in_split.value_counts(normalize=True).reindex(share.index, fill_value=0) - share
        ).abs()
        report["rows"][name] = len(in_split)
        report["max_class_share_gap"][name] = round(float(gap.max()), 4) if len(in_split) else None
        present = set(in_split.unique())
        report["classes_missing"][name] = [code for code in PRDTYPECODES if code not in present]
    report["released_from_test"] = int((pinned & (split != "test")).sum())
    return report
