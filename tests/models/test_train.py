"""The model steps end to end: train branches, fuse, package, evaluate, predict from raw inputs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from src.cli.main import app
from src.config import MakeDatasetParams, Params
from src.data.make_dataset import make_dataset
from src.data.synth import synthesize
from src.models.data import load_split
from src.models.evaluate import CONFUSION_DIR, METRICS_FILE
from src.models.fusion import FUSION_FILE, FusedModel
from src.models.packaged import fused_model_dir
from src.models.text_neural import NeuralTextBranch
from src.models.train import (
    PACKAGED_DIR,
    evaluate_models,
    fuse_branches,
    train_branches,
)
from tests.baselines import plain_tfidf_linearsvc

PRDTYPECODE_COLUMNS = ["prdtypecode", "label", "probability", "top3"]


def _params(**blocks: dict[str, Any]) -> Params:
    """The repository's params with some blocks overridden (fast settings for tests)."""
    return Params.model_validate(
        {
            **Params().model_dump(),
            **{k: {**Params().model_dump()[k], **v} for k, v in blocks.items()},
        }
    )


def _processed(raw: Path, tmp: Path) -> Path:
    processed = tmp / "processed"
    make_dataset(raw, processed, MakeDatasetParams(), tmp / "interim")
    return processed


# Small photos and a short schedule: the image branch learns the synthetic photos' signal in a
# couple of minutes on 2 CPU cores (72% accuracy at 20,000 rows in the branch's own tests).
FAST_IMAGE = {"image_size": 48, "epochs": 6, "batch_size": 64, "augment": False}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20,000 synthetic products with photos: raw, processed, text + image branches, fused."""
    tmp = tmp_path_factory.mktemp("pipeline")
    raw = tmp / "raw"
    synthesize(raw, rows=20_000, test_rows=200, image_size=48, seed=4)
    processed = _processed(raw, tmp)
    params = _params(
        train={"branches": ["text_tfidf", "image_cnn"]},
        text_tfidf={"trials": 0},
        image_cnn=FAST_IMAGE,
    )
    models = tmp / "models"
    train_branches(processed, raw, models, params)
    fuse_branches(processed, raw, models, params)
    evaluate_models(processed, raw, models, tmp / "reports")
    return {"raw": raw, "processed": processed, "models": models, "reports": tmp / "reports"}


@pytest.mark.slow
def test_on_20000_synthetic_rows_the_fused_model_beats_each_branch(
    synthetic_run: dict[str, Path],
) -> None:
    metrics = json.loads((synthetic_run["reports"] / METRICS_FILE).read_text())
    assert set(metrics) == {"text_tfidf", "image_cnn", "fused"}
    fused = metrics["fused"]["weighted_f1"]
    assert fused > metrics["text_tfidf"]["weighted_f1"]
    assert fused > metrics["image_cnn"]["weighted_f1"]
    assert metrics["image_cnn"]["coverage"] < 1 == metrics["fused"]["coverage"]
    fusion = json.loads(
        (fused_model_dir(synthetic_run["models"] / PACKAGED_DIR) / FUSION_FILE).read_text()
    )
    assert min(fusion["weights"].values()) > 0  # every branch has its say
    for name in metrics:
        assert (synthetic_run["reports"] / CONFUSION_DIR / f"{name}.png").is_file()


@pytest.mark.slow
def test_the_packaged_model_predicts_from_raw_inputs_in_a_fresh_process(
    synthetic_run: dict[str, Path], tmp_path: Path
) -> None:
    photo = next((synthetic_run["raw"] / "images" / "image_test").iterdir())
    buffer = io.BytesIO()
    with Image.open(photo) as image:
        image.save(buffer, "JPEG")
    inputs = pd.DataFrame(
        {
            "designation": [
                "Piscine tubulaire hors-sol avec pompe",
                "Lot de 3 mangas tomes 1 2 3",
                "Stylo",
            ],
            "description": ["<p>Liner &amp; b&acirc;che</p>", None, ""],
            "image": [buffer.getvalue(), None, None],
            "image_path": [None, None, str(photo)],
        }
    )
    inputs.to_pickle(tmp_path / "inputs.pkl")
    script = (
        "import sys, pandas as pd, mlflow.pyfunc\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "model.predict(pd.read_pickle(sys.argv[2])).to_json(sys.argv[3], orient='records')\n"
    )
    packaged = synthetic_run["models"] / PACKAGED_DIR
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(packaged),
            str(tmp_path / "inputs.pkl"),
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "out.json").read_text())
    assert [list(row) for row in rows] == [PRDTYPECODE_COLUMNS] * 3
    assert rows[0]["prdtypecode"] == 2583 and rows[0]["label"] == "pool & spa"
    for row in rows:
        top3 = json.loads(row["top3"])
        assert len(top3) == 3 and top3[0]["prdtypecode"] == row["prdtypecode"]
        assert top3[0]["probability"] >= top3[1]["probability"] >= top3[2]["probability"]
        assert 0 < row["probability"] <= 1


@pytest.mark.slow
def test_cli_predict_writes_one_row_per_listing(
    synthetic_run: dict[str, Path], tmp_path: Path
) -> None:
    raw = synthetic_run["raw"]
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--input",
            str(raw / "X_test_update.csv"),
            "--images",
            str(raw / "images" / "image_test"),
            "--output",
            str(tmp_path / "out.csv"),
            "--model",
            str(synthetic_run["models"] / PACKAGED_DIR),
        ],
    )
    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "out.csv")
    listings = pd.read_csv(raw / "X_test_update.csv", index_col=0)
    assert list(out.columns[:3]) == ["productid", "prdtypecode", "label"] and "probability" in out
    assert out["productid"].tolist() == listings["productid"].tolist()
    assert json.loads(result.stdout.strip().splitlines()[-1])["with_photo"] > 150


# The pipeline before issue 18: branches fitted on train alone, fusion weights on a grid.
TRAIN_ONLY_GRID = {"train": {"refit": [], "cross_fit": []}, "fusion": {"combiner": "grid"}}


def _sample_pipeline(sample: Path, processed: Path, out: Path, **blocks: Any) -> dict[str, Any]:
    """Text and image branches trained, fused and scored on the pinned test split."""
    train = {"branches": ["text_tfidf", "image_cnn"], **blocks.pop("train", {})}
    image = {**FAST_IMAGE, "epochs": 2, "image_size": 32}
    params = _params(**{"image_cnn": image, **blocks}, train=train)
    train_branches(processed, sample, out / "models", params)
    fusion = fuse_branches(processed, sample, out / "models", params)
    return {**evaluate_models(processed, sample, out / "models", out / "reports"), **fusion}


@pytest.mark.slow
def test_on_the_real_sample_the_fused_model_beats_yesterdays_and_a_plain_svc(
    rakuten_sample: Path, tmp_path: Path
) -> None:
    processed = _processed(rakuten_sample, tmp_path)
    today = _sample_pipeline(rakuten_sample, processed, tmp_path / "today")
    before = _sample_pipeline(rakuten_sample, processed, tmp_path / "before", **TRAIN_ONLY_GRID)
    fused = today["scores"]["fused"]["weighted_f1"]
    assert fused >= before["scores"]["fused"]["weighted_f1"]
    assert fused >= plain_tfidf_linearsvc(processed)
    assert fused >= today["scores"]["text_tfidf"]["weighted_f1"]
    assert today["scores"]["image_cnn"]["coverage"] < 0.2  # most rows have no photo: it abstains
    summary = json.loads(
        (tmp_path / "today" / "models" / "branches" / "text_tfidf" / "summary.json").read_text()
    )
    assert summary["refit"]["rows"] == sum(
        len(pd.read_parquet(processed / f"{s}.parquet")) for s in ("train", "val")
    )
    assert today["combiner"] in {"grid", "log_linear", "stacked"} and before["combiner"] == "grid"


def test_a_keras_branch_is_refitted_on_train_and_val_for_the_epochs_early_stopping_chose(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "raw"
    synthesize(raw, rows=900, test_rows=5, images=False, seed=3)
    processed = _processed(raw, tmp_path)
    # A word only val's listings hold: the refitted model's vocabulary (built on its training
    # rows) has it only if it trained on val.
    val = pd.read_parquet(processed / "val.parquet")
    val["text"] = val["text"] + " zzvalonly"
    val.to_parquet(processed / "val.parquet")
    tiny = {"vocab_size": 3000, "sequence_length": 24, "embedding_dim": 8, "filters": 8}
    params = _params(
        train={
            "branches": ["text_cnn"],
            "refit": ["text_cnn"],
            "cross_fit": ["text_cnn"],
            "cross_fit_folds": 2,
        },
        text_cnn={**tiny, "kernel_sizes": [2], "epochs": 3, "patience": 1},
    )
    models = tmp_path / "models"
    summary = train_branches(processed, raw, models, params)["text_cnn"]
    rows = len(pd.read_parquet(processed / "train.parquet")) + len(val)
    assert summary["refit"]["rows"] == rows
    assert summary["refit"]["epochs"] == summary["best_epoch"] + 1
    assert summary["cross_fit"] == {
        "folds": 2,
        "rows": rows,
        "seconds": summary["cross_fit"]["seconds"],
    }
    saved = NeuralTextBranch.load(models / "branches" / "text_cnn")
    assert saved.vocabulary is not None and "zzvalonly" in saved.vocabulary.words
    fusion = fuse_branches(processed, raw, models, params)
    assert fusion["fitted_on"] == {"rows": rows, "cross_fitted": ["text_cnn"]}
    # The packaged model predicts with the refitted branch, not the train-only one.
    test = evaluate_models(processed, raw, models, tmp_path / "reports")
    assert test["scores"]["fused"]["coverage"] == 1
    packaged = FusedModel.load(fused_model_dir(models / PACKAGED_DIR))
    products = load_split(processed, raw, "val")
    np.testing.assert_allclose(
        packaged.branches["text_cnn"].predict_proba(products),
        saved.predict_proba(products),
        atol=1e-6,
    )


def test_fuse_without_trained_branches_says_how_to_train(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fuse", "--models", str(tmp_path)])
    assert result.exit_code == 1
    assert "rakuten train --branch" in str(result.exception)
