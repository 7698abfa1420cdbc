"""Product photos: where each row's photo lives in the raw snapshot, and whether it decodes.

Decoding 85k photos is the costly part of building the dataset, so it is done once per file:
JPEGs decode at 1/8 scale (`Image.draft`, libjpeg's DCT scaling; every byte is still read and
entropy-decoded, so a truncated or garbled file still fails; about half the cost of a full decode
for baseline JPEGs, a quarter less for the real photos, which are progressive), in a pool of
processes, and the verdicts are cached beside the step's other interim files, keyed by (path,
size, mtime), so that `validate` then `make-dataset`, or a rebuild on an unchanged snapshot,
decode no photo twice.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Final

import pandas as pd
from PIL import Image
from tqdm import tqdm

from src.data.io import write_atomic
from src.data.layout import TEST_IMAGE_DIR, TRAIN_IMAGE_DIR

logger = logging.getLogger(__name__)

OK: Final = "ok"
MISSING: Final = "missing"
CORRUPT: Final = "corrupt"
IMAGE_STATUSES: Final = (OK, MISSING, CORRUPT)

_CACHE_COLUMNS: Final = ("image_path", "size", "mtime_ns", "status")
_CHUNK: Final = 64
_POOL_MIN: Final = 256  # fewer photos decode faster in process than a pool starts


def image_path(image_dir: str, imageid: int, productid: int) -> str:
    """A photo's path relative to the raw snapshot, as the hub's archive names it."""
    return f"{image_dir}/image_{imageid}_product_{productid}.jpg"


def image_paths(frame: pd.DataFrame, image_dir: str) -> pd.Series:
    """Each row's photo path relative to the raw snapshot, from its imageid and productid."""
    paths = [
        image_path(image_dir, imageid, productid)
        for imageid, productid in zip(frame["imageid"], frame["productid"], strict=True)
    ]
    return pd.Series(paths, index=frame.index, dtype="str", name="image_path")


def decode_status(path: str) -> str:
    """`ok` if the file decodes as an image, `corrupt` if it does not."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception:  # PIL reports a broken file with many types (OSError, SyntaxError, ...)
        return CORRUPT
    return OK


def check_images(
    raw_dir: Path, paths: Sequence[str], cache: Path | None = None, workers: int | None = None
) -> list[str]:
    """The status (ok, missing, corrupt) of each photo, paths relative to `raw_dir`."""
    present = _list_photos(raw_dir)
    cached = _read_cache(cache) if cache is not None else {}
    status: dict[str, str] = {}
    to_decode = []
    for path in dict.fromkeys(paths):
        if path not in present:
            status[path] = MISSING
        elif (key := (path, *present[path])) in cached:
            status[path] = cached[key]
        else:
            to_decode.append(path)
    logger.info(
        "%d photos: %d missing, %d known from the cache, %d to decode",
        len(status) + len(to_decode),
        sum(s == MISSING for s in status.values()),
        sum(s != MISSING for s in status.values()),
        len(to_decode),
    )
    status.update(zip(to_decode, _decode_all(raw_dir, to_decode, workers), strict=True))
    if cache is not None:
        _write_cache(cache, {(p, *present[p]): s for p, s in status.items() if s != MISSING})
    return [status[path] for path in paths]


def orphan_photos(raw_dir: Path, paths: Sequence[str]) -> int:
    """How many files in the snapshot's photo folders belong to no row."""
    names = {
        f"{image_dir}/{photo.name}"
        for image_dir in (TRAIN_IMAGE_DIR, TEST_IMAGE_DIR)
        if (raw_dir / image_dir).is_dir()
        for photo in (raw_dir / image_dir).iterdir()
    }
    return len(names - set(paths))


def _list_photos(raw_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file under the photo folders, relative path -> (size, mtime_ns)."""
    photos: dict[str, tuple[int, int]] = {}
    for image_dir in (TRAIN_IMAGE_DIR, TEST_IMAGE_DIR):
        folder = raw_dir / image_dir
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file():
                    info = entry.stat()
                    photos[f"{image_dir}/{entry.name}"] = (info.st_size, info.st_mtime_ns)
    return photos


def _decode_all(raw_dir: Path, paths: list[str], workers: int | None) -> list[str]:
    """Decode photos; many of them in a pool of spawned processes (not forked: the parent holds
    Arrow's threads, and a spawned worker carries none of the parent's memory)."""
    workers = workers or len(os.sched_getaffinity(0))
    absolute = [str(raw_dir / path) for path in paths]
    statuses: list[str] = []
    with (
        ExitStack() as stack,
        tqdm(total=len(paths), desc="decode photos", unit="photo", disable=None) as progress,
    ):
        results: Iterator[str] = map(decode_status, absolute)
        if workers > 1 and len(paths) >= _POOL_MIN:
            context = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
            results = pool.map(decode_status, absolute, chunksize=_CHUNK)
        for status in results:
            statuses.append(status)
            progress.update()
    return statuses


def _read_cache(path: Path) -> dict[tuple[str, int, int], str]:
    if not path.is_file():
        return {}
    frame = pd.read_parquet(path)
    keys = zip(frame["image_path"], frame["size"], frame["mtime_ns"], strict=True)
    return dict(zip(keys, frame["status"], strict=True))


def _write_cache(path: Path, verdicts: dict[tuple[str, int, int], str]) -> None:
    frame = pd.DataFrame(
        [(*key, status) for key, status in verdicts.items()], columns=list(_CACHE_COLUMNS)
    )
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
