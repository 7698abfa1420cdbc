"""A real model registry for the tests that serve or score with @champion: a model trained on a
small synthetic catalogue (with photos), registered in an embedded MLflow registry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from src.config import SyntheticSource, load_params
from src.data.ingest import ingest
from src.data.make_dataset import make_dataset
from src.models.packaged import MODEL_NAME
from src.models.train import evaluate_models, fuse_branches, train_branches
from src.registry.lifecycle import promote, register, validate
from src.registry.tracking import TrainingPaths, tracking_client

# A text model in seconds, held to no quality floor: these tests are about serving it.
TEXT_PARAMS: dict[str, Any] = {
    "synthetic": {"rows": 300, "test_rows": 60, "images": True, "image_size": 32, "seed": 5},
    "train": {"branches": ["text_tfidf"], "seed": 0},
    "text_tfidf": {"trials": 0, "max_features": 5000, "n_jobs": 1},
    "fusion": {"weight_step": 0.5},
    "gate": {"min_weighted_f1": 0.0, "tolerance": 1.0, "per_class_f1_floor": 0.0},
}


@dataclass(frozen=True)
class Registry:
    """The registry's tracking URI, the pipeline's paths and its params file."""

    uri: str
    paths: TrainingPaths
    params_file: Path


def trained_registry(root: Path, params: dict[str, Any], versions: int = 2) -> Registry:
    """Train on synthetic data under `root`; register the model `versions` times, the first as
    @champion and the last (when there are two or more) as @challenger."""
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    loaded = load_params(params_file)
    paths = TrainingPaths(
        root / "data" / "processed", root / "data" / "raw", root / "models", root / "reports"
    )
    ingest(SyntheticSource(), paths.raw_dir, loaded)
    make_dataset(paths.raw_dir, paths.processed_dir, loaded.make_dataset, root / "interim", 1)
    train_branches(paths.processed_dir, paths.raw_dir, paths.models_dir, loaded)
    fuse_branches(paths.processed_dir, paths.raw_dir, paths.models_dir, loaded)
    evaluate_models(paths.processed_dir, paths.raw_dir, paths.models_dir, paths.reports_dir)
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    client = tracking_client(uri)
    register(client, paths, loaded, {})
    validate(client, paths, loaded.gate)
    promote(client, "auto", automatic=True, by="test")
    for _ in range(versions - 1):
        register(client, paths, loaded, {})
    return Registry(uri, paths, params_file)


@contextmanager
def kept_as_found(registry: Registry) -> Iterator[None]:
    """Put the registry's aliases and version tags back as they were (the gate's decision
    included): a test that gates, promotes and rolls back runs once per store backend on the
    same registry, and the second run must find what the first one found."""
    client = tracking_client(registry.uri)
    before = {
        v.version: client.get_model_version(MODEL_NAME, v.version)
        for v in client.search_model_versions(f"name='{MODEL_NAME}'")
    }
    try:
        yield
    finally:
        for number, found in before.items():
            now = client.get_model_version(MODEL_NAME, number)
            for key in now.tags.keys() - found.tags.keys():
                client.delete_model_version_tag(MODEL_NAME, number, key)
            for key, value in found.tags.items():
                if now.tags.get(key) != value:
                    client.set_model_version_tag(MODEL_NAME, number, key, value)
        aliases = {alias: v.version for v in before.values() for alias in v.aliases}
        for alias in client.get_registered_model(MODEL_NAME).aliases.keys() - aliases.keys():
            client.delete_registered_model_alias(MODEL_NAME, alias)
        for alias, number in aliases.items():
            client.set_registered_model_alias(MODEL_NAME, alias, number)
