"""Reading raw CSVs as text, the snapshot's version, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from src.data.io import RawDataError, raw_version, read_raw_csv, write_atomic, write_json
from src.data.layout import MANIFEST_FILE, X_TRAIN_FILE


def test_read_raw_csv_keeps_text_and_only_empty_is_missing(tmp_path: Path) -> None:
    path = tmp_path / X_TRAIN_FILE
    path.write_text(
        ',designation,description,productid,imageid\n7,NA,,0012,3\n8,"a, ""b""",None,4,5\n'
    )
    frame = read_raw_csv(path)
    assert frame.index.tolist() == ["7", "8"] and frame.index.name is None
    assert frame.loc["7", "designation"] == "NA" and pd.isna(frame.loc["7", "description"])
    assert frame.loc["7", "productid"] == "0012"
    assert frame.loc["8", "designation"] == 'a, "b"' and frame.loc["8", "description"] == "None"


def test_read_raw_csv_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RawDataError, match=r"X_train_update\.csv not found"):
        read_raw_csv(tmp_path / X_TRAIN_FILE)
    (tmp_path / X_TRAIN_FILE).write_bytes(b"")
    with pytest.raises(RawDataError, match="not a readable CSV"):
        read_raw_csv(tmp_path / X_TRAIN_FILE)


def test_raw_version_from_manifest_else_from_the_csvs(tmp_path: Path) -> None:
    (tmp_path / X_TRAIN_FILE).write_text(",designation\n0,a\n")
    version = raw_version(tmp_path)
    assert version.startswith("csv-sha256:") and raw_version(tmp_path) == version
    (tmp_path / X_TRAIN_FILE).write_text(",designation\n0,b\n")
    assert raw_version(tmp_path) != version
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"version": "v42"}))
    assert raw_version(tmp_path) == "v42"
    (tmp_path / MANIFEST_FILE).write_text("[1, 2]")
    with pytest.raises(RawDataError, match="not a JSON object"):
        raw_version(tmp_path)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.json"
    write_json(path, {"a": 1})

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]
