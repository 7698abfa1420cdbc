"""A registered version's reference profile: the file `rakuten fuse` packaged with its model."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from src.errors import RakutenError
from src.models.profile import PROFILE_FILE

logger = logging.getLogger(__name__)


def reference_profile(client: MlflowClient, name: str, version: str) -> dict[str, Any]:
    """Download the profile from the version's logged model (only that file, not the model)."""
    found = client.get_model_version(name, version)
    model_id = found.model_id or str(found.source).removeprefix("models:/")
    location = str(client.get_logged_model(model_id).artifact_location).rstrip("/")
    with tempfile.TemporaryDirectory() as work:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location}/{PROFILE_FILE}",
                dst_path=work,
                tracking_uri=str(client.tracking_uri),
            )
        except (MlflowException, OSError) as error:
            raise RakutenError(
                f"{name} version {version} has no {PROFILE_FILE} (packaged before drift "
                f"monitoring?): retrain it with `rakuten fuse` and register it ({error})"
            ) from error
        profile: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    logger.info("reference profile of %s v%s read from %s", name, version, location)
    return profile
