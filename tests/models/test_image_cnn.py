"""The image branch: training, abstention, save/load, pretrained backbones and their weights."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest

from src.config import ImageCnnParams, MakeDatasetParams, load_params
from src.data.make_dataset import make_dataset
from src.data.synth import synthesize
from src.errors import MissingWeightsError, RakutenError
from src.models import devices
from src.models.branch import CLASSES, branch_class, labels_index
from src.models.data import load_split
from src.models.image_cnn import (
    APPLICATIONS,
    CONFIG_FILE,
    MODEL_FILE,
    ImageBranch,
    balanced_class_weights,
    build_model,
    resolve_weights,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = ImageCnnParams(
    image_size=32, conv_filters=(8, 16), batch_size=16, epochs=2, patience=1, workers=2
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and val splits of a small synthetic catalogue, made by the project's own steps."""
    work = tmp_path_factory.mktemp("synthetic")
    raw, processed = work / "raw", work / "processed"
    synthesize(raw, rows=240, test_rows=5, image_size=64, seed=11)
    make_dataset(raw, processed, MakeDatasetParams(), work / "interim")
    return load_split(processed, raw, "train"), load_split(processed, raw, "val")


@pytest.fixture(scope="module")
def real_photos(shared_data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 96 real labelled photos without text: 64 to train on, 32 to validate with."""
    folder = shared_data / "rakuten_image_only"
    labels = pd.read_csv(folder / "labels_image_train.csv")
    frame = pd.DataFrame(
        {
            "prdtypecode": labels["prdtypecode"],
            "image": [
                str(folder / "image_train" / f"image_{imageid}_product_{productid}.jpg")
                for imageid, productid in zip(labels["imageid"], labels["productid"], strict=True)
            ],
        }
    )
    return frame.iloc[:64].reset_index(drop=True), frame.iloc[64:].reset_index(drop=True)


@pytest.fixture(scope="module")
def tiny_branch(
    photos: tuple[pd.DataFrame, pd.DataFrame],
) -> tuple[ImageBranch, dict[str, Any]]:
    """A small network fitted for two epochs on the synthetic photos at 32 px."""
    branch = ImageBranch(TINY)
    return branch, branch.fit(*photos)


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Keras cache, and any download attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", refuse)
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _application_weights(backbone: str, size: int, path: Path) -> list[np.ndarray]:
    """Write a notop weights file for `backbone` (random, seeded) as keras.applications would."""
    keras.utils.set_random_seed(123)
    constructor = getattr(keras.applications, APPLICATIONS[backbone][0])
    model = constructor(include_top=False, weights=None, input_shape=(size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)  # the legacy .h5 layout of the files in the Keras cache
    weights: list[np.ndarray] = model.get_weights()
    return weights


def test_registered_as_the_image_branch() -> None:
    assert branch_class("image_cnn") is ImageBranch
    assert ImageBranch.modality == "image"


def test_params_yaml_block_is_valid() -> None:
    params = load_params(PROJECT_ROOT / "params.yaml").image_cnn
    assert params == ImageCnnParams()
    assert params.backbone == "small"


def test_balanced_class_weights() -> None:
    labels = np.array([0, 0, 0, 1])
    weights = balanced_class_weights(labels)
    assert weights.shape == (len(CLASSES),)
    assert weights[0] == pytest.approx(4 / 6) and weights[1] == pytest.approx(2.0)
    assert weights[5] == 1.0  # an absent class
    assert weights[labels].sum() == pytest.approx(len(labels))  # the mean weight stays 1


def test_smoke_training(
    tiny_branch: tuple[ImageBranch, dict[str, Any]],
    photos: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    branch, summary = tiny_branch
    train, val = photos
    assert summary["backbone"] == "small"
    # Rows as every branch reports them (the train step's input-rows metric reads them).
    assert (summary["train_rows"], summary["val_rows"]) == (len(train), len(val))
    assert summary["train_photos"] == train["image"].notna().sum()
    assert summary["val_photos"] == val["image"].notna().sum() > 0
    assert summary["mixed_precision"] is False
    assert [h["epoch"] for h in summary["history"]] == list(range(summary["epochs"]))
    for epoch in summary["history"]:
        assert epoch["phase"] == "scratch"
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epoch)
    assert summary["val_loss"] == min(h["val_loss"] for h in summary["history"])
    json.dumps(summary)  # the summary is JSON, as train writes it
    proba = branch.predict_proba(val)
    assert proba.shape == (len(val), len(CLASSES))
    has_photo = val["image"].notna().to_numpy()
    np.testing.assert_allclose(proba[has_photo].sum(axis=1), 1, atol=1e-6)


def test_smoke_training_on_real_photos(real_photos: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    branch = ImageBranch(TINY)
    summary = branch.fit(*real_photos)
    assert summary["train_photos"] == 64 and summary["val_photos"] == 32
    assert len(summary["history"]) == summary["epochs"] >= 1
    proba = branch.predict_proba(real_photos[1])
    assert proba.shape == (32, len(CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)


def test_abstains_where_the_photo_is_missing_or_corrupt(
    tiny_branch: tuple[ImageBranch, dict[str, Any]],
    photos: tuple[pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
) -> None:
    branch, _ = tiny_branch
    corrupt = tmp_path / "corrupt.jpg"
    good = photos[1]["image"].dropna().tolist()
    data = Path(good[0]).read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    images = [good[0], None, str(tmp_path / "absent.jpg"), good[1], str(corrupt), np.nan, good[2]]
    proba = branch.predict_proba(pd.DataFrame({"image": images}))
    abstains = np.isnan(proba).all(axis=1)
    assert abstains.tolist() == [False, True, True, False, True, True, False]
    assert np.isfinite(proba[~abstains]).all()
    nothing = pd.DataFrame({"image": [None, str(tmp_path / "absent.jpg"), b"broken"]})
    assert np.isnan(branch.predict_proba(nothing)).all()
    assert np.isnan(branch.predict_proba(pd.DataFrame({"designation": ["a", "b"]}))).all()
    assert branch.predict_proba(pd.DataFrame({"image": []})).shape == (0, len(CLASSES))


def test_a_product_gets_the_same_answer_alone_in_a_batch_or_from_bytes(
    tiny_branch: tuple[ImageBranch, dict[str, Any]],
    photos: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    branch, _ = tiny_branch
    val = photos[1].dropna(subset=["image"]).reset_index(drop=True)
    together = branch.predict_proba(val)
    alone = branch.predict_proba(val.iloc[[5]])
    np.testing.assert_allclose(alone[0], together[5], atol=1e-6)
    as_bytes = pd.DataFrame({"image": [Path(val["image"][5]).read_bytes()]})
    np.testing.assert_allclose(branch.predict_proba(as_bytes)[0], together[5], atol=1e-6)


def test_save_and_load_in_a_fresh_process(
    tiny_branch: tuple[ImageBranch, dict[str, Any]],
    photos: tuple[pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
) -> None:
    branch, _ = tiny_branch
    val = photos[1]
    branch.save(tmp_path / "branch")
    assert (tmp_path / "branch" / MODEL_FILE).is_file()
    assert (tmp_path / "branch" / CONFIG_FILE).is_file()
    val[["image"]].to_parquet(tmp_path / "products.parquet")
    script = (
        "import sys, numpy as np, pandas as pd\n"
        "from pathlib import Path\n"
        "from src.models.image_cnn import ImageBranch\n"
        "branch = ImageBranch.load(Path(sys.argv[1]))\n"
        "np.save(sys.argv[3], branch.predict_proba(pd.read_parquet(sys.argv[2])))\n"
    )
    out = tmp_path / "proba.npy"
    subprocess.run(
        [sys.executable, "-c", script, tmp_path / "branch", tmp_path / "products.parquet", out],
        check=True,
        cwd=PROJECT_ROOT,
    )
    np.testing.assert_allclose(np.load(out), branch.predict_proba(val), atol=1e-6)


def test_27_outputs_when_classes_are_absent_from_train(
    photos: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, val = photos
    train = train.assign(prdtypecode=np.where(np.arange(len(train)) % 2, 10, 2583))
    branch = ImageBranch(TINY.model_copy(update={"epochs": 1}))
    branch.fit(train, val)
    proba = branch.predict_proba(val.dropna(subset=["image"]).iloc[:4])
    assert proba.shape == (4, len(CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)


def test_training_needs_photos(photos: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, val = photos
    with pytest.raises(RakutenError, match="no training product has a photo"):
        ImageBranch(TINY).fit(train.assign(image=None), val)
    with pytest.raises(RakutenError, match="not trained"):
        ImageBranch(TINY).predict_proba(val)


def test_trains_without_validation_photos(photos: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, val = photos
    summary = ImageBranch(TINY.model_copy(update={"epochs": 1})).fit(train, val.assign(image=None))
    assert summary["val_photos"] == 0 and summary["val_loss"] is None
    assert summary["epochs"] == 1


def test_missing_imagenet_weights_stop_with_the_options(
    no_download: Path, photos: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    params = TINY.model_copy(update={"backbone": "mobilenetv3small"})
    assert resolve_weights(params) is None
    with pytest.raises(MissingWeightsError) as stopped:
        ImageBranch(params).fit(*photos)
    message = str(stopped.value)
    assert "mobilenetv3small" in message and str(no_download / "models") in message
    for option in ("weights_file", "backbone: small", "on_missing_weights: scratch"):
        assert option in message
    absent = no_download / "absent.h5"
    with pytest.raises(MissingWeightsError, match=f"configured file {absent} does not exist"):
        ImageBranch(params.model_copy(update={"weights_file": absent})).fit(*photos)


def test_missing_imagenet_weights_fall_back_to_scratch(
    no_download: Path,
    photos: tuple[pd.DataFrame, pd.DataFrame],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    params = TINY.model_copy(
        update={"backbone": "efficientnetb0", "on_missing_weights": "scratch", "epochs": 1}
    )
    branch = ImageBranch(params)
    with caplog.at_level(logging.WARNING, logger="src.models.image_cnn"):
        summary = branch.fit(*photos)
    assert summary["backbone"] == "small" and summary["weights"] is None
    assert any("no ImageNet weights for efficientnetb0" in r.message for r in caplog.records)
    branch.save(tmp_path / "branch")
    assert ImageBranch.load(tmp_path / "branch").backbone == "small"


def test_cached_weights_are_fine_tuned_in_two_phases(
    no_download: Path, photos: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """Weights from the Keras cache: phase 1 trains the head only, phase 2 the top layers too."""
    cached = no_download / "models" / APPLICATIONS["mobilenetv3small"][1]
    original = _application_weights("mobilenetv3small", 32, cached)
    params = TINY.model_copy(
        update={
            "backbone": "mobilenetv3small",
            "epochs": 1,
            "fine_tune_epochs": 1,
            "fine_tune_layers": 12,
        }
    )
    branch = ImageBranch(params)
    summary = branch.fit(*photos)
    assert summary["backbone"] == "mobilenetv3small" and summary["weights"] == str(cached)
    assert [h["phase"] for h in summary["history"]] == ["head", "fine_tune"]
    assert branch.model is not None
    base = next(layer for layer in branch.model.layers if isinstance(layer, keras.Model))
    top = base.layers[-12:]
    frozen = [w for layer in base.layers[:-12] for w in layer.weights]
    assert len(frozen) > 0
    by_path = dict(zip([w.path for w in base.weights], original, strict=True))
    for weight in frozen:  # loaded from the file and never trained
        np.testing.assert_array_equal(weight.numpy(), by_path[weight.path])
    assert any(layer.trainable_weights for layer in top)
    assert not any(
        layer.trainable
        for layer in base.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    tuned = [w for layer in top for w in layer.trainable_weights]
    changed = any(not np.array_equal(w.numpy(), by_path[w.path]) for w in tuned)
    # Phase 2's weights are kept only where they lower the validation loss.
    assert changed == (summary["history"][summary["best_epoch"]]["phase"] == "fine_tune")


def test_a_configured_weights_file_is_loaded(no_download: Path) -> None:
    path = no_download / "elsewhere" / "effnet.h5"
    original = _application_weights("efficientnetb0", 32, path)
    params = TINY.model_copy(update={"backbone": "efficientnetb0", "weights_file": path})
    assert resolve_weights(params) == path
    model, base = build_model(params, "efficientnetb0", resolve_weights(params))
    assert base is not None and not base.trainable
    for weight, expected in zip(base.get_weights(), original, strict=True):
        np.testing.assert_array_equal(weight, expected)
    assert model.output_shape == (None, len(CLASSES))


def test_mixed_precision_where_a_gpu_is(
    monkeypatch: pytest.MonkeyPatch, photos: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """On a GPU the branch trains in float16 and keeps a float32 model that predicts anywhere."""
    monkeypatch.setattr(devices, "visible_devices", lambda: ["gpu:0"])
    branch = ImageBranch(TINY.model_copy(update={"epochs": 1}))
    summary = branch.fit(*photos)
    assert summary["mixed_precision"] is True
    assert keras.config.dtype_policy().name == "float32"  # the process's policy is restored
    assert branch.model is not None
    assert {layer.dtype_policy.name for layer in branch.model.layers} == {"float32"}
    proba = branch.predict_proba(photos[1].dropna(subset=["image"]))
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    off = ImageBranch(TINY.model_copy(update={"epochs": 1, "mixed_precision": False}))
    assert off.fit(*photos)["mixed_precision"] is False


def test_same_seed_same_model(photos: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    params = TINY.model_copy(update={"epochs": 1})
    first, second = ImageBranch(params), ImageBranch(params)
    first.fit(*photos)
    second.fit(*photos)
    val = photos[1]
    np.testing.assert_allclose(first.predict_proba(val), second.predict_proba(val), atol=1e-5)


@pytest.mark.slow
def test_learns_the_synthetic_photos(tmp_path: Path) -> None:
    """Colour carries the family and texture the type: the branch must beat the majority class."""
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    synthesize(raw, rows=3000, test_rows=10, image_size=64, seed=5)
    make_dataset(raw, processed, MakeDatasetParams(), tmp_path / "interim")
    train, val, test = (load_split(processed, raw, split) for split in ("train", "val", "test"))
    # Augmentation pays off over longer runs (75% test accuracy on 20,000 rows, 64 px, 19
    # epochs); in 10 epochs on 2,000 photos it only slows learning down.
    params = ImageCnnParams(
        image_size=64,
        conv_filters=(32, 64, 128, 256),
        batch_size=32,
        epochs=10,
        augment=False,
        workers=2,
    )
    branch = ImageBranch(params)
    summary = branch.fit(train, val)
    proba = branch.predict_proba(test)
    voted = ~np.isnan(proba).any(axis=1)
    assert voted.mean() > 0.95  # a few photos are missing or corrupt on purpose
    truth = labels_index(test["prdtypecode"])[voted]
    accuracy = (proba[voted].argmax(axis=1) == truth).mean()
    majority = np.bincount(truth).max() / len(truth)
    assert accuracy > 2 * majority, (accuracy, majority, summary["history"])  # 0.31 vs 0.12
