"""Reading the raw snapshot and writing step outputs atomically (the file I/O of the data steps)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from src.data.layout import MANIFEST_FILE, X_TEST_FILE, X_TRAIN_FILE, Y_TRAIN_FILE
from src.errors import RakutenError


class RawDataError(RakutenError):
    """A raw snapshot file is absent or is not a CSV that can be read."""


def read_raw_csv(path: Path) -> pd.DataFrame:
    """Read a raw CSV with every column as text, indexed by its unnamed first column.

    Only an empty field is missing: `NA`, `null` or `None` are kept as the text they are, since
    they can be (part of) a real designation. Types are the data contract's business.
    """
    if not path.is_file():
        raise RawDataError(f"{path} not found")
    try:
        frame = pd.read_csv(
            path, index_col=0, dtype="str", keep_default_na=False, na_values=[""], encoding="utf-8"
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise RawDataError(f"{path} is not a readable CSV: {error}") from error
    frame.index.name = None
    return frame


def raw_version(raw_dir: Path) -> str:
    """The raw snapshot's id: MANIFEST.json's `version`, else a sha256 of the three CSVs."""
    manifest = raw_dir / MANIFEST_FILE
    if manifest.is_file():
        try:
            version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
        except (ValueError, AttributeError) as error:
            raise RawDataError(f"{manifest} is not a JSON object: {error}") from error
        if isinstance(version, str) and version:
            return version
    digest = hashlib.sha256()
    for name in (X_TRAIN_FILE, Y_TRAIN_FILE, X_TEST_FILE):
        path = raw_dir / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
    return f"csv-sha256:{digest.hexdigest()}"


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are private (0600), these are shared through the umask as usual.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write a file through `write(tmp)` so that readers see the old file or the new, never half."""
    with _atomic_path(path) as tmp:
        write(tmp)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write a JSON document atomically, indented and key order kept."""
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_parquet(path: Path, frame: pd.DataFrame, schema: pa.Schema) -> None:
    """Write a DataFrame as Parquet with an explicit schema, atomically."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))
