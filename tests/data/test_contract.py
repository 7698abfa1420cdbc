"""The raw data contract: structural breaks stop the run, row breaks go to quarantine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from src.data.contract import DataContractError, validate_raw
from src.data.io import read_raw_csv
from src.data.layout import X_TEST_FILE, X_TRAIN_FILE, Y_TRAIN_FILE

RAKUTEN = Path(sys.executable).parent / "rakuten"


def _raw(labelled: pd.DataFrame, tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """X and Y as the pipeline reads them: written to CSV, read back as text."""
    labelled.drop(columns="prdtypecode").to_csv(tmp_path / X_TRAIN_FILE)
    labelled[["prdtypecode"]].to_csv(tmp_path / Y_TRAIN_FILE)
    return read_raw_csv(tmp_path / X_TRAIN_FILE), read_raw_csv(tmp_path / Y_TRAIN_FILE)


def _validate(x: pd.DataFrame, y: pd.DataFrame | None) -> pd.DataFrame:
    return validate_raw(x, y, x_name=X_TRAIN_FILE, y_name=Y_TRAIN_FILE).quarantine


def test_real_sample_keeps_every_row_with_real_dtypes(rakuten_sample: Path) -> None:
    x = read_raw_csv(rakuten_sample / X_TRAIN_FILE)
    y = read_raw_csv(rakuten_sample / Y_TRAIN_FILE)
    result = validate_raw(x, y, x_name=X_TRAIN_FILE, y_name=Y_TRAIN_FILE)
    assert len(result.valid) == 357 and result.quarantine.empty and result.exact_duplicates == 0
    assert result.valid["productid"].dtype == "int64"
    assert result.valid["prdtypecode"].nunique() == 27
    assert result.valid["description"].isna().sum() == 128  # missing stays missing here
    unlabelled = validate_raw(read_raw_csv(rakuten_sample / X_TEST_FILE), None, x_name=X_TEST_FILE)
    assert len(unlabelled.valid) == 499 and "prdtypecode" not in unlabelled.valid


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("designation", None, "designation is missing"),
        ("designation", "   ", "designation is blank"),
        ("productid", "12a", "productid is not a positive integer"),
        ("productid", "-5", "productid is not a positive integer"),
        ("imageid", None, "imageid is missing"),
        ("imageid", "1.5", "imageid is not a positive integer"),
        ("prdtypecode", "42", "prdtypecode is not one of the 27 product-type codes"),
        ("prdtypecode", None, "prdtypecode is missing"),
    ],
)
def test_a_row_breaking_a_rule_is_quarantined_with_its_reason(
    catalogue: Callable[..., pd.DataFrame],
    tmp_path: Path,
    column: str,
    value: str | None,
    reason: str,
) -> None:
    labelled = catalogue(30).astype({column: object})
    labelled.loc[4, column] = value
    result = validate_raw(*_raw(labelled, tmp_path), x_name=X_TRAIN_FILE, y_name=Y_TRAIN_FILE)
    assert result.quarantine["row_index"].tolist() == [4]
    assert result.quarantine["reason"].tolist() == [reason]
    assert result.quarantine["source"].tolist() == [X_TRAIN_FILE]
    assert 4 not in result.valid.index and len(result.valid) == 29


def test_every_reason_of_a_row_is_given(
    catalogue: Callable[..., pd.DataFrame], tmp_path: Path
) -> None:
    labelled = catalogue(5).astype(object)
    labelled.loc[2, ["designation", "prdtypecode"]] = [None, "7"]
    quarantine = _validate(*_raw(labelled, tmp_path))
    assert quarantine["reason"].tolist() == [
        "designation is missing; prdtypecode is not one of the 27 product-type codes"
    ]


def test_a_repeated_productid_or_imageid_keeps_the_first_row(
    catalogue: Callable[..., pd.DataFrame], tmp_path: Path
) -> None:
    labelled = catalogue(10)
    labelled.loc[6, "productid"] = labelled.loc[1, "productid"]
    labelled.loc[8, "imageid"] = labelled.loc[2, "imageid"]
    result = validate_raw(*_raw(labelled, tmp_path), x_name=X_TRAIN_FILE, y_name=Y_TRAIN_FILE)
    assert result.quarantine.set_index("row_index")["reason"].to_dict() == {
        6: "productid is not unique (an earlier row has it)",
        8: "imageid is not unique (an earlier row has it)",
    }
    assert {1, 2} <= set(result.valid.index)


def test_an_exact_copy_is_dropped_not_quarantined(
    catalogue: Callable[..., pd.DataFrame], tmp_path: Path
) -> None:
    labelled = catalogue(6)
    labelled.loc[100] = labelled.loc[3]
    result = validate_raw(*_raw(labelled, tmp_path), x_name=X_TRAIN_FILE, y_name=Y_TRAIN_FILE)
    assert result.exact_duplicates == 1 and result.quarantine.empty
    assert result.valid.index.tolist() == [0, 1, 2, 3, 4, 5]


def test_labels_in_another_order_are_aligned_on_the_index(
    catalogue: Callable[..., pd.DataFrame], tmp_path: Path
) -> None:
    x, y = _raw(catalogue(27), tmp_path)
    result = validate_raw(x, y.iloc[::-1], x_name=X_TRAIN_FILE, y_name=Y_TRAIN_FILE)
    expected = catalogue(27)["prdtypecode"]
    assert result.valid["prdtypecode"].tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda x, y: (x.drop(columns="designation"), y), "missing column 'designation'"),
        (
            lambda x, y: (x.drop(columns=["productid", "imageid"]), y),
            "missing columns 'productid', 'imageid'",
        ),
        (lambda x, y: (x.assign(price="1"), y), "unexpected column 'price'"),
        (
            lambda x, y: (x, y.rename(columns={"prdtypecode": "code"})),
            "missing column 'prdtypecode'",
        ),
        (lambda x, y: (x, y.iloc[:-1]), "not aligned with X_train_update.csv"),
        (lambda x, y: (x, y.set_axis([str(i + 1) for i in range(len(y))])), "not aligned"),
        (lambda x, y: (x.set_axis(["a"] * len(x)), y), "index (first column) is not integer"),
        (lambda x, y: (x.set_axis(["1"] * len(x)), y), "index (first column) has repeated values"),
        (lambda x, y: (x.iloc[:0], y.iloc[:0]), "no rows"),
    ],
)
def test_a_structural_break_stops_with_an_error_naming_it(
    catalogue: Callable[..., pd.DataFrame],
    tmp_path: Path,
    break_it: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]],
    message: str,
) -> None:
    x, y = break_it(*_raw(catalogue(10), tmp_path))
    with pytest.raises(DataContractError) as error:
        _validate(x, y)
    assert message in str(error.value)


@pytest.mark.parametrize("command", ["validate", "make-dataset"])
def test_cli_stops_on_a_sample_without_designation(
    rakuten_sample: Path, tmp_path: Path, command: str
) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(rakuten_sample, raw, copy_function=shutil.copyfile)  # writable copies
    x = pd.read_csv(raw / X_TRAIN_FILE, index_col=0, dtype="str", keep_default_na=False)
    x.drop(columns="designation").to_csv(raw / X_TRAIN_FILE)
    interim, out = tmp_path / "interim", tmp_path / "processed"
    arguments = [str(raw), str(out)] if command == "make-dataset" else [str(raw)]
    done = subprocess.run(
        [str(RAKUTEN), "data", command, *arguments, "--interim-dir", str(interim)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {X_TRAIN_FILE}: missing column 'designation'"]
    assert "Traceback" not in done.stderr
    assert not (interim / "quality_report.json").exists() and not out.exists()
