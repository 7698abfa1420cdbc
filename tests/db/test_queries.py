"""The store's queries on a known history of batches, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from src.db.queries import (
    ClassAgreement,
    ClassShare,
    ModelVersionCounts,
    NotFoundError,
    agreement,
    batches,
    class_distribution,
    find_batch,
    latest_prediction,
    model_version_counts,
)
from src.db.store import ModelRef
from tests.db.batches import CHAMPION, DAY, NEXT_DAY, StoreFn, scored, store_known_batches


def test_class_distribution_of_a_batch(engine: Engine, store: StoreFn) -> None:
    champion = store_known_batches(store)["champion"]
    shares = class_distribution(engine, champion.batch_id)
    assert [(s.prdtypecode, s.label, s.products) for s in shares] == [
        (10, "used books", 3),
        (40, "video games/CDs", 1),
        (50, "gaming accessories", 1),
        (2583, "pool & spa", 1),
    ]
    assert shares[0] == ClassShare(10, "used books", 3, 0.5, pytest.approx(0.8))
    assert sum(s.share for s in shares) == pytest.approx(1)


def test_agreement_of_challenger_with_champion(engine: Engine, store: StoreFn) -> None:
    known = store_known_batches(store)
    result = agreement(engine, known["champion"].batch_id, known["challenger"].batch_id)
    assert (result.champion, result.challenger) == (
        "rakuten-product-classifier v1",
        "rakuten-product-classifier v2",
    )
    # products 2-6 in common; the challenger differs on 3 (40, not 10) and 6 (1560, not 2583).
    assert (result.common, result.agreeing, result.rate) == (5, 3, 0.6)
    assert (result.champion_only, result.challenger_only) == (1, 1)
    assert result.by_class == [
        ClassAgreement(10, "used books", 2, 1, 0.5),
        ClassAgreement(40, "video games/CDs", 1, 1, 1.0),
        ClassAgreement(50, "gaming accessories", 1, 1, 1.0),
        ClassAgreement(2583, "pool & spa", 1, 0, 0.0),
    ]


def test_agreement_with_nothing_in_common_has_no_rate(engine: Engine, store: StoreFn) -> None:
    known = store_known_batches(store)
    other = store(scored([9], [10]), model=ModelRef("other-classifier", "1"))
    result = agreement(engine, other.batch_id, known["challenger"].batch_id)
    assert (result.common, result.agreeing, result.rate, result.by_class) == (0, 0, None, [])
    assert (result.champion_only, result.challenger_only) == (1, 6)


def test_latest_prediction_of_a_product(engine: Engine, store: StoreFn) -> None:
    known = store_known_batches(store)
    latest = latest_prediction(engine, 2)
    assert (latest.prdtypecode, latest.label, latest.probability) == (1280, "children's toys", 0.55)
    assert (latest.logical_date, latest.batch_id) == (
        NEXT_DAY.isoformat(),
        known["next_day"].batch_id,
    )
    assert (latest.model, latest.version, latest.alias) == (CHAMPION.name, "1", "champion")
    assert latest.dataset_version == "raw-v1"
    assert latest.designation == "Produit 2 &amp; <b>Cie</b>"  # the input as received
    assert latest.top3[0] == {"prdtypecode": 1280, "probability": 0.55}

    assert latest_prediction(engine, 3).prdtypecode == 10  # the champion's, not the challenger's
    assert latest_prediction(engine, 7, alias=None).version == "2"
    with pytest.raises(NotFoundError, match="no prediction for productid 7 by a model used as"):
        latest_prediction(engine, 7)
    with pytest.raises(NotFoundError, match="productid 8"):  # only in a failed batch
        latest_prediction(engine, 8, alias=None)


def test_counts_per_model_version(engine: Engine, store: StoreFn) -> None:
    store_known_batches(store)
    assert model_version_counts(engine) == [
        ModelVersionCounts(
            model="rakuten-product-classifier",
            version="1",
            aliases=["champion"],
            complete_batches=2,
            failed_batches=0,
            predictions=7,
            products=6,  # product 2 was scored on both days, from the same input
            first_date=DAY.isoformat(),
            last_date=NEXT_DAY.isoformat(),
        ),
        ModelVersionCounts(
            CHAMPION.name, "2", ["challenger"], 1, 0, 6, 6, DAY.isoformat(), DAY.isoformat()
        ),
        ModelVersionCounts(CHAMPION.name, "3", [], 0, 1, 0, 0, None, None),
    ]


def test_batches_list_failed_runs_too(engine: Engine, store: StoreFn) -> None:
    known = store_known_batches(store)
    on_day = batches(engine, DAY)
    assert [(b.version, b.status, b.predictions) for b in on_day] == [
        ("3", "failed", 0),
        ("2", "complete", 6),
        ("1", "complete", 6),
    ]
    assert "IntegrityError" in str(on_day[0].error)
    assert batches(engine)[0].batch_id == known["next_day"].batch_id


def test_find_batch_by_date_and_version(engine: Engine, store: StoreFn) -> None:
    known = store_known_batches(store)
    assert find_batch(engine, DAY, "2") == known["challenger"].batch_id
    with pytest.raises(NotFoundError, match="no complete batch of version 3 on 2026-03-01"):
        find_batch(engine, DAY, "3")  # failed
    other = store(scored([1], [10]), model=ModelRef("other-classifier", "1"))
    with pytest.raises(
        NotFoundError, match=r"several models .*\(other-classifier, rakuten-product-classifier\)"
    ):
        find_batch(engine, DAY, "1")
    assert find_batch(engine, DAY, "1", "other-classifier") == other.batch_id


def test_a_missing_or_failed_batch_is_not_read(engine: Engine, store: StoreFn) -> None:
    store_known_batches(store)
    failed = batches(engine, DAY)[0]
    with pytest.raises(NotFoundError, match=f"batch {failed.batch_id} is failed"):
        agreement(engine, failed.batch_id, failed.batch_id)
    with pytest.raises(NotFoundError, match="no batch 999"):
        class_distribution(engine, 999)
