"""A champion for the serving benches: trained on synthetic data, registered in an embedded
MLflow registry. Building it is set-up, never part of what a bench times."""

from __future__ import annotations

from pathlib import Path

from src.config import Params, SyntheticSource
from src.data.ingest import ingest
from src.data.make_dataset import make_dataset
from src.models.packaged import MODEL_NAME
from src.models.train import evaluate_models, fuse_branches, train_branches
from src.registry.lifecycle import CHAMPION, register
from src.registry.tracking import TrainingPaths, tracking_client


def make_champion(work: Path, params: Params) -> tuple[str, str, TrainingPaths]:
    """Train `params` on its synthetic catalogue under `work`; register the model as @champion.

    Returns the tracking URI, the version and the pipeline's paths.
    """
    paths = TrainingPaths(work / "processed", work / "raw", work / "models", work / "reports")
    ingest(SyntheticSource(), paths.raw_dir, params)
    make_dataset(paths.raw_dir, paths.processed_dir, params.make_dataset, work / "interim")
    train_branches(paths.processed_dir, paths.raw_dir, paths.models_dir, params)
    fuse_branches(paths.processed_dir, paths.raw_dir, paths.models_dir, params)
    evaluate_models(paths.processed_dir, paths.raw_dir, paths.models_dir, paths.reports_dir)
    tracking_uri = f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"
    client = tracking_client(tracking_uri)
    version = str(register(client, paths, params, {})["version"])
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    return tracking_uri, version, paths
