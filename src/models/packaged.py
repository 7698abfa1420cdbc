"""The packaged model: the fused branches as one MLflow pyfunc model that predicts from raw inputs.

Inputs are listings as received: `designation`, optional `description`, and optionally the photo
as `image` (JPEG bytes) or `image_path` (a file path). The text is cleaned exactly as at training
time. Outputs: the predicted `prdtypecode`, its `label` (community name), its `probability`, and
the `top3` as a JSON list of {prdtypecode, label, probability}.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PyFuncModel
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema

import src
from src.data.classes import CLASS_NAMES
from src.errors import RakutenError
from src.models.branch import CLASSES
from src.models.fusion import FusedModel
from src.models.profile import PROFILE_FILE

logger = logging.getLogger(__name__)

MODEL_NAME: Final = "rakuten-product-classifier"
CHAMPION_URI: Final = f"models:/{MODEL_NAME}@champion"
_ARTIFACT: Final = "fused_model"
_PREPROCESSING: Final = "preprocessing.json"
# What the model needs at load time, pinned to the versions it was trained with.
_REQUIREMENTS: Final = (
    "mlflow",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "ftfy",
    "pillow",
    "keras",
    "tensorflow",
)

SIGNATURE: Final = ModelSignature(
    inputs=Schema(
        [
            ColSpec("string", "designation"),
            ColSpec("string", "description", required=False),
            ColSpec("binary", "image", required=False),
            ColSpec("string", "image_path", required=False),
        ]
    ),
    outputs=Schema(
        [
            ColSpec("long", "prdtypecode"),
            ColSpec("string", "label"),
            ColSpec("double", "probability"),
            ColSpec("string", "top3"),
        ]
    ),
)
INPUT_EXAMPLE: Final = pd.DataFrame(
    {
        "designation": ["Piscine tubulaire hors-sol 300 x 200 cm avec pompe de filtration"],
        "description": ["<p>Structure acier, liner PVC renforcé.</p>"],
    }
)


def predictions_frame(proba: np.ndarray) -> pd.DataFrame:
    """The model's answer per product: code, label, probability and the top 3 as JSON."""
    order = np.argsort(-proba, axis=1)[:, :3]
    best = order[:, 0]
    top3 = [
        json.dumps(
            [
                {
                    "prdtypecode": int(CLASSES[i]),
                    "label": CLASS_NAMES[int(CLASSES[i])],
                    "probability": round(float(row[i]), 6),
                }
                for i in picks
            ]
        )
        for row, picks in zip(proba, order, strict=True)
    ]
    return pd.DataFrame(
        {
            "prdtypecode": CLASSES[best].astype(np.int64),
            "label": [CLASS_NAMES[int(code)] for code in CLASSES[best]],
            "probability": proba[np.arange(len(proba)), best].astype(np.float64),
            "top3": top3,
        }
    )


class RakutenClassifier(PythonModel):
    """The pyfunc face of a `FusedModel`."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the fused branches and the text-cleaning settings they were trained with."""
        from src.models.fusion import FusedModel

        directory = Path(context.artifacts[_ARTIFACT])
        self._model = FusedModel.load(directory)
        self._preprocessing = json.loads((directory / _PREPROCESSING).read_text())

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Predict from raw listings (see the module docstring for the columns)."""
        from src.models.data import products_from_listings

        listings = model_input.copy()
        image = listings["image"] if "image" in listings else pd.Series(None, index=listings.index)
        if "image_path" in listings:
            image = image.where(image.notna(), listings["image_path"])
        listings["image"] = image.astype(object)
        products = products_from_listings(listings, lowercase=self._preprocessing["lowercase"])
        return predictions_frame(self._model.predict_proba(products))


def _pinned_requirements() -> list[str]:
    """Requirements of the packaged model at the installed versions."""
    pinned = []
    for name in _REQUIREMENTS:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            logger.warning("%s is not installed; left out of the model's requirements", name)
    return pinned


def _pyfunc_model(fused: Path) -> dict[str, Any]:
    """What MLflow is given to save or log the packaged model: the same both ways."""
    return {
        "python_model": RakutenClassifier(),
        "artifacts": {_ARTIFACT: str(fused)},
        "code_paths": [str(Path(src.__file__).parent)],
        "signature": SIGNATURE,
        "input_example": INPUT_EXAMPLE,
        "pip_requirements": _pinned_requirements(),
    }


def package(model: FusedModel, lowercase: bool, out_dir: Path) -> Path:
    """Save `model` as an MLflow pyfunc model in `out_dir` (replaced atomically)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as work:
        fused = Path(work) / _ARTIFACT
        model.save(fused)
        (fused / _PREPROCESSING).write_text(json.dumps({"lowercase": lowercase}) + "\n")
        staging = Path(work) / "packaged"
        mlflow.pyfunc.save_model(path=str(staging), **_pyfunc_model(fused))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    logger.info("packaged model written to %s", out_dir)
    return out_dir


def log_packaged(packaged_dir: Path, name: str, tags: Mapping[str, str]) -> ModelInfo:
    """Log a packaged model (`package`'s output) to the active MLflow run as a LoggedModel.

    The fused branches `package` saved are logged again through `mlflow.pyfunc.log_model`, with
    the same code, signature, example and requirements, so MLflow writes the model's metadata.
    The reference profile `rakuten fuse` wrote beside them goes to the logged model's artifacts
    too: every version registered from it carries the reference its drift checks compare with.
    """
    fused = fused_model_dir(packaged_dir)
    if not fused.is_dir():
        raise RakutenError(f"no packaged model in {packaged_dir}: run `rakuten fuse`")
    info: ModelInfo = mlflow.pyfunc.log_model(
        name=name, tags=dict(tags), model_type="fused", **_pyfunc_model(fused)
    )
    profile = packaged_dir / PROFILE_FILE
    if profile.is_file():
        mlflow.MlflowClient().log_model_artifact(info.model_id, str(profile))
    else:
        logger.warning("%s has no %s: its drift cannot be checked", packaged_dir, PROFILE_FILE)
    logger.info("model %s logged to run %s", info.model_id, info.run_id)
    return info


def fused_model_dir(packaged_dir: Path) -> Path:
    """Where a packaged model keeps its fused branches (MLflow copies artifacts there)."""
    return packaged_dir / "artifacts" / _ARTIFACT


def load(uri: str, tracking_uri: str) -> PyFuncModel:
    """Load a packaged model from a path or an MLflow URI (models:/NAME@ALIAS, runs:/...)."""
    mlflow.set_tracking_uri(tracking_uri)
    model: PyFuncModel = mlflow.pyfunc.load_model(uri)
    return model
