"""The validate step: quality report and quarantine of a raw snapshot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from src.cli.main import app
from src.data.layout import MANIFEST_FILE
from src.data.validate import validate


def test_real_sample_report(rakuten_sample: Path, tmp_path: Path) -> None:
    summary = validate(rakuten_sample, tmp_path / "interim")
    report = json.loads((tmp_path / "interim" / "quality_report.json").read_text())
    assert summary["labelled_rows"] == 357 and summary["quarantined"] == 0
    labelled = report["labelled"]
    assert labelled["rows_kept"] == 357
    assert labelled["images"] == {"ok": 20, "missing": 337, "corrupt": 0}
    assert labelled["missing_description"] == 128
    assert 150 < labelled["rows_with_html"] < 170  # ~45% per the sample's README
    assert labelled["rows_with_mojibake"] > 0
    assert len(labelled["class_counts"]) == 27 and labelled["class_counts"]["2583"] == 35
    assert report["unlabelled"]["images"] == {"ok": 4, "missing": 495, "corrupt": 0}
    assert report["raw_version"].startswith("csv-sha256:")


def test_quarantine_file_and_counts(
    catalogue: Callable[..., pd.DataFrame], write_raw: Callable[..., Path], tmp_path: Path
) -> None:
    labelled = catalogue(40).astype({"designation": object, "prdtypecode": object})
    labelled.loc[3, "designation"] = None
    labelled.loc[5, "prdtypecode"] = 99
    labelled.loc[200] = labelled.loc[7]
    raw = write_raw(labelled, missing={1_000_010}, corrupt={1_000_011})
    summary = validate(raw, tmp_path / "interim")
    quarantine = pd.read_csv(tmp_path / "interim" / "quarantine.csv")
    assert quarantine["row_index"].tolist() == [3, 5]
    assert quarantine["reason"].str.contains("designation is missing|prdtypecode is not").all()
    report = json.loads(Path(summary["report"]).read_text())["labelled"]
    assert report["rows_read"] == 41 and report["exact_duplicates_removed"] == 1
    assert report["quarantined"] == 2 and report["rows_kept"] == 38
    assert report["quarantine_reasons"] == {
        "designation is missing": 1,
        "prdtypecode is not one of the 27 product-type codes": 1,
    }
    assert report["images"] == {"ok": 36, "missing": 1, "corrupt": 1}


def test_manifest_version_is_the_raw_version(
    catalogue: Callable[..., pd.DataFrame], write_raw: Callable[..., Path], tmp_path: Path
) -> None:
    raw = write_raw(catalogue(27))
    (raw / MANIFEST_FILE).write_text(json.dumps({"version": "abc123"}))
    assert validate(raw, tmp_path / "interim")["raw_version"] == "abc123"


def test_cli_prints_a_json_summary(
    catalogue: Callable[..., pd.DataFrame], write_raw: Callable[..., Path], tmp_path: Path
) -> None:
    raw = write_raw(catalogue(27))
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "validate",
            str(raw),
            "--interim-dir",
            str(tmp_path / "i"),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labelled_rows"] == 27
    assert json.loads(report.read_text())["labelled"]["rows_kept"] == 27
