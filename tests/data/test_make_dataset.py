"""The make_dataset step: Parquet splits, pinned test products, cleaned text, usable photos."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from src.cli.main import app
from src.config import MakeDatasetParams, get_settings
from src.data.make_dataset import (
    LABELLED_SCHEMA,
    UNLABELLED_SCHEMA,
    make_dataset,
    split_definition_of,
)
from src.data.split import DEFINITION_VERSION, SPLITS
from src.data.synth import synthesize

PARAMS = MakeDatasetParams()


def _read(out: Path) -> pd.DataFrame:
    """The labelled rows of a built dataset, with their split."""
    parts = [pd.read_parquet(out / f"{name}.parquet").assign(split=name) for name in SPLITS]
    return pd.concat(parts, ignore_index=True)


def test_real_sample(rakuten_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    summary = make_dataset(rakuten_sample, out, PARAMS, tmp_path / "interim")
    rows = _read(out)
    assert len(rows) == 357 and rows["productid"].is_unique
    assert sum(summary["rows"][name] for name in SPLITS) == 357
    assert summary["images"]["labelled"] == {"ok": 20, "missing": 337, "corrupt": 0}
    assert rows["image_path"].notna().sum() == 20
    assert (rows["image_status"] == "missing").sum() == 337
    for path in rows["image_path"].dropna():
        assert path.startswith("images/image_train/") and (rakuten_sample / path).is_file()
    assert rows.loc[rows["split"] == "train", "prdtypecode"].nunique() == 27
    report = json.loads((out / "quality_report.json").read_text())
    assert report["labelled"]["images"]["missing"] == 337
    assert report["split"]["classes_missing"]["train"] == []
    # The sample has no two listings with the same title: no copy straddles either split.
    assert report["split"]["test_with_copy_in_train"] == {"by_productid": 0, "by_title": 0}
    assert len(pd.read_parquet(out / "unlabelled.parquet")) == 499
    assert (tmp_path / "interim" / "quarantine.csv").is_file()


def test_parquet_schemas_are_explicit(rakuten_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    make_dataset(rakuten_sample, out, PARAMS, tmp_path / "interim")
    for name in SPLITS:
        schema = pq.read_schema(out / f"{name}.parquet")
        assert schema.equals(LABELLED_SCHEMA, check_metadata=False)
        assert json.loads(schema.metadata[b"make_dataset"])["split_salt"] == PARAMS.split_salt
        assert schema.metadata[b"raw_version"].startswith(b"csv-sha256:")
    assert split_definition_of(out) == {
        "definition_version": DEFINITION_VERSION,
        "grouping": "title",
        "salt": PARAMS.split_salt,
        "test_fraction": PARAMS.test_fraction,
        "val_fraction": PARAMS.val_fraction,
    }
    schema = pq.read_schema(out / "unlabelled.parquet")
    assert schema.equals(UNLABELLED_SCHEMA, check_metadata=False)


def test_texts_are_cleaned_and_kept_apart_and_combined(
    catalogue: Callable[..., pd.DataFrame], write_raw: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "processed"
    make_dataset(write_raw(catalogue(30)), out, PARAMS, tmp_path / "interim")
    rows = _read(out).set_index("row_index").sort_index()
    assert rows.loc[1, "designation"] == "produit n°1 & cie"
    assert rows.loc[1, "description"] == "une description du produit 1"
    assert rows.loc[1, "text"] == "produit n°1 & cie une description du produit 1"
    assert rows.loc[3, "description"] == "" and rows.loc[3, "text"] == "produit n°3 & cie"


def test_photos_missing_or_corrupt_have_no_path(
    catalogue: Callable[..., pd.DataFrame], write_raw: Callable[..., Path], tmp_path: Path
) -> None:
    raw = write_raw(catalogue(30), missing={1_000_004}, corrupt={1_000_005})
    out = tmp_path / "processed"
    make_dataset(raw, out, PARAMS, tmp_path / "interim")
    rows = _read(out).set_index("productid")
    assert rows.loc[1_000_004, "image_status"] == "missing"
    assert rows.loc[1_000_005, "image_status"] == "corrupt"
    assert rows.loc[[1_000_004, 1_000_005], "image_path"].isna().all()
    assert (
        rows.loc[1_000_006, "image_path"] == "images/image_train/image_5000006_product_1000006.jpg"
    )


def test_exact_duplicates_are_removed(
    catalogue: Callable[..., pd.DataFrame], write_raw: Callable[..., Path], tmp_path: Path
) -> None:
    labelled = catalogue(30)
    labelled.loc[500] = labelled.loc[8]
    out = tmp_path / "processed"
    summary = make_dataset(write_raw(labelled), out, PARAMS, tmp_path / "interim")
    assert len(_read(out)) == 30 and summary["quarantined"] == 0
    report = json.loads((out / "quality_report.json").read_text())
    assert report["labelled"]["exact_duplicates_removed"] == 1


def test_test_products_stay_pinned_across_data_refreshes(
    catalogue: Callable[..., pd.DataFrame], write_raw: Callable[..., Path], tmp_path: Path
) -> None:
    def build(labelled: pd.DataFrame, name: str) -> pd.Series:
        raw = write_raw(labelled, name=f"raw-{name}", photos=False)
        make_dataset(raw, tmp_path / name, PARAMS, tmp_path / f"interim-{name}")
        return _read(tmp_path / name).set_index("productid")["split"]

    before = build(catalogue(540), "first")
    after = build(pd.concat([catalogue(540).iloc[100:], catalogue(300, first=2_000)]), "second")
    common = before.index.intersection(after.index)
    assert len(common) == 440 and (before == "test").sum() > 50
    assert (before[common] == after[common]).all()

    build(catalogue(540), "again")
    for name in SPLITS:
        first = pd.read_parquet(tmp_path / "first" / f"{name}.parquet")
        assert pd.read_parquet(tmp_path / "again" / f"{name}.parquet").equals(first)


def test_injected_copies_no_longer_straddle_the_split(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    synthesize(raw, rows=3000, test_rows=20, images=False, copies=0.1, seed=5, workers=1)
    make_dataset(raw, tmp_path / "out", PARAMS, tmp_path / "interim", workers=1)
    report = json.loads((tmp_path / "out" / "quality_report.json").read_text())["split"]
    copies = report["test_with_copy_in_train"]
    assert copies["by_productid"] > 20 and copies["by_title"] == 0
    rows = _read(tmp_path / "out")
    by_title = rows.groupby(rows["designation"].str.lower())["split"].nunique()
    assert (by_title == 1).all()


def test_a_sample_keeps_that_many_rows_each_in_its_own_split(
    catalogue: Callable[..., pd.DataFrame], write_raw: Callable[..., Path], tmp_path: Path
) -> None:
    raw = write_raw(catalogue(540), photos=False)

    def build(sample_rows: int | None) -> pd.Series:
        out = tmp_path / f"sample-{sample_rows}"
        params = PARAMS.model_copy(update={"sample_rows": sample_rows})
        rows = make_dataset(raw, out, params, tmp_path / "interim")["rows"]
        assert sum(rows[name] for name in SPLITS) == (sample_rows or 540)
        return _read(out).set_index("productid")["split"]

    whole, small, large = build(None), build(100), build(300)
    assert set(small.index) < set(large.index) < set(whole.index)
    assert (large == whole[large.index]).all()  # a sampled product keeps its split
    assert (small == "test").sum() > 5


def test_cli_reads_the_make_dataset_params(
    catalogue: Callable[..., pd.DataFrame],
    write_raw: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("make_dataset:\n  test_fraction: 0.5\n  val_fraction: 0.0\n")
    monkeypatch.setenv("RAKUTEN_PARAMS_FILE", str(params))
    monkeypatch.setenv("RAKUTEN_DATA_ROOT", str(tmp_path / "data"))
    get_settings.cache_clear()
    raw = write_raw(catalogue(270), photos=False)
    out = tmp_path / "processed"
    result = CliRunner().invoke(app, ["data", "make-dataset", str(raw), str(out)])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert rows["val"] == 0 and 100 < rows["test"] < 170
    assert (tmp_path / "data" / "interim" / "quarantine.csv").is_file()


def test_fractions_must_leave_rows_to_train_on() -> None:
    with pytest.raises(ValidationError, match="leave rows to train on"):
        MakeDatasetParams(test_fraction=0.6, val_fraction=0.4)
