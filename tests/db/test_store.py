"""The batch write path on SQLite and PostgreSQL: idempotent, atomic, traceable, bulk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

import src.db.store as store_module
from src.db.engine import DatabaseError, make_engine
from src.db.models import (
    ApiRequest,
    BatchStatus,
    ModelVersion,
    Prediction,
    PredictionBatch,
    Product,
)
from src.db.queries import NotFoundError, batches, class_distribution
from src.db.store import (
    ApiCall,
    ModelRef,
    product_inputs,
    record_api_calls,
    record_api_request,
    store_batch,
    unscored,
)
from tests.db.batches import CHALLENGER, CHAMPION, DAY, StoreFn, scored, synthetic_predictions


def rows(engine: Engine, entity: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(entity)).scalar_one())


def stored_predictions(engine: Engine) -> pd.DataFrame:
    query = (
        select(Product.productid, Prediction.batch_id, Prediction.prdtypecode, Prediction.top3)
        .join(Product, Product.id == Prediction.product_id)
        .order_by(Product.productid)
    )
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(query).all())


def test_a_batch_stored_twice_keeps_its_rows_once(
    engine: Engine, store: StoreFn, tmp_path: Path
) -> None:
    predictions = synthetic_predictions(40)
    first = store(predictions, chunk_rows=7)
    second = store(predictions, chunk_rows=7)

    assert second.replaced_batch_id == first.batch_id
    assert second.batch_id != first.batch_id  # ids of replaced batches are never given again
    assert rows(engine, Prediction) == 40
    assert rows(engine, Product) == 40
    assert rows(engine, PredictionBatch) == 1
    assert rows(engine, ModelVersion) == 1
    with engine.connect() as connection:
        missing = select(func.count()).where(Product.description.is_(None))
        assert connection.execute(missing).scalar_one() == predictions["description"].isna().sum()
    saved = stored_predictions(engine)
    assert set(saved["batch_id"]) == {second.batch_id}
    assert saved["prdtypecode"].tolist() == predictions["prdtypecode"].tolist()
    assert saved["top3"].iloc[0] == predictions["top3"].iloc[0]

    parquet = Path(str(second.parquet))
    assert (
        parquet == tmp_path / "predictions" / "2026-03-01" / "rakuten-product-classifier-v1.parquet"
    )
    assert [p.name for p in parquet.parent.iterdir()] == [parquet.name]  # no temporary left
    copy = pd.read_parquet(parquet)
    assert len(copy) == 40 and set(copy["batch_id"]) == {second.batch_id}
    assert copy["productid"].tolist() == predictions["productid"].tolist()
    assert json.loads(copy["top3"].iloc[3]) == predictions["top3"].iloc[3]
    assert copy["model_alias"].iloc[0] == "champion"


def test_a_rerun_replaces_the_batch_with_its_new_predictions(
    engine: Engine, store: StoreFn
) -> None:
    store(scored([1, 2, 3], [10, 10, 40]))
    rerun = store(scored([1, 2], [50, 50]))
    assert rerun.predictions == 2
    saved = stored_predictions(engine)
    assert saved["productid"].tolist() == [1, 2]
    assert saved["prdtypecode"].tolist() == [50, 50]


def test_a_day_with_nothing_to_score_is_an_empty_complete_batch(
    engine: Engine, store: StoreFn
) -> None:
    empty = store(scored([1], [10]).iloc[:0])
    assert [(b.batch_id, b.status, b.predictions) for b in batches(engine)] == [
        (empty.batch_id, "complete", 0)
    ]
    assert pd.read_parquet(str(empty.parquet)).empty


def test_batches_of_other_dates_or_models_are_kept(engine: Engine, store: StoreFn) -> None:
    predictions = scored([1, 2, 3], [10, 40, 50])
    store(predictions)
    store(predictions, logical_date=date(2026, 3, 2))
    store(predictions, model=CHALLENGER)
    assert rows(engine, PredictionBatch) == 3
    assert rows(engine, Prediction) == 9
    assert rows(engine, Product) == 3  # the same inputs are recorded once


def test_a_failure_in_a_later_chunk_leaves_the_previous_batch_intact(
    engine: Engine, store: StoreFn, tmp_path: Path
) -> None:
    before = store(synthetic_predictions(30), chunk_rows=10)
    parquet_bytes = Path(str(before.parquet)).read_bytes()
    broken = synthetic_predictions(30, seed=1)
    broken.loc[25, "probability"] = 1.5  # the database's check refuses it, in the third chunk

    with pytest.raises(IntegrityError):
        store(broken, chunk_rows=10)

    [batch] = batches(engine)
    assert (batch.batch_id, batch.status, batch.predictions) == (before.batch_id, "complete", 30)
    saved = stored_predictions(engine)
    assert set(saved["batch_id"]) == {before.batch_id}
    assert saved["prdtypecode"].tolist() == synthetic_predictions(30)["prdtypecode"].tolist()
    assert Path(str(before.parquet)).read_bytes() == parquet_bytes
    assert len(list((tmp_path / "predictions").rglob("*"))) == 2  # the date folder and the file


def test_a_crash_after_the_first_chunk_leaves_only_a_failed_batch_row(
    engine: Engine, store: StoreFn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    original = store_module._insert_chunks

    def crash_in_predictions(connection: Any, statement: Any, rows: Any, chunk_rows: int) -> None:
        if statement.table.name != "predictions":
            return original(connection, statement, rows, chunk_rows)
        original(connection, statement, rows[:chunk_rows], chunk_rows)
        raise RuntimeError("worker lost")

    monkeypatch.setattr(store_module, "_insert_chunks", crash_in_predictions)
    with pytest.raises(RuntimeError, match="worker lost"):
        store(synthetic_predictions(25), chunk_rows=10)

    assert rows(engine, Prediction) == 0
    assert rows(engine, Product) == 0
    [failed] = batches(engine)
    assert failed.status == BatchStatus.FAILED and failed.predictions == 0
    assert failed.error == "RuntimeError: worker lost"
    with pytest.raises(NotFoundError, match="failed, not complete"):
        class_distribution(engine, failed.batch_id)
    assert not list((tmp_path / "predictions").rglob("*.parquet"))

    monkeypatch.setattr(store_module, "_insert_chunks", original)
    broken = synthetic_predictions(25)
    broken.loc[20, "probability"] = -1.0
    with pytest.raises(IntegrityError):
        store(broken, chunk_rows=10)
    [failed_again] = batches(engine)  # the failed row of the first attempt is replaced
    assert failed_again.status == BatchStatus.FAILED
    assert str(failed_again.error).startswith("IntegrityError")

    rerun = store(synthetic_predictions(25), chunk_rows=10)
    assert rerun.replaced_batch_id == failed_again.batch_id
    assert [(b.status, b.predictions) for b in batches(engine)] == [("complete", 25)]


_KILLED_RUN = """
import sys, time
from datetime import date
from pathlib import Path
import src.db.store as store
from tests.db.batches import CHAMPION, synthetic_predictions
from src.db.engine import make_engine

original = store._insert_chunks
def stall(connection, statement, rows, chunk_rows):
    original(connection, statement, rows[:chunk_rows], chunk_rows)
    if statement.table.name == "predictions":
        Path(sys.argv[2]).touch()
        time.sleep(600)
    original(connection, statement, rows[chunk_rows:], chunk_rows)
store._insert_chunks = stall
store.store_batch(make_engine(sys.argv[1]), synthetic_predictions(50, seed=2), model=CHAMPION,
                  dataset_version="raw-v1", logical_date=date(2026, 3, 1), chunk_rows=10)
"""


@pytest.mark.slow
def test_a_killed_run_leaves_no_partial_batch_visible(
    engine: Engine, store: StoreFn, store_url: str, tmp_path: Path
) -> None:
    before = store(synthetic_predictions(50))
    marker = tmp_path / "inserting"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, store_url, str(marker)],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the run never reached its predictions"
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    [batch] = batches(make_engine(store_url))
    assert (batch.batch_id, batch.status) == (before.batch_id, "complete")
    saved = stored_predictions(engine)
    assert len(saved) == 50 and set(saved["batch_id"]) == {before.batch_id}
    assert saved["prdtypecode"].tolist() == synthetic_predictions(50)["prdtypecode"].tolist()


def test_unscored_skips_inputs_the_model_scored_on_another_day(
    engine: Engine, store: StoreFn
) -> None:
    store(scored([1, 2, 3], [10, 40, 50]))
    listings = scored([1, 2, 3, 4], [0, 0, 0, 0]).drop(columns=["prdtypecode", "probability"])
    listings["productid"] = listings["productid"].astype(str)  # as the raw CSVs are read
    listings.loc[1, "description"] = "a new description"  # product 2 changed: a new input

    next_day = unscored(engine, listings, CHAMPION, date(2026, 3, 2))
    assert next_day["productid"].tolist() == ["2", "4"]
    assert len(unscored(engine, listings, CHAMPION, DAY)) == 4  # a rerun of DAY scores them all
    assert len(unscored(engine, listings, CHALLENGER, date(2026, 3, 2))) == 4


def test_product_inputs_keep_what_was_received_and_hash_it() -> None:
    listings = pd.DataFrame(
        {
            "productid": ["4252011632", "436067568"],
            "imageid": ["1319834935", None],
            "designation": ["Peluche &amp; doudou", "Lot de 3 BD"],
            "description": [None, "<b>Bon état</b>"],
        }
    )
    inputs = product_inputs(listings)
    assert inputs["productid"].tolist() == [4252011632, 436067568]
    assert inputs["imageid"].tolist() == [1319834935, None]
    assert inputs["designation"].tolist() == ["Peluche &amp; doudou", "Lot de 3 BD"]
    assert inputs["description"].tolist() == [None, "<b>Bon état</b>"]
    assert inputs["input_sha256"].str.len().tolist() == [64, 64]

    changed = listings.assign(imageid=["1319834936", None])
    assert product_inputs(changed)["input_sha256"].tolist()[1] == inputs["input_sha256"][1]
    assert product_inputs(changed)["input_sha256"][0] != inputs["input_sha256"][0]
    with pytest.raises(ValueError, match="designation"):
        product_inputs(listings.drop(columns="designation"))


def test_top3_may_come_as_the_packaged_models_json(engine: Engine, store: StoreFn) -> None:
    predictions = scored([1, 2], [10, 40])
    predictions["top3"] = predictions["top3"].map(json.dumps)
    store(predictions)
    assert stored_predictions(engine)["top3"].tolist() == scored([1, 2], [10, 40])["top3"].tolist()


def test_float_noise_above_one_is_a_probability_of_one(engine: Engine, store: StoreFn) -> None:
    store(scored([1, 2], [10, 40], [1 + 1e-12, 0.5]))
    with engine.connect() as connection:
        stored = connection.execute(select(Prediction.probability).order_by(Prediction.product_id))
        assert stored.scalars().all() == [1.0, 0.5]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.drop(columns="top3"), "lack column"),
        (lambda p: p.assign(productid=[1, 1, 2]), "productid 1 appears twice"),
        (lambda p: p.assign(top3=["{}"] * 3), "top3 must be a list"),
        (lambda p: p.assign(designation=["a", None, "c"]), "every listing needs a designation"),
    ],
)
def test_bad_predictions_are_refused_before_anything_is_written(
    engine: Engine, store: StoreFn, change: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        store(change(scored([1, 2, 3], [10, 40, 50])))
    assert rows(engine, PredictionBatch) == 0


def test_a_store_not_migrated_says_to_upgrade(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(DatabaseError, match=r"revision None, this code needs .*rakuten db upgrade"):
        store_batch(
            engine, scored([1], [10]), model=CHAMPION, dataset_version="v", logical_date=DAY
        )


def test_an_api_call_is_recorded_with_its_request_and_response(engine: Engine) -> None:
    request = {"designation": "Piscine tubulaire", "description": None}
    response = {"prdtypecode": 2583, "probability": 0.93}
    model = ModelRef("rakuten-product-classifier", "7", "champion")
    call_id = record_api_request(
        engine,
        endpoint="/predict",
        request=request,
        response=response,
        status_code=200,
        duration_ms=12.5,
        model=model,
    )
    with engine.connect() as connection:
        row = connection.execute(
            select(ApiRequest, ModelVersion.version).join(
                ModelVersion, ModelVersion.id == ApiRequest.model_version_id
            )
        ).one()
    assert row.id == call_id and row.version == "7"
    assert (row.request, row.response, row.status_code) == (request, response, 200)
    assert row.received_at.tzinfo is not None


def test_api_calls_are_recorded_together_in_order_with_their_times(engine: Engine) -> None:
    models = [ModelRef("rakuten-product-classifier", v, "champion") for v in ("7", "8")]
    received = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    calls = [
        ApiCall(
            endpoint="/predict",
            request={"products": [{"designation": f"Lampe {n}"}]},
            response={"n": n},
            status_code=200,
            duration_ms=float(n),
            model=models[n % 2],
            received_at=received + timedelta(seconds=n),
        )
        for n in range(5)
    ]
    ids = record_api_calls(engine, calls)
    with engine.connect() as connection:
        rows = connection.execute(
            select(ApiRequest, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == ApiRequest.model_version_id)
            .order_by(ApiRequest.id)
        ).all()
    assert ids == [row.id for row in rows]
    assert [row.response["n"] for row in rows] == list(range(5))
    assert [row.version for row in rows] == ["7", "8", "7", "8", "7"]
    assert [row.received_at for row in rows] == [call.received_at for call in calls]
    assert record_api_calls(engine, []) == []
