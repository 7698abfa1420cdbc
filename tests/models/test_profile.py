"""The reference profile: computed from training rows, written inside the packaged model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.config import MakeDatasetParams, Params
from src.data.classes import PRDTYPECODES
from src.data.make_dataset import make_dataset
from src.data.synth import synthesize
from src.models.profile import (
    PROFILE_FILE,
    bin_counts,
    input_features,
    quantile_edges,
    reference_profile,
)
from src.models.train import PACKAGED_DIR, fuse_branches, train_branches


def test_input_features_of_raw_listings() -> None:
    features = input_features(
        pd.Series(["Lampe", "Tapis <b>rouge</b>", "Jeu"]),
        pd.Series(["Une lampe &amp; son pied", None, ""], dtype=object),
        [True, False, True],
    )
    assert features["designation"].tolist() == [5, 18, 3]
    assert features["description"].iloc[0] == 24
    assert features["description"].iloc[1:].isna().all()  # absent and empty are missing
    assert features["missing_description"].tolist() == [False, True, True]
    assert features["missing_photo"].tolist() == [False, True, False]
    assert features["html"].tolist() == [True, True, False]


def test_quantile_bins_hold_equal_shares() -> None:
    values = np.arange(1000, dtype=np.float64)
    edges = quantile_edges(values, 4)
    assert edges == pytest.approx([249.75, 499.5, 749.25])
    assert bin_counts(values, edges).tolist() == [250, 250, 250, 250]
    assert bin_counts(np.array([np.nan, 1e9]), edges).tolist() == [0, 0, 0, 1]
    assert quantile_edges(np.full(10, 7.0), 4) == [7.0]  # duplicated edges merged


def test_reference_profile_counts_and_rates() -> None:
    features = input_features(
        pd.Series(["a" * n for n in range(1, 101)]),
        pd.Series([None] * 40 + ["<p>x</p>"] * 60, dtype=object),
        [True] * 90 + [False] * 10,
    )
    labels = np.array([10] * 70 + [2583] * 30)
    profile = reference_profile(
        features, labels, np.array([10, 10, 40]), np.array([0.9, 0.7, 0.8]), 5
    )
    assert profile["train_rows"] == 100 and profile["val_rows"] == 3
    assert profile["label_counts"][PRDTYPECODES.index(10)] == 70
    assert profile["label_counts"][PRDTYPECODES.index(2583)] == 30
    assert sum(profile["predicted_counts"]) == 3
    assert profile["mean_confidence"] == pytest.approx(0.8)
    assert profile["rates"] == pytest.approx(
        {"missing_description": 0.4, "missing_photo": 0.1, "html": 0.6}
    )
    assert sum(profile["lengths"]["designation"]["counts"]) == 100
    assert sum(profile["lengths"]["description"]["counts"]) == 60
    json.dumps(profile)  # JSON-ready


@pytest.mark.slow
def test_fuse_writes_the_profile_inside_the_packaged_model(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    synthesize(raw, rows=1500, test_rows=10, images=False, seed=3)
    processed = tmp_path / "processed"
    make_dataset(raw, processed, MakeDatasetParams(), tmp_path / "interim")
    params = Params.model_validate(
        {
            **Params().model_dump(),
            "train": {"branches": ["text_tfidf"], "seed": 0},
            "text_tfidf": {**Params().model_dump()["text_tfidf"], "trials": 0},
        }
    )
    models = tmp_path / "models"
    train_branches(processed, raw, models, params)
    fuse_branches(processed, raw, models, params)
    profile = json.loads((models / PACKAGED_DIR / PROFILE_FILE).read_text())
    train_rows = len(pd.read_parquet(processed / "train.parquet"))
    assert profile["train_rows"] == train_rows == sum(profile["label_counts"])
    assert profile["val_rows"] == sum(profile["predicted_counts"]) > 0
    assert 0.2 < profile["rates"]["missing_description"] < 0.5  # synthetic: 35% missing
    assert profile["rates"]["missing_photo"] == 1.0  # no photos written
    assert 0 < profile["mean_confidence"] <= 1
    assert len(profile["lengths"]["designation"]["edges"]) >= 5
