"""Configuration: infrastructure settings from the environment, ML parameters from params.yaml.

Two kinds of configuration are kept apart on purpose (DESIGN §6.3): where things live and how to
reach them (`Settings`, from `RAKUTEN_*` variables and `.env`) and how the ML steps behave
(`Params`, one block per pipeline stage in `params.yaml`, as DVC reads them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from src.errors import RakutenError

HUB_REPO_ID = "ndiguesene/ml-datasets-image-rakuten-ecommerce"
HUB_DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class HubSource:
    """A dataset repository on the HuggingFace hub, at a branch, tag or commit."""

    repo_id: str = HUB_REPO_ID
    revision: str = HUB_DEFAULT_REVISION


@dataclass(frozen=True)
class LocalSource:
    """A local directory laid out like the hub repository."""

    path: Path


@dataclass(frozen=True)
class SyntheticSource:
    """Data made by the project's own generator (params.yaml `synthetic` block)."""


DataSource = HubSource | LocalSource | SyntheticSource

_HUB_URI = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


def parse_data_source(value: str) -> DataSource:
    """Read a data source: `hf`, `hf://OWNER/REPO[@REVISION]`, `synthetic` or a directory."""
    text = value.strip()
    if text == "hf":
        return HubSource()
    if text == "synthetic":
        return SyntheticSource()
    if text.startswith("hf://"):
        match = _HUB_URI.match(text)
        if match is None:
            raise ValueError(
                f"data source {value!r}: expected hf://OWNER/REPO or hf://OWNER/REPO@REVISION"
            )
        return HubSource(match["repo"], match["rev"] or HUB_DEFAULT_REVISION)
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"data source {value!r} is not 'hf', 'hf://OWNER/REPO@REVISION', 'synthetic' "
            "nor an existing directory"
        )
    return LocalSource(path)


class Settings(BaseSettings):
    """Infrastructure settings, read from `RAKUTEN_*` environment variables and `.env`."""

    model_config = SettingsConfigDict(
        env_prefix="RAKUTEN_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    data_root: Path = Field(Path("data"), description="Root of data/raw, data/processed, ...")
    data_source: str = Field("hf", description="hf | hf://OWNER/REPO@REVISION | DIR | synthetic")
    params_file: Path = Field(Path("params.yaml"), description="ML parameters, one block per stage")
    mlflow_tracking_uri: str = Field("sqlite:///mlruns/mlflow.db", description="MLflow backend")
    database_url: str = Field("sqlite:///data/predictions.db", description="Predictions store")
    pushgateway_url: str | None = Field(None, description="Prometheus Pushgateway; unset: no push")
    log_level: str = Field("INFO", description="Logging level of the CLI")

    @field_validator("data_source")
    @classmethod
    def _check_data_source(cls, value: str) -> str:
        parse_data_source(value)
        return value

    @property
    def source(self) -> DataSource:
        """The data source, parsed."""
        return parse_data_source(self.data_source)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once on first use (never at import)."""
    return Settings()


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(_Block):
    """How `synthetic` data is made when it is the data source."""

    rows: int = Field(2000, gt=0)
    test_rows: int = Field(500, ge=0)
    images: bool = True
    image_size: int = Field(500, ge=8)
    seed: int = 0


class MakeDatasetParams(_Block):
    """How `make_dataset` cleans the text and splits the labelled rows (src/data/split.py)."""

    test_fraction: float = Field(0.15, gt=0, lt=1)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    split_salt: str = Field("rakuten-split-v1", min_length=1)
    lowercase: bool = True

    @model_validator(mode="after")
    def _check_fractions(self) -> MakeDatasetParams:
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("test_fraction + val_fraction must leave rows to train on (< 1)")
        return self


class TrainParams(_Block):
    """Which branches `rakuten train` fits (names from src/models/branch.py), and the seed."""

    branches: tuple[str, ...] = ("text_tfidf", "text_cnn", "image_cnn")
    seed: int = 0


class FusionParams(_Block):
    """Late fusion of the branches' probabilities, weights fitted on the validation split."""

    weight_step: float = Field(0.05, gt=0, le=0.5)  # grid step of the weight search


class Params(_Block):
    """All ML parameters: one block per pipeline stage, as in params.yaml."""

    synthetic: SyntheticParams = SyntheticParams()
    make_dataset: MakeDatasetParams = MakeDatasetParams()
    train: TrainParams = TrainParams()
    fusion: FusionParams = FusionParams()


def load_params(path: Path | None = None) -> Params:
    """Read and validate params.yaml (the settings' `params_file` unless a path is given)."""
    path = path or get_settings().params_file
    if not path.is_file():
        raise RakutenError(f"ML parameters file {path} not found (set RAKUTEN_PARAMS_FILE)")
    raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Params.model_validate(raw or {})
