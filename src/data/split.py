"""Train/val/test assignment pinned by a group key: copies land together, every retrain is tested
on the same products.

Listings are grouped before they are split: under the default `title` grouping, listings whose
normalised title matches (casefolded, accents and punctuation dropped, whitespace collapsed) form
one group, since the catalogue holds copies of one product under different productids; a copy
in train and another in test would flatter the test score and the gate. `title_description`
groups on title and description together (only exact copies); `productid` is one group per
product (the split before grouping existed). A listing whose normalised title is empty is a
group of its own.

A group's split is a function of its key and a salt alone: sha256(salt:key) gives a bucket in
[0, 10000); the lowest `test_fraction` of buckets are test, the next `val_fraction` val, the rest
train. Adding or removing other rows never moves a product, and a product keeps its split while
its text is unchanged, so models trained on different days, on refreshed data, are compared on
the same test products. Hashing draws each class's groups independently, so class proportions
match the whole set's up to sampling noise (the quality report gives the largest gap per split).

What defines the split (salt, fractions, grouping, and `DEFINITION_VERSION`, the version of the
key's normalisation) is recorded with the dataset and on every registered model version: the
gate compares two models only when their definitions match (src/registry/lifecycle.py).

Tiny classes: every class keeps at least one train row. A class without one gets back its val
row of lowest bucket; a class with no val row either (every row hashed to test, which takes a
class of a handful of rows: the real set's smallest has 764) gets its test row of highest bucket,
the one exception to the pin, logged and counted in the report as `released_from_test`.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Final, get_args

import numpy as np
import pandas as pd

from src.config import SplitGrouping as Grouping

logger = logging.getLogger(__name__)

SPLITS: Final = ("train", "val", "test")
BUCKETS: Final = 10_000
GROUPINGS: Final = get_args(Grouping)
# Bump when the group key changes for some listing (its normalisation, what it is made of): a
# split made by another version may put a product elsewhere, so models are then not comparable.
DEFINITION_VERSION: Final = 2


def split_bucket(key: int | str, salt: str) -> int:
    """The group's bucket in [0, BUCKETS): the first 8 bytes of sha256(salt:key)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def normalise(texts: pd.Series) -> pd.Series:
    """Texts as compared for copies: casefolded, without accents nor punctuation, one space."""
    plain = (
        texts.fillna("")
        .astype(str)
        .str.normalize("NFKD")
        .str.encode("ascii", "ignore")
        .str.decode("ascii")
        .str.lower()
    )
    return plain.str.replace(r"[^a-z0-9]+", " ", regex=True).str.strip()


def group_keys(labelled: pd.DataFrame, grouping: Grouping) -> pd.Series:
    """Each listing's group key: its productid, or its normalised title (and description).

    The productid key is the bare id, so the `productid` grouping splits exactly as the split
    before grouping did.
    """
    ids = labelled["productid"].astype(str)
    if grouping == "productid":
        return ids
    title = normalise(labelled["designation"])
    key = "title:" + title
    if grouping == "title_description":
        key = key + "\ndescription:" + normalise(labelled["description"])
    return key.where(title != "", "productid:" + ids)


def _buckets(keys: pd.Series, salt: str) -> np.ndarray:
    return np.fromiter((split_bucket(key, salt) for key in keys), dtype=np.int64, count=len(keys))


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


def pinned_to_test(keys: pd.Series, *, test_fraction: float, salt: str) -> pd.Series:
    """Whether each listing's group key puts it in test, whatever the other rows."""
    test_end = round(test_fraction * BUCKETS)
    return pd.Series(_buckets(keys, salt) < test_end, index=keys.index, dtype=bool)


def assign_splits(
    labelled: pd.DataFrame,
    *,
    test_fraction: float,
    val_fraction: float,
    salt: str,
    grouping: Grouping,
) -> pd.Series:
    """Each row's split (train, val or test) from its group key; see the module's docstring."""
    buckets = _buckets(group_keys(labelled, grouping), salt)
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


def copies_across_split(labelled: pd.DataFrame, split: pd.Series) -> int:
    """How many test listings have a copy (the same normalised title) among the train rows."""
    title = normalise(labelled["designation"])
    in_train = set(title[(split == "train") & (title != "")])
    return int((title[split == "test"].isin(in_train)).sum())


def split_definition(
    *, test_fraction: float, val_fraction: float, salt: str, grouping: Grouping
) -> dict[str, Any]:
    """What decides every listing's split: two datasets split alike iff these are equal."""
    return {
        "definition_version": DEFINITION_VERSION,
        "grouping": grouping,
        "salt": salt,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
    }
