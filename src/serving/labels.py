"""Late labels uploaded over HTTP (scope admin): `POST /labels`.

The true types of products already scored, learnt after their prediction: a CSV in the hub's Y
layout with a productid column, the file a person would drop in `RAKUTEN_INCOMING_DIR/labels/`
(docs/monitoring.md). It is checked as `rakuten monitor performance` checks a dropped file, written
there atomically under a name made of its upload time and hash, and stored in `late_labels` at
once, so its arrival time is the upload's. The next `rakuten monitor performance` scores the
champion on them (reading the file again stores nothing twice).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import IO, Annotated

from fastapi import APIRouter, File, HTTPException, Request, UploadFile
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from src.config import Settings
from src.data.io import read_raw_csv
from src.db.engine import DatabaseError
from src.db.monitoring import store_labels
from src.errors import RakutenError
from src.monitoring.loop import LABELS_DIR, parse_labels
from src.serving.auth import AUTH_ERRORS, Admin
from src.serving.datasets import UploadError, copy_limited
from src.serving.schemas import LabelsUpload

logger = logging.getLogger(__name__)

router = APIRouter(tags=["labels"], responses=AUTH_ERRORS)


def store_labels_upload(settings: Settings, y_file: IO[bytes], engine: Engine) -> LabelsUpload:
    """Check an uploaded labels file, write it into the labels folder and store its labels."""
    folder = settings.incoming / LABELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    # Not *.csv until it is whole: `rakuten monitor performance` reads only *.csv.
    tmp = folder / f".upload-{uuid.uuid4().hex}.tmp"
    final = None
    try:
        sha, _ = copy_limited(y_file, tmp, int(settings.api_max_upload_mib * 1024 * 1024))
        try:
            labels = parse_labels(read_raw_csv(tmp), "the labels file")
        except RakutenError as error:
            raise UploadError(str(error)) from None
        if labels.empty:
            raise UploadError("the labels file has no row")
        final = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{sha[:12]}.csv"
        tmp.rename(final)
        new = store_labels(engine, labels, final.name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if final is not None:
            final.unlink(missing_ok=True)
        raise
    logger.info("%d late labels stored from %s (%d new)", len(labels), final, new)
    return LabelsUpload(source=final.name, labels=len(labels), new=new)


@router.post(
    "/labels",
    status_code=201,
    responses={
        413: {"description": "Over RAKUTEN_API_MAX_UPLOAD_MIB"},
        422: {"description": "Not a labels file: a column missing, a value not a product type"},
    },
)
def upload_labels(
    request: Request,
    who: Admin,
    y_file: Annotated[
        UploadFile, File(description="CSV in the hub's Y layout (prdtypecode) with productid")
    ],
) -> LabelsUpload:
    """Store late labels of scored products; the champion's realised F1 is computed on them."""
    service = request.app.state.service
    try:
        return store_labels_upload(service.settings, y_file.file, service.engine)
    except UploadError as error:
        raise HTTPException(422, str(error)) from None
    except (SQLAlchemyError, DatabaseError):
        logger.exception("uploaded late labels could not be stored")
        raise HTTPException(503, "the store is unavailable (details in the API's log)") from None
