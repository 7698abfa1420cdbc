"""Train/val/test assignment pinned by productid: every retrain is tested on the same products.

A product's split is a function of its productid and a salt alone: sha256(salt:productid) gives a
bucket in [0, 10000); the lowest `test_fraction` of buckets are test, the next `val_fraction`
val, the rest train. Adding or removing other rows never moves a product, so models trained on
different days, on refreshed data, are compared on the same test products. Hashing draws each
class's rows independently, so class proportions match the whole set's up to sampling noise
(stratified in expectation; the quality report gives the largest gap per split).

Tiny classes: every class keeps at least one train row. A class without one gets back its val
row of lowest bucket; a class with no val row either (every row hashed to test, which takes a
class of a handful of rows: the real set's smallest has 764) gets its test row of highest bucket,
the one exception to the pin, logged and counted in the report as `released_from_test`.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Final

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SPLITS: Final = ("train", "val", "test")
BUCKETS: Final = 10_000


def split_bucket(productid: int, salt: str) -> int:
    """The product's bucket in [0, BUCKETS): the first 8 bytes of sha256(salt:productid)."""
    digest = hashlib.sha256(f"{salt}:{productid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def _buckets(productids: pd.Series, salt: str) -> np.ndarray:
    return np.fromiter(
        (split_bucket(productid, salt) for productid in productids),
        dtype=np.int64,
        count=len(productids),
    )


def sample(productids: pd.Series, rows: int, salt: str) -> pd.Series:
    """Whether each product is among the `rows` kept in a sample: pinned by its id, as the split.

    A product's place in the sample hangs on its own id only, so a larger sample holds a smaller
    one, and a sampled product keeps its split.
    """
    keep = np.zeros(len(productids), dtype=bool)
    digests = [
        hashlib.sha256(f"{salt}:sample:{productid}".encode()).digest() for productid in productids
    ]
    keep[np.argsort(np.array(digests, dtype=object), kind="stable")[:rows]] = True
    return pd.Series(keep, index=productids.index, dtype=bool)


def pinned_to_test(productids: pd.Series, *, test_fraction: float, salt: str) -> pd.Series:
    """Whether each product's bucket puts it in test, whatever the other rows."""
    test_end = round(test_fraction * BUCKETS)
    return pd.Series(_buckets(productids, salt) < test_end, index=productids.index, dtype=bool)


def assign_splits(
    labelled: pd.DataFrame, *, test_fraction: float, val_fraction: float, salt: str
) -> pd.Series:
    """Each row's split (train, val or test) from its productid; see the module's docstring."""
    buckets = _buckets(labelled["productid"], salt)
    test_end = round(test_fraction * BUCKETS)
    val_end = test_end + round(val_fraction * BUCKETS)
    split = np.select([buckets < test_end, buckets < val_end], ["test", "val"], "train")
    codes = labelled["prdtypecode"].to_numpy()
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        if (split[rows] == "train").any():
            continue
        val_rows = rows[split[rows] == "val"]
        if val_rows.size:
            split[val_rows[np.argmin(buckets[val_rows])]] = "train"
        else:
            released = rows[np.argmax(buckets[rows])]
            split[released] = "train"
            logger.warning(
                "class %s: its %d rows all hash to test; productid %s released to train",
                code,
                rows.size,
                labelled["productid"].iloc[released],
            )
    return pd.Series(split, index=labelled.index, dtype="str", name="split")
