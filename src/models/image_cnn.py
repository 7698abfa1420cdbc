"""The image branch: a Keras 3 CNN over the product photo, from scratch or fine-tuned.

The backbone comes from params.yaml (`image_cnn`): `small`, a compact CNN trained from scratch,
or a keras.applications network (`efficientnetb0`, `mobilenetv3small`) with ImageNet weights
from a configured file or the Keras cache (never downloaded here), fine-tuned in two phases: the
head with the backbone frozen, then its top layers at a lower learning rate. Photos stream from
disk (src/models/image_batches.py); class weights counter the imbalance; early stopping on the
validation loss keeps the best epoch; mixed precision is used where a GPU is present, and every
GPU of the host trains it data-parallel where the backend allows (src/models/devices.py). A product
whose photo is missing or corrupt gets a NaN row: the branch abstains. The code is
backend-neutral Keras 3 (public `keras.*` layers, applications and callbacks, numpy batches, no
TensorFlow call): it trains and predicts under TensorFlow, JAX or torch, and a saved branch loads
under any of them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Final, Self

import keras
import numpy as np
import pandas as pd

from src.config import ImageCnnParams, get_settings
from src.errors import MissingWeightsError, RakutenError
from src.features.images import decode_batch, has_photo
from src.models import devices
from src.models.branch import CLASSES, Branch, Modality, fit_summary, labels_index
from src.models.image_batches import ImageBatches, prefetched
from src.models.inference import class_probabilities
from src.models.photo_cache import PhotoCache, open_cache

logger = logging.getLogger(__name__)

MODEL_FILE: Final = "model.keras"
CONFIG_FILE: Final = "image_cnn.json"
SMALL: Final = "small"
# backbone -> (keras.applications constructor, the file name of its ImageNet weights without
# top in the Keras cache, exactly as keras.applications names it when it downloads them).
APPLICATIONS: Final[dict[str, tuple[str, str]]] = {
    "efficientnetb0": ("EfficientNetB0", "efficientnetb0_notop.h5"),
    "mobilenetv3small": (
        "MobileNetV3Small",
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    ),
}


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weights: `$KERAS_HOME/models`, else `~/.keras/models`."""
    home = os.environ.get("KERAS_HOME")
    return (Path(home) if home else Path.home() / ".keras") / "models"


def resolve_weights(params: ImageCnnParams) -> Path | None:
    """The ImageNet weights file of an application backbone, None if it cannot be had offline."""
    if params.weights_file is not None:
        return params.weights_file if params.weights_file.is_file() else None
    cached = keras_cache_dir() / APPLICATIONS[params.backbone][1]
    return cached if cached.is_file() else None


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a Keras dtype policy, then restore the process's previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def small_features(inputs: Any, filters: tuple[int, ...]) -> Any:
    """A compact CNN: a strided stem, then conv + BN + ReLU + pooling blocks, averaged globally."""
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Conv2D(filters[0], 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    for width in filters[1:]:
        x = keras.layers.SeparableConv2D(width, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    return keras.layers.GlobalAveragePooling2D()(x)


def build_model(
    params: ImageCnnParams, backbone: str, weights: Path | None
) -> tuple[keras.Model, keras.Model | None]:
    """The classifier over 27 classes (inputs: RGB in [0, 255]) and its application backbone."""
    size = params.image_size
    inputs = keras.Input((size, size, 3), name="image")
    base = None
    if backbone == SMALL:
        features = small_features(inputs, params.conv_filters)
    else:
        constructor: Callable[..., keras.Model] = getattr(
            keras.applications, APPLICATIONS[backbone][0]
        )
        # These applications rescale and normalise [0, 255] RGB themselves.
        base = constructor(
            include_top=False,
            weights=None if weights is None else str(weights),
            input_shape=(size, size, 3),
        )
        base.trainable = False
        # training=False keeps the backbone's BatchNormalization in inference mode, also once
        # its top layers are unfrozen (the Keras fine-tuning recipe).
        features = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    x = keras.layers.Dropout(params.dropout)(features)
    # float32 output: a stable softmax under mixed precision.
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"image_cnn_{backbone}"), base


def balanced_class_weights(labels: np.ndarray) -> np.ndarray:
    """Per-class weights n / (k * n_c) over the k classes present (1 for absent classes)."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    present = counts > 0
    weights = np.ones(len(CLASSES))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


class _EpochLog(keras.callbacks.Callback):  # type: ignore[misc]
    """Keeps and logs each epoch's metrics (the fit summary's history)."""

    def __init__(self, phase: str, history: list[dict[str, Any]]) -> None:
        super().__init__()
        self.phase = phase
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Record one epoch."""
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        self.history.append({"phase": self.phase, "epoch": len(self.history), **metrics})
        logger.info("image_cnn %s epoch %d: %s", self.phase, epoch + 1, metrics)


class ImageBranch(Branch):
    """Product photo -> probabilities over the 27 product types (NaN where there is no photo)."""

    name: ClassVar[str] = "image_cnn"
    modality: ClassVar[Modality] = "image"
    params: ImageCnnParams

    def __init__(self, params: ImageCnnParams | None = None) -> None:
        super().__init__(params or ImageCnnParams())
        self.model: keras.Model | None = None
        self.backbone: str = self.params.backbone

    def fit(self, train: pd.DataFrame, val: pd.DataFrame) -> dict[str, Any]:
        """Train on the photos of `train`, early-stopped on those of `val`; return a summary."""
        where = devices.placement(self.name, self.params.batch_size)
        with devices.distributed(where):
            summary = self._fit(train, val, where)
        if summary["mixed_precision"] or where.replicas > 1:  # a plain model, predicting anywhere
            self.model = self._float32(self.model, self.backbone)
        return {**summary, "devices": list(where.devices), "strategy": where.strategy}

    def _fit(
        self, train: pd.DataFrame, val: pd.DataFrame, where: devices.Placement
    ) -> dict[str, Any]:
        """`fit` on the devices chosen, under their strategy."""
        started = time.perf_counter()
        params = self.params
        keras.utils.set_random_seed(params.seed)
        backbone, weights = self._backbone()
        mixed = params.mixed_precision and where.gpu
        with dtype_policy("mixed_float16" if mixed else "float32"):
            model, base = build_model(params, backbone, weights)
        labels = labels_index(train["prdtypecode"])
        with_photo = np.array([has_photo(image) for image in train["image"]], dtype=bool)
        class_weights = balanced_class_weights(labels[with_photo])
        batches = ImageBatches(
            train["image"].tolist(),
            image_size=params.image_size,
            batch_size=where.batch_size,
            labels=labels,
            sample_weights=class_weights[labels],
            augment=params.augment,
            shuffle=True,
            seed=params.seed,
            workers=self._workers(),
            cache=self._photo_cache(train),
            replicas=where.replicas,
        )
        if not len(batches):
            raise RakutenError("no training product has a photo: the image branch cannot learn")
        val_batches = self._val_batches(val, class_weights, where)
        logger.info(
            "image_cnn: %s network, %d px, %d training photos, %d validation photos, %s",
            backbone,
            params.image_size,
            len(batches.rows),
            0 if val_batches is None else len(val_batches.rows),
            "mixed precision" if mixed else "float32",
        )
        history: list[dict[str, Any]] = []
        first = "head" if base is not None else "scratch"
        self._phase(
            model, batches, val_batches, first, params.learning_rate, params.epochs, history
        )
        if base is not None and params.fine_tune_epochs > 0:
            self._fine_tune(model, base, batches, val_batches, history)
        self.model = model
        self.backbone = backbone
        return {
            "backbone": backbone,
            "weights": None if weights is None else str(weights),
            "image_size": params.image_size,
            "mixed_precision": mixed,
            "train_rows": len(train),  # rows of the split, as the text branches report them
            "val_rows": len(val),
            "train_photos": len(batches.rows),
            "val_photos": 0 if val_batches is None else len(val_batches.rows),
            **fit_summary(history, started),
        }

    def refit_params(self, summary: dict[str, Any]) -> ImageCnnParams | None:
        """The epoch count early stopping chose, for the small network trained from scratch
        (None for a fine-tuned backbone, whose two phases one count cannot say)."""
        best = summary.get("best_epoch")
        if best is None or summary.get("backbone") != "small":
            return None
        return self.params.model_copy(update={"epochs": best + 1})

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        """Probabilities in `CLASSES` order; NaN rows where the photo is missing or corrupt."""
        if self.model is None:
            raise RakutenError("the image branch is not trained: fit or load it first")
        proba = np.full((len(products), len(CLASSES)), np.nan)
        images = products["image"].tolist() if "image" in products else [None] * len(products)
        size, batch_size = self.params.image_size, self.params.batch_size
        with_photo = np.array([i for i, image in enumerate(images) if has_photo(image)], np.int64)
        if len(with_photo) <= batch_size:
            # A few photos (an API request): decoded here, no decoding threads to set up.
            x, kept = decode_batch([images[i] for i in with_photo], size)
            batched = iter([(x, with_photo[kept])])
        else:
            batched = prefetched(
                ImageBatches(
                    images, image_size=size, batch_size=batch_size, workers=self._workers()
                )
            )
        for x, rows in batched:
            if len(rows):
                proba[rows] = class_probabilities(self.model, x, batch_size)
        return proba

    def save(self, directory: Path) -> None:
        """Write `model.keras` and `image_cnn.json` (params, backbone used, classes)."""
        if self.model is None:
            raise RakutenError("the image branch is not trained: nothing to save")
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / MODEL_FILE)
        config = {
            "params": self.params.model_dump(mode="json"),
            "backbone": self.backbone,
            "classes": CLASSES.tolist(),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a branch written by `save`."""
        config: dict[str, Any] = json.loads((directory / CONFIG_FILE).read_text())
        if config["classes"] != CLASSES.tolist():
            raise ValueError(f"{directory}: saved for other classes than {CLASSES.tolist()}")
        branch = cls(ImageCnnParams.model_validate(config["params"]))
        branch.model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
        branch.backbone = config["backbone"]
        return branch

    def _workers(self) -> int:
        """Threads decoding photos: as configured, or one per CPU core this process may use."""
        return self.params.workers or len(os.sched_getaffinity(0))

    def _photo_cache(self, products: pd.DataFrame) -> PhotoCache | None:
        """The products' photos decoded once (RAKUTEN_PHOTO_CACHE_DIR), or None: no cache."""
        directory = get_settings().photo_cache_dir
        if directory is None:
            return None
        return open_cache(
            directory, products["image"].tolist(), self.params.image_size, self._workers()
        )

    def _backbone(self) -> tuple[str, Path | None]:
        """The backbone to build and its weights file: stop or fall back where none is at hand."""
        params = self.params
        if params.backbone == SMALL:
            return SMALL, None
        weights = resolve_weights(params)
        if weights is not None:
            logger.info("image_cnn: %s with ImageNet weights from %s", params.backbone, weights)
            return params.backbone, weights
        where = (
            f"the configured file {params.weights_file} does not exist"
            if params.weights_file is not None
            else f"{APPLICATIONS[params.backbone][1]} is not in the Keras cache "
            f"{keras_cache_dir()} and nothing is downloaded"
        )
        if params.on_missing_weights == "stop":
            raise MissingWeightsError(
                f"no ImageNet weights for backbone {params.backbone}: {where}; set "
                "image_cnn.weights_file to a weights file in params.yaml, or choose "
                "image_cnn.backbone: small, or image_cnn.on_missing_weights: scratch"
            )
        logger.warning(
            "image_cnn: no ImageNet weights for %s (%s); training the small network from "
            "scratch instead (image_cnn.on_missing_weights: scratch)",
            params.backbone,
            where,
        )
        return SMALL, None

    def _val_batches(
        self, val: pd.DataFrame, class_weights: np.ndarray, where: devices.Placement
    ) -> ImageBatches | None:
        """The validation photos (weighted like training), or None where there are none."""
        labels = labels_index(val["prdtypecode"])
        batches = ImageBatches(
            val["image"].tolist(),
            image_size=self.params.image_size,
            batch_size=where.batch_size,
            labels=labels,
            sample_weights=class_weights[labels],
            workers=self._workers(),
            cache=self._photo_cache(val),
            replicas=where.replicas,
        )
        if not len(batches):
            logger.warning("image_cnn: no validation photos, so no early stopping")
            return None
        return batches

    def _phase(
        self,
        model: keras.Model,
        batches: ImageBatches,
        val_batches: ImageBatches | None,
        phase: str,
        learning_rate: float,
        epochs: int,
        history: list[dict[str, Any]],
    ) -> None:
        """One training phase at one learning rate, keeping its best epoch on val loss."""
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        callbacks: list[keras.callbacks.Callback] = [_EpochLog(phase, history)]
        if val_batches is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.params.patience, restore_best_weights=True
                )
            )
        model.fit(
            batches, validation_data=val_batches, epochs=epochs, callbacks=callbacks, verbose=0
        )

    def _fine_tune(
        self,
        model: keras.Model,
        base: keras.Model,
        batches: ImageBatches,
        val_batches: ImageBatches | None,
        history: list[dict[str, Any]],
    ) -> None:
        """Phase 2: train the backbone's top layers too, at the lower rate; keep the head-only
        model where this does not lower the validation loss."""
        params = self.params
        head_weights, head_epochs = model.get_weights(), len(history)
        top = {id(layer) for layer in base.layers[-params.fine_tune_layers :]}
        base.trainable = True
        for layer in base.layers:  # BatchNormalization stays frozen, as Keras advises
            is_norm = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = id(layer) in top and not is_norm
        self._phase(
            model,
            batches,
            val_batches,
            "fine_tune",
            params.fine_tune_learning_rate,
            params.fine_tune_epochs,
            history,
        )
        head_loss, tuned_loss = _best_loss(history[:head_epochs]), _best_loss(history[head_epochs:])
        if head_loss is not None and tuned_loss is not None and tuned_loss >= head_loss:
            logger.info("image_cnn: fine-tuning did not lower the val loss; head-only model kept")
            model.set_weights(head_weights)

    def _float32(self, model: keras.Model | None, backbone: str) -> keras.Model:
        """A float32 copy of a mixed-precision or distributed model, on no strategy, so the saved
        branch predicts on any device."""
        assert model is not None
        with dtype_policy("float32"):
            copy, _ = build_model(self.params, backbone, None)
        copy.set_weights(model.get_weights())
        return copy


def _best_loss(history: list[dict[str, Any]]) -> float | None:
    """The lowest validation loss of some epochs (None without validation)."""
    losses = [epoch["val_loss"] for epoch in history if "val_loss" in epoch]
    return min(losses) if losses else None
