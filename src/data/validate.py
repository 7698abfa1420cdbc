"""The validate step: a raw snapshot against the data contract, its photos, its quality report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd

from src.data.classes import PRDTYPECODES
from src.data.contract import ContractResult, validate_raw
from src.data.images import IMAGE_STATUSES, check_images, image_paths, orphan_photos
from src.data.io import raw_version, read_raw_csv, write_atomic, write_json
from src.data.layout import TEST_IMAGE_DIR, TRAIN_IMAGE_DIR, X_TEST_FILE, X_TRAIN_FILE, Y_TRAIN_FILE
from src.features.text import contains_html, contains_mojibake

logger = logging.getLogger(__name__)

QUARANTINE_FILE: Final = "quarantine.csv"
IMAGE_CACHE_FILE: Final = "image_checks.parquet"
REPORT_FILE: Final = "quality_report.json"


@dataclass(frozen=True)
class CheckedRaw:
    """A raw snapshot after the contract: kept rows with their photo's path and status."""

    version: str
    labelled: pd.DataFrame
    unlabelled: pd.DataFrame
    quarantine: pd.DataFrame
    report: dict[str, Any]


def check_raw(raw_dir: Path, interim_dir: Path, workers: int | None = None) -> CheckedRaw:
    """Validate the CSVs, check every photo, write the quarantine and build the quality report.

    A structural break raises `DataContractError`. Photos are decoded by `workers` processes
    (default: one per core), and their verdicts cached in `interim_dir`.
    """
    version = raw_version(raw_dir)
    logger.info("checking raw snapshot %s (version %s)", raw_dir, version)
    x_train = read_raw_csv(raw_dir / X_TRAIN_FILE)
    x_test = read_raw_csv(raw_dir / X_TEST_FILE)
    labelled = validate_raw(
        x_train, read_raw_csv(raw_dir / Y_TRAIN_FILE), x_name=X_TRAIN_FILE, y_name=Y_TRAIN_FILE
    )
    unlabelled = validate_raw(x_test, None, x_name=X_TEST_FILE)

    train_paths = image_paths(labelled.valid, TRAIN_IMAGE_DIR)
    test_paths = image_paths(unlabelled.valid, TEST_IMAGE_DIR)
    every_path = [*train_paths, *test_paths]
    statuses = check_images(raw_dir, every_path, interim_dir / IMAGE_CACHE_FILE, workers)
    train = labelled.valid.assign(image_path=train_paths, image_status=statuses[: len(train_paths)])
    test = unlabelled.valid.assign(image_path=test_paths, image_status=statuses[len(train_paths) :])

    quarantine = pd.concat([labelled.quarantine, unlabelled.quarantine], ignore_index=True)
    write_atomic(interim_dir / QUARANTINE_FILE, lambda tmp: quarantine.to_csv(tmp, index=False))
    report = {
        "raw_version": version,
        "labelled": {
            "files": [X_TRAIN_FILE, Y_TRAIN_FILE],
            **_file_report(len(x_train), labelled, train),
        },
        "unlabelled": {"files": [X_TEST_FILE], **_file_report(len(x_test), unlabelled, test)},
        "productids_in_both": int(train["productid"].isin(test["productid"]).sum()),
        "orphan_photos": orphan_photos(raw_dir, every_path),
    }
    if len(quarantine):
        logger.warning("%d rows quarantined in %s", len(quarantine), interim_dir / QUARANTINE_FILE)
    return CheckedRaw(version, train, test, quarantine, report)


def validate(
    raw_dir: Path, interim_dir: Path, report_path: Path | None = None, workers: int | None = None
) -> dict[str, Any]:
    """The `validate` step: check a raw snapshot, write its quality report and quarantine."""
    checked = check_raw(raw_dir, interim_dir, workers)
    report_path = report_path or interim_dir / REPORT_FILE
    write_json(report_path, checked.report)
    return {
        "raw_version": checked.version,
        "report": str(report_path),
        "quarantine": str(interim_dir / QUARANTINE_FILE),
        "labelled_rows": len(checked.labelled),
        "unlabelled_rows": len(checked.unlabelled),
        "quarantined": len(checked.quarantine),
        "images": {
            "labelled": checked.report["labelled"]["images"],
            "unlabelled": checked.report["unlabelled"]["images"],
        },
    }


def _file_report(rows_read: int, result: ContractResult, kept: pd.DataFrame) -> dict[str, Any]:
    """The quality figures of one CSV: what was set aside, and what the kept rows hold."""
    designation, description = kept["designation"], kept["description"]
    html = contains_html(designation) | contains_html(description)
    mojibake = contains_mojibake(designation) | contains_mojibake(description)
    reasons = result.quarantine["reason"].str.split("; ").explode().value_counts()
    images = kept["image_status"].value_counts()
    report: dict[str, Any] = {
        "rows_read": rows_read,
        "exact_duplicates_removed": result.exact_duplicates,
        "quarantined": len(result.quarantine),
        "quarantine_reasons": {str(reason): int(count) for reason, count in reasons.items()},
        "rows_kept": len(kept),
        "missing_description": int(description.fillna("").str.strip().eq("").sum()),
        "rows_with_html": int(html.sum()),
        "rows_with_mojibake": int(mojibake.sum()),
        "duplicate_texts": int(kept.duplicated(subset=["designation", "description"]).sum()),
        "images": {status: int(images.get(status, 0)) for status in IMAGE_STATUSES},
    }
    if "prdtypecode" in kept:
        counts = kept["prdtypecode"].value_counts()
        report["class_counts"] = {str(code): int(counts.get(code, 0)) for code in PRDTYPECODES}
    return report
