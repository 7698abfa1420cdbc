"""Known predictions for the db tests: listings as received plus a model's output."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy.exc import IntegrityError

from src.db.store import ModelRef, StoredBatch

CHAMPION = ModelRef("rakuten-product-classifier", "1", "champion", "run-champion")
CHALLENGER = ModelRef("rakuten-product-classifier", "2", "challenger", "run-challenger")
FAILING = ModelRef("rakuten-product-classifier", "3", "challenger")
DAY = date(2026, 3, 1)
NEXT_DAY = date(2026, 3, 2)
PROBABILITIES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]

StoreFn = Callable[..., StoredBatch]


def scored(
    productids: list[int], prdtypecodes: list[int], probabilities: list[float] | None = None
) -> pd.DataFrame:
    """Predictions as `store_batch` takes them: listings as received plus the model's output."""
    probabilities = probabilities or [0.9] * len(productids)
    return pd.DataFrame(
        {
            "productid": productids,
            "imageid": [p + 7_000 for p in productids],
            "designation": [f"Produit {p} &amp; <b>Cie</b>" for p in productids],
            "description": [None if p % 2 else f"<p>Description {p}</p>" for p in productids],
            "prdtypecode": prdtypecodes,
            "probability": probabilities,
            "top3": [
                [
                    {"prdtypecode": code, "probability": probability},
                    {"prdtypecode": 2583, "probability": round((1 - probability) / 2, 6)},
                    {"prdtypecode": 1560, "probability": round((1 - probability) / 4, 6)},
                ]
                for code, probability in zip(prdtypecodes, probabilities, strict=True)
            ],
        }
    )


def synthetic_predictions(rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` made-up predictions over six of the codes, with probabilities in [0.3, 1)."""
    rng = np.random.default_rng(seed)
    codes = rng.choice([10, 40, 50, 1280, 1560, 2583], size=rows).tolist()
    return scored(
        list(range(1_000, 1_000 + rows)), codes, rng.uniform(0.3, 1.0, rows).round(6).tolist()
    )


def store_known_batches(store: StoreFn) -> dict[str, StoredBatch]:
    """A small history whose query results are known (see tests/db/test_queries.py).

    On DAY the champion (v1) scores products 1-6 and the challenger (v2) products 2-7; on the
    next day the champion scores product 2 again, with another answer; v3 fails on DAY.
    """
    champion = store(scored([1, 2, 3, 4, 5, 6], [10, 10, 10, 40, 50, 2583], PROBABILITIES))
    challenger = store(scored([2, 3, 4, 5, 6, 7], [10, 40, 40, 50, 1560, 10]), model=CHALLENGER)
    next_day = store(scored([2], [1280], [0.55]), logical_date=NEXT_DAY)
    broken = scored([8], [10], [1.5])  # refused by the database: v3's batch fails
    with contextlib.suppress(IntegrityError):
        store(broken, model=FAILING)
    return {"champion": champion, "challenger": challenger, "next_day": next_day}
