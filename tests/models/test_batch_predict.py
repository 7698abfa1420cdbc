"""`rakuten predict-batch`: the champion scores what it has not scored yet, into the store.

A real text model is trained once on a small synthetic catalogue with photos and registered in an
embedded MLflow registry; each test gets an empty store on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from sqlalchemy import Engine, delete, func, select
from typer.testing import CliRunner, Result

from src.cli.common import SKIPPED_EXIT_CODE
from src.cli.main import app
from src.config import get_settings
from src.data.io import raw_version, read_raw_csv
from src.data.layout import TEST_IMAGE_DIR, X_TEST_FILE
from src.db.engine import make_engine
from src.db.models import Base, BatchStatus, Prediction, PredictionBatch, Product
from src.errors import RakutenError
from src.models.packaged import MODEL_NAME
from src.registry.lifecycle import CHALLENGER, CHAMPION
from src.registry.tracking import TrainingPaths
from tests.trained_registry import TEXT_PARAMS, trained_registry

DAY, NEXT_DAY = date(2026, 3, 1), date(2026, 3, 2)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, TrainingPaths, Path]:
    """A champion (version 1) and a challenger (version 2, the same model registered again) in an
    embedded registry; the pipeline's paths and params file."""
    built = trained_registry(tmp_path_factory.mktemp("batch"), TEXT_PARAMS)
    return built.uri, built.paths, built.params_file


@pytest.fixture
def settings(
    registry: tuple[str, TrainingPaths, Path],
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """The settings of a deployment on the registry and the store; yields the incoming folder."""
    uri, paths, params_file = registry
    incoming = tmp_path / "incoming"
    environment = {
        "RAKUTEN_MLFLOW_TRACKING_URI": uri,
        "RAKUTEN_DATABASE_URL": store_url,
        "RAKUTEN_DATA_ROOT": str(paths.raw_dir.parent),
        "RAKUTEN_INCOMING_DIR": str(incoming),
        "RAKUTEN_PARAMS_FILE": str(params_file),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield incoming
    get_settings.cache_clear()
    shutil.rmtree(paths.raw_dir.parent / "predictions", ignore_errors=True)
    engine = make_engine(store_url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    engine.dispose()


def _rakuten(*arguments: str) -> Result:
    return CliRunner().invoke(app, list(arguments))


def _summary(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def _count(engine: Engine, table: type[Base]) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_the_champion_scores_each_listing_once_and_a_rerun_replaces_its_day(
    settings: Path, registry: tuple[str, TrainingPaths, Path], store_url: str
) -> None:
    _, paths, _ = registry
    listings = read_raw_csv(paths.raw_dir / X_TEST_FILE)
    first = _summary(_rakuten("predict-batch", "--date", DAY.isoformat()))
    assert first["predictions"] == first["listings"] == len(listings)
    assert first["alias"] == CHAMPION and first["version"] == "1"
    assert first["dataset_version"] == raw_version(paths.raw_dir)
    photos = list((paths.raw_dir / TEST_IMAGE_DIR).glob("*.jpg"))
    assert 0 < first["with_photo"] == len(photos)
    engine = make_engine(store_url)
    assert _count(engine, Prediction) == len(listings)

    parquet = pq.read_table(first["parquet"]).to_pandas()
    assert sorted(parquet["productid"]) == sorted(listings["productid"].astype(int))
    assert parquet["prdtypecode"].notna().all() and (parquet["probability"] <= 1).all()
    assert set(parquet["model_alias"]) == {CHAMPION}

    again = _summary(_rakuten("predict-batch", "--date", DAY.isoformat()))
    assert again["replaced_batch_id"] == first["batch_id"]
    assert again["predictions"] == len(listings)
    assert _count(engine, Prediction) == len(listings)  # stored once
    assert _count(engine, PredictionBatch) == 1

    # Another day: nothing new to score; the day is still recorded, as an empty batch.
    later = _summary(_rakuten("predict-batch", "--date", NEXT_DAY.isoformat()))
    assert later["predictions"] == 0 and later["listings"] == len(listings)
    with engine.connect() as connection:
        statuses = connection.execute(select(PredictionBatch.status)).scalars().all()
    assert set(statuses) == {BatchStatus.COMPLETE}
    engine.dispose()


def test_new_and_changed_listings_dropped_in_the_incoming_folder_are_scored(
    settings: Path, registry: tuple[str, TrainingPaths, Path], store_url: str
) -> None:
    _, paths, _ = registry
    _summary(_rakuten("predict-batch", "--date", DAY.isoformat()))
    listings = read_raw_csv(paths.raw_dir / X_TEST_FILE)
    changed = listings.iloc[:1].assign(designation="Piscine tubulaire hors-sol avec pompe")
    new = pd.DataFrame(
        {
            "designation": ["Lot de 3 romans policiers", "Tondeuse thermique autotractée"],
            "description": ["", "<p>Moteur 140 cm3</p>"],
            "productid": [990_000_001, 990_000_002],
            "imageid": [880_000_001, 880_000_002],
        }
    )
    settings.mkdir()
    pd.concat([changed, new]).to_csv(settings / "2026-03-02.csv")  # the hub's X layout
    summary = _summary(_rakuten("predict-batch", "--date", NEXT_DAY.isoformat()))
    assert summary["listings"] == len(listings) + 2
    assert summary["predictions"] == 3
    assert summary["with_photo"] == 0  # the incoming folder has no images/
    engine = make_engine(store_url)
    with engine.connect() as connection:
        scored_next_day = set(
            connection.execute(
                select(Product.productid)
                .join(Prediction, Prediction.product_id == Product.id)
                .join(PredictionBatch, PredictionBatch.id == Prediction.batch_id)
                .where(PredictionBatch.logical_date == NEXT_DAY)
            ).scalars()
        )
    engine.dispose()
    assert scored_next_day == {int(changed["productid"].iloc[0]), 990_000_001, 990_000_002}


def test_shadow_scoring_scores_the_batch_with_the_challenger_when_there_is_one(
    settings: Path, registry: tuple[str, TrainingPaths, Path]
) -> None:
    uri = registry[0]
    shadow = ["predict-batch", "--date", DAY.isoformat(), "--alias", CHALLENGER]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
    try:
        missing = _rakuten(*shadow)
        skipped = _rakuten(*shadow, "--skip-missing")
    finally:
        client.set_registered_model_alias(MODEL_NAME, CHALLENGER, "2")
    assert isinstance(missing.exception, RakutenError)  # `rakuten` prints it and exits 1
    assert f"{MODEL_NAME} has no @{CHALLENGER}" in str(missing.exception)
    assert skipped.exit_code == SKIPPED_EXIT_CODE
    assert "nothing to score" in json.loads(skipped.stdout.strip().splitlines()[-1])["skipped"]

    champion = _summary(_rakuten("predict-batch", "--date", DAY.isoformat()))
    challenger = _summary(_rakuten(*shadow, "--skip-missing"))
    assert (challenger["version"], challenger["alias"]) == ("2", CHALLENGER)
    assert challenger["predictions"] == champion["predictions"]
    compared = _summary(
        _rakuten(
            "db",
            "agreement",
            "--champion-batch",
            str(champion["batch_id"]),
            "--challenger-batch",
            str(challenger["batch_id"]),
        )
    )
    # Version 2 is the same model registered again: shadow scoring finds full agreement.
    assert compared["common"] == champion["predictions"]
    assert compared["rate"] == 1.0


def test_a_listing_file_without_the_hub_columns_is_refused_and_nothing_is_stored(
    settings: Path, store_url: str
) -> None:
    settings.mkdir()
    (settings / "broken.csv").write_text("productid,title\n1,Chaise\n")
    result = _rakuten("predict-batch", "--date", DAY.isoformat())
    assert isinstance(result.exception, RakutenError)
    assert "broken.csv lacks column(s) designation" in str(result.exception)
    engine = make_engine(store_url)
    assert _count(engine, PredictionBatch) == 0
    engine.dispose()
