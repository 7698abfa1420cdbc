"""The TF-IDF text branch: quality on the real sample, behaviour, search, save and load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

from src.config import MakeDatasetParams, TextTfidfParams, load_params
from src.data.io import read_raw_csv
from src.data.layout import X_TRAIN_FILE
from src.data.make_dataset import make_dataset
from src.data.synth import synthesize
from src.errors import RakutenError
from src.models.branch import CLASSES, branch_class
from src.models.data import load_split, products_from_listings
from src.models.text_tfidf import (
    CONFIG_FILE,
    MODEL_FILE,
    SEARCHED,
    TEXT_COLUMNS,
    TfidfTextBranch,
    pipeline_proba,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PARAMS = load_params(PROJECT_ROOT / "params.yaml").text_tfidf
# Titles that plainly name their product type, as a shopper would write them.
PLAIN_TITLES = {
    "Piscine hors-sol tubulaire avec pompe de filtration": 2583,
    "Lot de 3 mangas One Piece tomes 1 2 3": 2403,
    "Chargeur pour manette, station de charge et câble USB": 50,
    "Carte Pokemon rare holo booster": 1160,
    "Poussette canne avec siège auto et biberon": 1320,
    "Housse de couette 240x220 et deux taies d'oreiller en coton": 1920,
    "Croquettes pour chien adulte, gamelle et laisse": 2220,
    "Magazine mensuel, numéro spécial de mars": 2280,
    "Clé Steam : code de téléchargement PC": 2905,
    "Figurine Funko Pop Dragon Ball": 1140,
    "Drone quadricoptère télécommandé avec caméra": 1300,
    "Tondeuse à gazon et taille-haie pour le jardin": 2585,
    "Jeu de société de plateau pour toute la famille": 1281,
    "Canapé d'angle et table basse en bois massif": 1560,
    "Trampoline de jardin avec filet et toboggan": 1302,
}
# Those that 265 real train rows are enough to learn.
PLAIN_TITLES_IN_THE_SAMPLE = (
    "Piscine hors-sol tubulaire avec pompe de filtration",
    "Lot de 3 mangas One Piece tomes 1 2 3",
    "Housse de couette 240x220 et deux taies d'oreiller en coton",
    "Croquettes pour chien adulte, gamelle et laisse",
    "Magazine mensuel, numéro spécial de mars",
)

Splits = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]


def processed_splits(raw: Path, work: Path) -> Splits:
    """Train, val and test of a raw snapshot, made by the project's own make_dataset."""
    make_dataset(raw, work / "processed", MakeDatasetParams(), work / "interim")
    train, val, test = (load_split(work / "processed", raw, s) for s in ("train", "val", "test"))
    return train, val, test


@pytest.fixture(scope="module")
def sample(rakuten_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Splits:
    """The real sample's pinned split (240 train, 66 val, 51 test rows)."""
    return processed_splits(rakuten_sample, tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def sample_branch(sample: Splits) -> tuple[TfidfTextBranch, dict[str, Any]]:
    """The branch with params.yaml's block (its search included) fitted on the sample."""
    branch = TfidfTextBranch(PARAMS)
    return branch, branch.fit(sample[0], sample[1])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    """A 3,000-row synthetic catalogue's split."""
    work = tmp_path_factory.mktemp("synthetic")
    synthesize(work / "raw", rows=3000, test_rows=5, images=False, seed=3)
    return processed_splits(work / "raw", work)


@pytest.fixture(scope="module")
def synthetic_branch(synthetic: Splits) -> TfidfTextBranch:
    """The branch's default configuration (no search) fitted on synthetic train."""
    branch = TfidfTextBranch(PARAMS.model_copy(update={"trials": 0}))
    branch.fit(synthetic[0], synthetic[1])
    return branch


def weighted_f1(codes: pd.Series, proba: np.ndarray) -> float:
    """The challenge metric of probabilities in `CLASSES` order."""
    return float(f1_score(codes, CLASSES[proba.argmax(axis=1)], average="weighted"))


def test_registered_as_the_text_branch() -> None:
    assert branch_class("text_tfidf") is TfidfTextBranch
    assert TfidfTextBranch.modality == "text"
    assert PARAMS.trials > 0


@pytest.mark.slow
def test_at_least_plain_tfidf_linearsvc_on_the_real_sample(
    sample: Splits, sample_branch: tuple[TfidfTextBranch, dict[str, Any]]
) -> None:
    # What the pipeline ships: the configuration the search chose, refitted on train + val
    # (train.refit), against a bare TF-IDF + LinearSVC fitted on the same rows.
    train, val, test = sample
    labelled = pd.concat([train, val])
    baseline = make_pipeline(TfidfVectorizer(), LinearSVC()).fit(
        labelled["text"], labelled["prdtypecode"]
    )
    baseline_f1 = float(
        f1_score(test["prdtypecode"], baseline.predict(test["text"]), average="weighted")
    )
    branch, summary = sample_branch
    refitted = TfidfTextBranch(branch.refit_params(summary))
    refitted.fit(labelled, labelled.iloc[:0])
    branch_f1 = weighted_f1(test["prdtypecode"], refitted.predict_proba(test))
    assert branch_f1 >= baseline_f1, (branch_f1, baseline_f1, summary["config"])
    assert len(summary["trials"]) == PARAMS.trials


def test_html_markup_and_letter_case_do_not_change_predictions(
    rakuten_sample: Path, sample_branch: tuple[TfidfTextBranch, dict[str, Any]]
) -> None:
    branch, _ = sample_branch
    listings = read_raw_csv(rakuten_sample / X_TRAIN_FILE).head(120)
    designation, description = listings["designation"], listings["description"].fillna("")
    variants = {
        "html": listings.assign(
            designation="<p><b>" + designation.str.replace("é", "&eacute;") + "</b></p>",
            description="<div>" + description.str.replace(" ", " <br/> ", n=3) + "</div>",
        ),
        "upper case": listings.assign(designation=designation.str.upper()),
        "title case": listings.assign(
            designation=designation.str.title(), description=description.str.swapcase()
        ),
    }
    expected = branch.predict_proba(products_from_listings(listings)).argmax(axis=1)
    for name, changed in variants.items():
        predicted = branch.predict_proba(products_from_listings(changed)).argmax(axis=1)
        assert (predicted == expected).all(), name


def predicted_types(branch: TfidfTextBranch, titles: list[str]) -> dict[str, int]:
    """Each raw title's predicted product type."""
    proba = branch.predict_proba(products_from_listings(pd.DataFrame({"designation": titles})))
    return dict(zip(titles, CLASSES[proba.argmax(axis=1)].tolist(), strict=True))


def test_titles_that_name_their_type_land_there(synthetic_branch: TfidfTextBranch) -> None:
    assert predicted_types(synthetic_branch, list(PLAIN_TITLES)) == PLAIN_TITLES


def test_titles_that_name_their_type_land_there_from_the_real_sample(
    sample_branch: tuple[TfidfTextBranch, dict[str, Any]],
) -> None:
    titles = list(PLAIN_TITLES_IN_THE_SAMPLE)
    assert predicted_types(sample_branch[0], titles) == {t: PLAIN_TITLES[t] for t in titles}


def test_learns_the_synthetic_catalogue(
    synthetic: Splits, synthetic_branch: TfidfTextBranch
) -> None:
    assert (
        weighted_f1(synthetic[2]["prdtypecode"], synthetic_branch.predict_proba(synthetic[2])) > 0.8
    )


def test_probabilities_cover_27_classes_with_0_for_classes_absent_from_train(
    synthetic: Splits,
) -> None:
    train, val, test = synthetic
    absent = [10, 1301, 2905]
    branch = TfidfTextBranch(TextTfidfParams(trials=0, max_features=5000))
    summary = branch.fit(train[~train["prdtypecode"].isin(absent)], val)
    proba = branch.predict_proba(test)
    assert proba.shape == (len(test), len(CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba[:, np.isin(CLASSES, absent)] == 0).all()
    assert (proba[:, ~np.isin(CLASSES, absent)] > 0).all()
    assert summary["classes_in_train"] == len(CLASSES) - len(absent)
    assert branch.predict_proba(test.head(0)).shape == (0, len(CLASSES))


def test_the_search_is_seeded_starts_from_the_params_and_logs_every_trial(
    sample: Splits,
) -> None:
    train, val, _ = sample
    params = TextTfidfParams(trials=4, max_features=20_000, C=0.5, seed=7)
    first, again = TfidfTextBranch(params), TfidfTextBranch(params)
    summary, repeated = first.fit(train, val), again.fit(train, val)
    trials = summary["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    assert trials[0]["params"] == params.model_dump(include=set(SEARCHED))
    assert set(trials[1]["params"]) == set(SEARCHED)
    for trial, twin in zip(trials, repeated["trials"], strict=True):
        assert trial["params"] == twin["params"]
        assert trial["val_weighted_f1"] == twin["val_weighted_f1"]
    best = max(trials, key=lambda t: t["val_weighted_f1"])
    assert summary["best_trial"] == best["number"]
    assert summary["config"] == {**best["params"]}
    assert summary["val_weighted_f1"] == pytest.approx(best["val_weighted_f1"])
    np.testing.assert_array_equal(first.predict_proba(val), again.predict_proba(val))


def test_the_kept_model_never_saw_val(synthetic: Splits) -> None:
    train, val, _ = synthetic
    val = val.copy()
    val.loc[val.index[0], ["text", "designation"]] = "zyzzyvaval zyzzyvaval"
    # One trial: the search path, with the params' uncapped vocabulary as its only config.
    branch = TfidfTextBranch(TextTfidfParams(trials=1, max_features=None))
    branch.fit(train, val)
    assert branch.pipeline is not None
    vocabularies = [
        vectorizer.vocabulary_
        for _, vectorizer, _ in branch.pipeline.named_steps["tfidf"].transformers_
        if hasattr(vectorizer, "vocabulary_")
    ]
    assert vocabularies
    assert not any("zyzzy" in term for vocabulary in vocabularies for term in vocabulary)


def test_a_search_needs_validation_rows(synthetic: Splits) -> None:
    train, val, _ = synthetic
    with pytest.raises(RakutenError, match="val"):
        TfidfTextBranch(TextTfidfParams(trials=2)).fit(train, val.head(0))
    summary = TfidfTextBranch(TextTfidfParams(trials=0, max_features=5000)).fit(train, val.head(0))
    assert summary["val_weighted_f1"] is None


def test_save_and_load_in_a_fresh_process(
    sample: Splits, sample_branch: tuple[TfidfTextBranch, dict[str, Any]], tmp_path: Path
) -> None:
    branch, _ = sample_branch
    test = sample[2]
    branch.save(tmp_path / "branch")
    assert (tmp_path / "branch" / MODEL_FILE).is_file()
    assert (tmp_path / "branch" / CONFIG_FILE).is_file()
    test[["text", "designation"]].to_parquet(tmp_path / "products.parquet")
    script = (
        "import sys, numpy as np, pandas as pd\n"
        "from pathlib import Path\n"
        "from src.models.branch import branch_class\n"
        "branch = branch_class('text_tfidf').load(Path(sys.argv[1]))\n"
        "np.save(sys.argv[3], branch.predict_proba(pd.read_parquet(sys.argv[2])))\n"
        "print(branch.config.model_dump_json())\n"
    )
    out = tmp_path / "proba.npy"
    done = subprocess.run(
        [sys.executable, "-c", script, tmp_path / "branch", tmp_path / "products.parquet", out],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    np.testing.assert_array_equal(np.load(out), branch.predict_proba(test))
    assert TextTfidfParams.model_validate_json(done.stdout) == branch.config


def test_predicting_before_fitting_says_what_to_do() -> None:
    with pytest.raises(RakutenError, match="fit or load"):
        TfidfTextBranch().predict_proba(pd.DataFrame({"text": ["a"], "designation": ["a"]}))


@pytest.mark.parametrize("rows", [1, 7, 500])
def test_the_fast_path_answers_as_scikit_learn_does(
    synthetic_branch: TfidfTextBranch, synthetic: Splits, rows: int
) -> None:
    texts = synthetic[2].head(rows)[TEXT_COLUMNS]
    assert synthetic_branch.pipeline is not None

    fast = pipeline_proba(synthetic_branch.pipeline, texts)

    np.testing.assert_allclose(fast, synthetic_branch.pipeline.predict_proba(texts), atol=1e-12)
