"""The neural text branch: tokenizer, CPU smoke training, learning, save and load, backends."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from src.config import MakeDatasetParams, TextCnnParams, load_params
from src.data.make_dataset import make_dataset
from src.data.synth import synthesize
from src.errors import RakutenError
from src.models import devices, text_neural
from src.models.branch import CLASSES, branch_class
from src.models.data import load_split, products_from_listings
from src.models.text_neural import MODEL_FILE, VOCABULARY_FILE, NeuralTextBranch, Vocabulary

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = TextCnnParams(
    vocab_size=400,
    sequence_length=24,
    embedding_dim=16,
    filters=16,
    kernel_sizes=(2, 3),
    batch_size=64,
    epochs=2,
    patience=1,
)

Splits = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    """A 3,000-row synthetic catalogue's split, made by the project's own steps."""
    work = tmp_path_factory.mktemp("synthetic")
    synthesize(work / "raw", rows=3000, test_rows=5, images=False, seed=8)
    make_dataset(work / "raw", work / "processed", MakeDatasetParams(), work / "interim")
    train, val, test = (
        load_split(work / "processed", work / "raw", s) for s in ("train", "val", "test")
    )
    return train, val, test


@pytest.fixture(scope="module")
def tiny_branch(synthetic: Splits) -> tuple[NeuralTextBranch, dict[str, Any]]:
    """A tiny CNN trained for two epochs on 600 rows (three classes left out)."""
    train, val, _ = synthetic
    train = train[~train["prdtypecode"].isin([60, 1301, 2905])].head(600)
    branch = NeuralTextBranch(TINY)
    return branch, branch.fit(train, val.head(200))


def test_registered_as_the_neural_text_branch() -> None:
    assert branch_class("text_cnn") is NeuralTextBranch
    assert NeuralTextBranch.modality == "text"
    assert load_params(PROJECT_ROOT / "params.yaml").text_cnn == TextCnnParams()


def test_vocabulary_ranks_words_by_train_frequency_then_alphabetically() -> None:
    vocabulary = Vocabulary.build(["Lot de BD", "lot de mangas", "lot zèbre", "bd"], size=5)
    assert vocabulary.words == ("lot", "bd", "de")
    assert vocabulary.size == 5
    ids = vocabulary.encode(["LOT de mangas, bd !", "", "bd bd bd bd bd bd"], length=5)
    assert ids.dtype == np.int32
    assert ids.tolist() == [[2, 4, 1, 3, 0], [0, 0, 0, 0, 0], [3, 3, 3, 3, 3]]


def test_smoke_training_on_cpu_at_tiny_sizes(
    synthetic: Splits, tiny_branch: tuple[NeuralTextBranch, dict[str, Any]]
) -> None:
    branch, summary = tiny_branch
    assert summary["mixed_precision"] is False  # no GPU here
    assert summary["classes_in_train"] == len(CLASSES) - 3
    assert 1 <= summary["epochs"] == len(summary["history"]) <= TINY.epochs
    for number, epoch in enumerate(summary["history"]):
        assert epoch["epoch"] == number
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epoch)
        assert all(np.isfinite(value) for value in epoch.values())
    test = synthetic[2]
    proba = branch.predict_proba(test)
    assert proba.shape == (len(test), len(CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)
    assert (proba[:, np.isin(CLASSES, [60, 1301, 2905])] == 0).all()
    assert branch.predict_proba(test.head(0)).shape == (0, len(CLASSES))


def test_same_seed_same_model(synthetic: Splits) -> None:
    train, val, test = (split.head(300) for split in synthetic)
    params = TINY.model_copy(update={"epochs": 1})
    first, second = NeuralTextBranch(params), NeuralTextBranch(params)
    assert first.fit(train, val)["history"] == second.fit(train, val)["history"]
    np.testing.assert_allclose(first.predict_proba(test), second.predict_proba(test), atol=1e-6)


def test_trains_without_validation_rows(synthetic: Splits) -> None:
    train, val, _ = synthetic
    summary = NeuralTextBranch(TINY.model_copy(update={"epochs": 1})).fit(
        train.head(300), val.head(0)
    )
    assert summary["epochs"] == 1 and summary["best_epoch"] is None
    assert "val_loss" not in summary["history"][0]


def test_mixed_precision_where_a_gpu_is(monkeypatch: pytest.MonkeyPatch, synthetic: Splits) -> None:
    """On a GPU the branch trains in float16 and keeps a float32 model that predicts anywhere."""
    monkeypatch.setattr(devices, "visible_devices", lambda: ["gpu:0"])
    train, val, test = (split.head(300) for split in synthetic)
    branch = NeuralTextBranch(TINY.model_copy(update={"epochs": 1}))
    assert branch.fit(train, val)["mixed_precision"] is True
    assert keras.config.dtype_policy().name == "float32"  # the process's policy is restored
    assert branch.model is not None
    assert {layer.dtype_policy.name for layer in branch.model.layers} == {"float32"}
    np.testing.assert_allclose(branch.predict_proba(test).sum(axis=1), 1, atol=1e-6)


def test_save_and_load_in_a_fresh_process(
    synthetic: Splits, tiny_branch: tuple[NeuralTextBranch, dict[str, Any]], tmp_path: Path
) -> None:
    branch, _ = tiny_branch
    test = synthetic[2]
    branch.save(tmp_path / "branch")
    assert (tmp_path / "branch" / MODEL_FILE).is_file()
    assert (tmp_path / "branch" / VOCABULARY_FILE).is_file()
    test[["text"]].to_parquet(tmp_path / "products.parquet")
    script = (
        "import sys, numpy as np, pandas as pd\n"
        "from pathlib import Path\n"
        "from src.models.branch import branch_class\n"
        "branch = branch_class('text_cnn').load(Path(sys.argv[1]))\n"
        "np.save(sys.argv[3], branch.predict_proba(pd.read_parquet(sys.argv[2])))\n"
    )
    out = tmp_path / "proba.npy"
    subprocess.run(
        [sys.executable, "-c", script, tmp_path / "branch", tmp_path / "products.parquet", out],
        cwd=PROJECT_ROOT,
        check=True,
    )
    np.testing.assert_allclose(np.load(out), branch.predict_proba(test), atol=1e-6)


def test_the_module_is_backend_neutral_keras() -> None:
    """No TensorFlow (nor TextVectorization): the branch must also run under JAX or torch."""
    tree = ast.parse(Path(text_neural.__file__).read_text())
    imported, attributes = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Attribute):
            attributes.add(node.attr)
    assert "tensorflow" not in imported
    assert "TextVectorization" not in attributes
    assert {"keras", "numpy"} <= imported


@pytest.mark.slow
def test_learns_the_synthetic_catalogue(synthetic: Splits) -> None:
    train, val, test = synthetic
    branch = NeuralTextBranch(TextCnnParams(epochs=12, patience=2))
    summary = branch.fit(train, val)
    proba = branch.predict_proba(test)
    score = f1_score(test["prdtypecode"], CLASSES[proba.argmax(axis=1)], average="weighted")
    assert score > 0.75, summary["history"]
    titles = {
        "Piscine hors-sol tubulaire avec pompe de filtration": 2583,
        "Lot de mangas et bandes dessinées, série complète": 2403,
        "Carte Pokemon rare holo booster": 1160,
        "Drone quadricoptère télécommandé avec caméra": 1300,
    }
    products = products_from_listings(pd.DataFrame({"designation": list(titles)}))
    assert CLASSES[branch.predict_proba(products).argmax(axis=1)].tolist() == list(titles.values())


def test_predicting_before_fitting_says_what_to_do() -> None:
    with pytest.raises(RakutenError, match="fit or load"):
        NeuralTextBranch().predict_proba(pd.DataFrame({"text": ["a"]}))
