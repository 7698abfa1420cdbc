"""Labelled datasets uploaded over HTTP (scope admin): `POST /datasets`, `GET /datasets`.

An upload is an X CSV and a Y CSV in the hub's layout, optionally a zip of their photos, and a
purpose: `validation` (extra rows that the gate scores, `POST /models/{v}/validate` with its id)
or `training`. It is checked by the data contract (`src/data/contract.py`, as `rakuten data
validate` checks the catalogue): a structural break is a 422 that names it; rows the contract
sets aside are counted and kept in `quarantine.csv`. It is written in a temporary folder, then
renamed into `RAKUTEN_INCOMING_DIR/datasets/<purpose>/<time>-<hash>/` with its MANIFEST.json, and
recorded in the `datasets` table; a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Any, Final

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from src.config import Settings
from src.data.contract import DataContractError, validate_raw
from src.data.io import RawDataError, read_raw_csv
from src.data.layout import (
    DATASETS_DIR,
    MANIFEST_FILE,
    TRAIN_IMAGE_DIR,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
)
from src.db.datasets import DatasetRecord, list_datasets, record_dataset
from src.db.engine import DatabaseError
from src.db.models import DatasetPurpose
from src.serving.auth import AUTH_ERRORS, Admin

logger = logging.getLogger(__name__)

router = APIRouter(tags=["datasets"], responses=AUTH_ERRORS)
QUARANTINE_FILE: Final = "quarantine.csv"
# A photo zip may unpack to at most this many times the upload limit, and no entry may be
# compressed more than MAX_RATIO to one: JPEGs barely compress, a zip bomb compresses enormously.
MAX_UNPACKED_FACTOR: Final = 4
MAX_RATIO: Final = 100
_PHOTO: Final = re.compile(r"^(?:images/)?image_train/([^/]+\.(?:jpe?g|png))$", re.IGNORECASE)
_CHUNK: Final = 1 << 20


class UploadError(ValueError):
    """An upload that cannot be stored as it is (the 422's reason)."""


def copy_limited(source: IO[bytes], dest: Path, limit: int) -> tuple[str, int]:
    """Copy a stream to `dest`, hashing it; refuse past `limit` bytes."""
    digest, size = hashlib.sha256(), 0
    with dest.open("wb") as out:
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise UploadError(f"{dest.name} unpacks to over {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def unpack_photos(archive_path: Path, dataset_dir: Path, max_bytes: int) -> dict[str, Any]:
    """Unpack the training photos of a zip (hub layout) under `images/image_train/`; refuse an
    entry that would leave the folder, and a zip that unpacks to too much (a zip bomb)."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile as error:
        raise UploadError(f"the photos are not a readable zip ({error})") from None
    with archive:
        infos = archive.infolist()
        for info in infos:
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or ":" in info.filename:
                raise UploadError(f"zip entry {info.filename!r} points outside the dataset")
        if sum(info.file_size for info in infos) > max_bytes:
            raise UploadError(f"the zip unpacks to over {max_bytes} bytes")
        for info in infos:
            if info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise UploadError(f"zip entry {info.filename!r} is compressed over {MAX_RATIO}:1")
        images = dataset_dir / TRAIN_IMAGE_DIR
        images.mkdir(parents=True)
        files: dict[str, Any] = {}
        left = max_bytes
        for info in infos:
            match = _PHOTO.match(info.filename)
            if info.is_dir() or match is None:
                continue
            # The sizes in a zip's directory are claims: the copy counts the real bytes.
            with archive.open(info) as source:
                sha, size = copy_limited(source, images / match[1], left)
            left -= size
            files[f"{TRAIN_IMAGE_DIR}/{match[1]}"] = {"sha256": sha, "bytes": size}
    return files


def store_upload(
    settings: Settings,
    purpose: DatasetPurpose,
    x_file: IO[bytes],
    y_file: IO[bytes],
    photos: IO[bytes] | None,
    engine: Engine,
    api_key_id: int | None,
) -> tuple[DatasetRecord, dict[str, Any]]:
    """Check an upload with the data contract, store it atomically and record it."""
    root = settings.incoming / DATASETS_DIR / purpose.value
    root.mkdir(parents=True, exist_ok=True)
    limit = int(settings.api_max_upload_mib * 1024 * 1024)
    tmp = root / f".upload-{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    final: Path | None = None
    try:
        files = {
            X_TRAIN_FILE: _file_entry(*copy_limited(x_file, tmp / X_TRAIN_FILE, limit)),
            Y_TRAIN_FILE: _file_entry(*copy_limited(y_file, tmp / Y_TRAIN_FILE, limit)),
        }
        try:
            checked = validate_raw(
                read_raw_csv(tmp / X_TRAIN_FILE),
                read_raw_csv(tmp / Y_TRAIN_FILE),
                x_name=X_TRAIN_FILE,
                y_name=Y_TRAIN_FILE,
            )
        except (RawDataError, DataContractError) as error:
            raise UploadError(str(error)) from None
        if checked.valid.empty:
            raise UploadError("no row keeps to the data contract: nothing to store")
        if photos is not None:
            zipped = tmp / ".photos.zip"
            copy_limited(photos, zipped, limit)
            files |= unpack_photos(zipped, tmp, MAX_UNPACKED_FACTOR * limit)
            zipped.unlink()
        checked.quarantine.to_csv(tmp / QUARANTINE_FILE, index=False)
        photo_count = sum(1 for name in files if name.startswith(TRAIN_IMAGE_DIR))
        manifest: dict[str, Any] = {
            "purpose": purpose.value,
            "rows": len(checked.valid),
            "quarantined": len(checked.quarantine),
            "exact_duplicates": checked.exact_duplicates,
            "photos": photo_count,
            "files": files,
        }
        sha = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        created = datetime.now(UTC)
        manifest |= {"sha256": sha, "uploaded_at": created.isoformat(), "api_key_id": api_key_id}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        final = root / f"{created:%Y%m%dT%H%M%S%fZ}-{sha[:12]}"
        tmp.rename(final)
        record = record_dataset(
            engine,
            purpose=purpose.value,
            path=str(final.absolute()),
            sha256=sha,
            rows=manifest["rows"],
            quarantined=manifest["quarantined"],
            photos=photo_count,
            api_key_id=api_key_id,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if final is not None:
            shutil.rmtree(final, ignore_errors=True)
        raise
    logger.info(
        "dataset %d (%s) stored at %s: %d rows, %d quarantined, %d photos",
        record.id,
        purpose.value,
        final,
        record.rows,
        record.quarantined,
        photo_count,
    )
    return record, manifest


def _file_entry(sha: str, size: int) -> dict[str, Any]:
    return {"sha256": sha, "bytes": size}


@router.post(
    "/datasets",
    status_code=201,
    responses={
        413: {"description": "Over RAKUTEN_API_MAX_UPLOAD_MIB"},
        422: {"description": "A structural break of the data contract, or a refused zip"},
    },
)
def upload_dataset(
    request: Request,
    who: Admin,
    purpose: Annotated[DatasetPurpose, Form(description="training or validation")],
    x_file: Annotated[UploadFile, File(description="X CSV in the hub's layout")],
    y_file: Annotated[UploadFile, File(description="Y CSV (prdtypecode) with the same index")],
    photos: Annotated[UploadFile | None, File(description="zip of image_train/*.jpg")] = None,
) -> DatasetRecord:
    """Store a labelled dataset after the data contract's checks (quarantined rows counted)."""
    service = request.app.state.service
    zipped = photos.file if photos is not None and photos.filename else None
    try:
        record, _ = store_upload(
            service.settings, purpose, x_file.file, y_file.file, zipped, service.engine, who.key_id
        )
    except UploadError as error:
        raise HTTPException(422, str(error)) from None
    except (SQLAlchemyError, DatabaseError):
        logger.exception("an uploaded dataset could not be recorded")
        raise HTTPException(503, "the store is unavailable (details in the API's log)") from None
    return record


@router.get("/datasets")
def datasets(
    request: Request, who: Admin, purpose: Annotated[DatasetPurpose | None, Query()] = None
) -> list[DatasetRecord]:
    """The uploaded datasets (of one purpose), newest first."""
    engine = request.app.state.service.engine
    return list_datasets(engine, None if purpose is None else purpose.value)
