"""The pinned split: a product's split depends on its group key alone; copies land together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from src.data.classes import PRDTYPECODES
from src.data.split import (
    assign_splits,
    copies_across_split,
    group_keys,
    normalise,
    pinned_to_test,
    split_bucket,
    split_definition,
)

SALT = "test-salt"


def _labelled(productids: range | list[int], codes: list[int] | None = None) -> pd.DataFrame:
    ids = list(productids)
    codes = codes or [PRDTYPECODES[i % len(PRDTYPECODES)] for i in range(len(ids))]
    return pd.DataFrame({"productid": ids, "prdtypecode": codes})


def _split(labelled: pd.DataFrame, grouping: str = "productid") -> pd.Series:
    split = assign_splits(
        labelled, test_fraction=0.15, val_fraction=0.15, salt=SALT, grouping=grouping
    )
    return pd.Series(split.to_numpy(), index=labelled["productid"])


def test_bucket_is_stable_and_salted() -> None:
    assert split_bucket(123456789, SALT) == split_bucket(123456789, SALT)
    assert 0 <= split_bucket(123456789, SALT) < 10_000
    buckets = {split_bucket(123456789, f"salt-{i}") for i in range(20)}
    assert len(buckets) > 1


def test_a_product_keeps_its_split_when_other_rows_come_and_go() -> None:
    before = _split(_labelled(range(10_000, 15_000)))
    refreshed = _labelled([*range(12_000, 15_000), *range(20_000, 23_000)])
    after = _split(refreshed)
    common = before.index.intersection(after.index)
    assert len(common) == 3_000
    assert (before[common] == after[common]).all()
    assert (before == "test").sum() > 0


def test_rerun_gives_the_same_split() -> None:
    labelled = _labelled(range(3_000))
    assert _split(labelled).equals(_split(labelled))


def test_fractions_and_class_shares_are_close_to_asked() -> None:
    labelled = _labelled(range(100_000, 154_000))
    split = _split(labelled)
    shares = split.value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.15, abs=0.01)
    assert shares["val"] == pytest.approx(0.15, abs=0.01)
    by_class = pd.crosstab(labelled["prdtypecode"].to_numpy(), split.to_numpy(), normalize="index")
    assert np.allclose(by_class["test"], 0.15, atol=0.03)


def test_pinned_to_test_is_what_assign_splits_puts_in_test() -> None:
    labelled = _labelled(range(5_000))
    pinned = pinned_to_test(group_keys(labelled, "productid"), test_fraction=0.15, salt=SALT)
    split = _split(labelled).set_axis(labelled.index)
    assert (pinned == (split == "test")).all()


def _ids_in(split_name: str, count: int) -> list[int]:
    """Productids that the hash puts in one split."""
    found = _split(_labelled(range(1, 2_000)))
    return found[found == split_name].index[:count].tolist()


def test_a_class_without_train_row_gets_a_val_row_back() -> None:
    val_ids = _ids_in("val", 2)
    labelled = _labelled([*val_ids, *_ids_in("test", 1)], codes=[10, 10, 10])
    split = _split(labelled)
    assert (split == "train").sum() == 1 and (split == "test").sum() == 1
    assert split[val_ids].isin(["train", "val"]).all()


def test_a_class_all_in_test_releases_one_row_to_train() -> None:
    test_ids = _ids_in("test", 2)
    split = _split(_labelled(test_ids, codes=[2905, 2905]))
    assert sorted(split) == ["test", "train"]


def _listings(titles: list[str], descriptions: list[str] | None = None) -> pd.DataFrame:
    labelled = _labelled(range(1, len(titles) + 1))
    return labelled.assign(designation=titles, description=descriptions or [""] * len(titles))


def test_titles_are_compared_without_case_accents_nor_punctuation() -> None:
    titles = pd.Series(["Crème  Brûlée - LOT de 2!", "creme brulee lot de 2", None, "¿?"])
    assert normalise(titles).tolist() == ["creme brulee lot de 2"] * 2 + ["", ""]


def test_copies_of_a_title_land_in_the_same_split() -> None:
    # 400 products listed three times each under other productids, with other descriptions.
    titles = [f"Produit numéro {i % 400}" for i in range(1_200)]
    variants = [title.upper() if i % 3 == 1 else title for i, title in enumerate(titles)]
    listings = _listings(variants, [f"description {i}" for i in range(1_200)])
    by_title = _split(listings, "title").to_numpy()
    assert (by_title.reshape(3, 400) == by_title[:400]).all()  # every copy with its original
    assert copies_across_split(listings, pd.Series(by_title, index=listings.index)) == 0
    by_productid = _split(listings, "productid").set_axis(listings.index)
    assert copies_across_split(listings, by_productid) > 50  # before grouping: they straddle
    by_both = _split(listings, "title_description").set_axis(listings.index)
    assert copies_across_split(listings, by_both) > 50  # descriptions differ: not grouped


def test_the_productid_grouping_is_the_split_before_grouping() -> None:
    listings = _listings([f"titre {i % 10}" for i in range(2_000)])
    buckets = [split_bucket(productid, SALT) for productid in listings["productid"]]
    expected = np.select(
        [np.array(buckets) < 1500, np.array(buckets) < 3000], ["test", "val"], "train"
    )
    assert (_split(listings, "productid").to_numpy() == expected).all()


def test_a_product_keeps_its_split_while_its_title_is_unchanged() -> None:
    listings = _listings([f"titre {i}" for i in range(3_000)])
    before = _split(listings, "title")
    others = _listings([f"autre {i}" for i in range(2_000)]).assign(productid=range(10_000, 12_000))
    after = _split(pd.concat([listings.iloc[1_000:], others], ignore_index=True), "title")
    assert (before.iloc[1_000:] == after[before.index[1_000:]]).all()


def test_an_empty_title_is_a_group_of_its_own() -> None:
    listings = _listings(["", "", "..."] * 300)
    keys = group_keys(listings, "title")
    assert keys.is_unique and keys.str.startswith("productid:").all()


def test_the_definition_names_everything_that_moves_a_product() -> None:
    definition = split_definition(
        test_fraction=0.15, val_fraction=0.15, salt=SALT, grouping="title"
    )
    assert set(definition) == {
        "definition_version",
        "grouping",
        "salt",
        "test_fraction",
        "val_fraction",
    }
