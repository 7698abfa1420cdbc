"""Configuration: infrastructure settings from the environment, ML parameters from params.yaml.

Two kinds of configuration are kept apart on purpose (DESIGN §6.3): where things live and how to
reach them (`Settings`, from `RAKUTEN_*` variables and `.env`) and how the ML steps behave
(`Params`, one block per pipeline stage in `params.yaml`, as DVC reads them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from src.errors import RakutenError

logger = logging.getLogger(__name__)

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

_ROLE_NAME = r"^[a-z_][a-z0-9_]{0,62}$"  # a plain PostgreSQL role name
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


def at_revision(source: DataSource, revision: str | None) -> DataSource:
    """The source at a hub `revision`; a folder or synthetic source has none: warned, ignored.

    Ignored rather than refused so that one revision field (the Airflow trigger form's) works
    whatever source the settings name.
    """
    if not revision:
        return source
    if isinstance(source, HubSource):
        return replace(source, revision=revision)
    where = f"the folder {source.path}" if isinstance(source, LocalSource) else "synthetic data"
    logger.warning(
        "revision %r ignored: only a hub source (hf, hf://OWNER/REPO) has revisions, not %s",
        revision,
        where,
    )
    return source


class Settings(BaseSettings):
    """Infrastructure settings, read from `RAKUTEN_*` environment variables and `.env`."""

    model_config = SettingsConfigDict(
        env_prefix="RAKUTEN_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    data_root: Path = Field(Path("data"), description="Root of data/raw, data/processed, ...")
    models_dir: Path = Field(Path("models"), description="Trained branches and packaged model")
    reports_dir: Path = Field(Path("reports"), description="Evaluation metrics and plots")
    incoming_dir: Path | None = Field(
        None, description="New listings to score (X layout CSVs); unset: DATA_ROOT/incoming"
    )
    # Synthetic by default, so that a fresh clone runs offline; deployments set hf.
    data_source: str = Field(
        "synthetic", description="hf | hf://OWNER/REPO@REVISION | DIR | synthetic"
    )
    params_file: Path = Field(Path("params.yaml"), description="ML parameters, one block per stage")
    mlflow_tracking_uri: str = Field("sqlite:///mlruns/mlflow.db", description="MLflow backend")
    database_url: str = Field("sqlite:///data/predictions.db", description="Predictions store")
    database_admin_url: str | None = Field(
        None, description="Schema owner, for db upgrade and grant; unset: database_url"
    )
    database_app_role: str = Field(
        "rakuten_app", pattern=_ROLE_NAME, description="Run-time role: records and reads"
    )
    database_app_password: SecretStr | None = Field(None, description="Set on the app role")
    database_analyst_role: str = Field(
        "rakuten_analyst", pattern=_ROLE_NAME, description="Read-only role for analysts"
    )
    database_analyst_password: SecretStr | None = Field(None, description="Set on analyst role")
    pushgateway_url: str | None = Field(None, description="Prometheus Pushgateway; unset: no push")
    api_host: str = Field("127.0.0.1", description="Address the prediction API listens on")
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the prediction API")
    api_model_alias: str = Field("champion", min_length=1, description="Alias the API serves")
    api_max_products: int = Field(64, ge=1, description="Most products in one /predict request")
    api_max_request_mib: float = Field(
        16.0, gt=0, description="Largest /predict body (JSON, photos in base64), in MiB"
    )
    api_batch_max_listings: int = Field(
        64, ge=1, description="Most listings the API scores in one model call (micro-batching)"
    )
    api_batch_max_wait_ms: float = Field(
        5.0, ge=0, description="Longest wait for more listings to batch while requests pour in"
    )
    api_max_queued_listings: int = Field(
        256,
        ge=1,
        description="Listings waiting to be scored above which /predict answers 503 (Retry-After)",
    )
    api_refresh_seconds: float = Field(
        60.0, gt=0, description="How often the API checks whether its alias moved"
    )
    api_auth: Literal["on", "off"] = Field(
        "on", description="API keys required (off: anyone may call anything; local demos only)"
    )
    api_key_secret: SecretStr | None = Field(
        None, description="Server secret of the API keys' HMAC and of the pages' session cookie"
    )
    api_key_cache_seconds: float = Field(
        30.0, ge=0, description="How long the API trusts a checked key before reading it again"
    )
    api_max_upload_mib: float = Field(
        512.0, gt=0, description="Largest POST /datasets body (CSVs and photo zip), in MiB"
    )
    airflow_api_url: str = Field(
        "http://127.0.0.1:8080", description="Airflow's REST API, for POST /training-runs"
    )
    airflow_username: str = Field("admin", description="The Airflow user that triggers training")
    airflow_password: SecretStr | None = Field(None, description="That Airflow user's password")
    log_level: str = Field("INFO", description="Logging level of the CLI")
    require_gpu: bool = Field(
        False, description="Neural branches stop instead of training without a GPU (GPU worker)"
    )
    photo_cache_dir: Path | None = Field(
        None, description="Cache of resized photos for the image branch; unset: no cache"
    )

    @field_validator("data_source")
    @classmethod
    def _check_data_source(cls, value: str) -> str:
        parse_data_source(value)
        return value

    @property
    def incoming(self) -> Path:
        """The folder of new listings that batch prediction scores beside the test listings."""
        return self.incoming_dir or self.data_root / "incoming"

    @property
    def source(self) -> DataSource:
        """The data source, parsed."""
        return parse_data_source(self.data_source)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once on first use (never at import)."""
    return Settings()


# How make_dataset groups listings before splitting them (src/data/split.py).
SplitGrouping = Literal["title", "title_description", "productid"]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(_Block):
    """How `synthetic` data is made when it is the data source."""

    rows: int = Field(2000, gt=0)
    test_rows: int = Field(500, ge=0)
    images: bool = True
    image_size: int = Field(500, ge=8)
    copies: float = Field(0.0, ge=0, lt=1)  # share of rows that copy an earlier listing's text
    seed: int = 0


class MakeDatasetParams(_Block):
    """How `make_dataset` cleans the text and splits the labelled rows (src/data/split.py)."""

    test_fraction: float = Field(0.15, gt=0, lt=1)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    split_salt: str = Field("rakuten-split-v1", min_length=1)
    # Listings split together: same normalised title (copies), title + description, or productid.
    split_grouping: SplitGrouping = "title"
    lowercase: bool = True
    sample_rows: int | None = Field(None, gt=0)  # labelled rows kept (by productid hash); None: all

    @model_validator(mode="after")
    def _check_fractions(self) -> MakeDatasetParams:
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("test_fraction + val_fraction must leave rows to train on (< 1)")
        return self


class TrainParams(_Block):
    """Which branches `rakuten train` fits (names from src/models/branch.py), and the seed."""

    branches: tuple[str, ...] = ("text_tfidf", "text_cnn", "image_cnn")
    # Branches fitted again on train + val with the configuration (epoch count) val chose.
    refit: tuple[str, ...] = ("text_tfidf",)
    # Branches whose held-out predictions for fusion are out-of-fold over train + val
    # (src/models/crossfit.py): one model per fold, fitted on the other folds. Each must be
    # refitted too: the out-of-fold models stand in for the refit model.
    cross_fit: tuple[str, ...] = ()
    cross_fit_folds: int = Field(5, ge=2)
    seed: int = 0

    @model_validator(mode="after")
    def _check_cross_fit(self) -> TrainParams:
        missing = [name for name in self.cross_fit if name not in self.refit]
        if missing:
            raise ValueError(f"cross-fitted branches must be refitted too (train.refit): {missing}")
        return self


class FusionParams(_Block):
    """Late fusion of the branches' held-out probabilities (src/models/fusion.py)."""

    # auto: the candidate with the lowest cross-validated log loss
    combiner: Literal["auto", "grid", "log_linear", "stacked"] = "auto"
    weight_step: float = Field(0.05, gt=0, le=0.5)  # grid step of the weight search
    folds: int = Field(5, ge=2)  # cross-validation folds of the held-out rows choosing it
    seed: int = 0


class GateParams(_Block):
    """The quality gate a challenger must pass before it may become champion."""

    min_weighted_f1: float = Field(0.4, ge=0, le=1)  # absolute floor on weighted F1
    tolerance: float = Field(0.01, ge=0, le=1)  # largest weighted-F1 drop allowed vs champion
    per_class_f1_floor: float = Field(0.3, ge=0, le=1)
    # Classes with fewer evaluation rows are not held to the floor: their F1 is mostly noise.
    per_class_min_support: int = Field(20, ge=1)
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0


class PromoteParams(_Block):
    """Who moves `champion` after a passed gate: the pipeline (auto) or a person (manual)."""

    approval: Literal["auto", "manual"] = "auto"


class DriftParams(_Block):
    """When a day's batch has drifted from the champion's reference (src/monitoring/drift.py).

    PSI thresholds apply to the PSI with its small-sample bias subtracted; the rate and
    confidence thresholds to absolute changes against the reference.
    """

    min_rows: int = Field(100, ge=1)  # a smaller batch gets the verdict "too few rows"
    psi_threshold: float = Field(0.1, gt=0)  # predicted-type distribution
    input_psi_threshold: float = Field(0.1, gt=0)  # designation / description length bins
    length_bins: int = Field(10, ge=2, le=100)  # quantile bins of the reference's lengths
    rate_change_threshold: float = Field(0.15, gt=0, le=1)  # missing description/photo, HTML
    confidence_drop_threshold: float = Field(0.1, gt=0, le=1)  # mean top probability
    min_labelled_rows: int = Field(100, ge=1)  # realised F1 on fewer labels triggers nothing
    cooldown_hours: float = Field(24.0, ge=0)  # at most one triggered retraining per window


class TextTfidfParams(_Block):
    """The TF-IDF + calibrated LinearSVC text branch (src/models/text_tfidf.py) and its search.

    The model fields are the configuration fitted when `trials` is 0 and the first one the
    Optuna search tries otherwise.
    """

    trials: int = Field(20, ge=0)  # Optuna trials scored on val weighted F1; 0: no search
    word_ngram_max: int = Field(2, ge=1, le=3)  # word n-grams of 1..this many words
    char_ngram_min: int = Field(2, ge=1)  # character n-grams (inside words) of min..max
    char_ngram_max: int = Field(5, ge=1, le=8)
    max_features: int | None = Field(100_000, gt=0)  # vocabulary size of each TF-IDF; None: all
    designation_weight: float = Field(1.0, ge=0)  # extra TF-IDF of the title alone; 0: none
    C: float = Field(0.1, gt=0)  # inverse regularisation strength of the LinearSVC
    penalty: Literal["l1", "l2"] = "l2"
    calibration_folds: int = Field(3, ge=2)  # sigmoid calibration, one LinearSVC per fold
    n_jobs: int = Field(0, ge=0)  # processes fitting the folds; 0: one per CPU core
    seed: int = 0

    @model_validator(mode="after")
    def _check_char_ngrams(self) -> TextTfidfParams:
        if self.char_ngram_min > self.char_ngram_max:
            raise ValueError("char_ngram_min must not exceed char_ngram_max")
        return self


class TextCnnParams(_Block):
    """The neural text branch (src/models/text_neural.py): word embeddings, 1-D convolutions."""

    vocab_size: int = Field(30_000, ge=3)  # ids: 0 pads, 1 is any other word, then the top words
    sequence_length: int = Field(100, ge=1)  # words per product, title first; the rest is cut
    embedding_dim: int = Field(64, ge=1)
    filters: int = Field(128, ge=1)  # convolution filters per kernel size
    kernel_sizes: tuple[int, ...] = Field((3, 5), min_length=1)  # widths in words, in parallel
    dropout: float = Field(0.3, ge=0, lt=1)
    batch_size: int = Field(128, gt=0)
    epochs: int = Field(10, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(2, ge=1)  # early stopping on the validation loss
    mixed_precision: bool = True  # float16 compute where a GPU is present; ignored on CPU
    seed: int = 0


class ImageCnnParams(_Block):
    """The image branch (src/models/image_cnn.py): backbone, photo size and training schedule."""

    backbone: Literal["small", "efficientnetb0", "mobilenetv3small"] = "small"
    weights_file: Path | None = None  # ImageNet weights (no top); None: the Keras cache
    on_missing_weights: Literal["stop", "scratch"] = "stop"
    # The demo defaults of params.yaml (a CPU); its comments give the full-data values.
    image_size: int = Field(64, ge=32)
    conv_filters: tuple[int, ...] = Field((16, 32, 64, 128), min_length=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    batch_size: int = Field(32, gt=0)
    epochs: int = Field(8, gt=0)  # from scratch, or phase 1 (head only) of a fine-tuning
    learning_rate: float = Field(1e-3, gt=0)
    fine_tune_epochs: int = Field(10, ge=0)  # phase 2: top backbone layers unfrozen
    fine_tune_layers: int = Field(40, ge=1)
    fine_tune_learning_rate: float = Field(1e-4, gt=0)
    patience: int = Field(4, ge=1)  # early stopping on the validation loss
    augment: bool = True
    mixed_precision: bool = True  # float16 compute where a GPU is present; ignored on CPU
    workers: int = Field(0, ge=0)  # threads decoding photos; 0: one per CPU core
    seed: int = 0


class Params(_Block):
    """All ML parameters: one block per pipeline stage, as in params.yaml."""

    synthetic: SyntheticParams = SyntheticParams()
    make_dataset: MakeDatasetParams = MakeDatasetParams()
    train: TrainParams = TrainParams()
    fusion: FusionParams = FusionParams()
    gate: GateParams = GateParams()
    promote: PromoteParams = PromoteParams()
    drift: DriftParams = DriftParams()
    text_tfidf: TextTfidfParams = TextTfidfParams()
    text_cnn: TextCnnParams = TextCnnParams()
    image_cnn: ImageCnnParams = ImageCnnParams()


def params_hash(params: Params) -> str:
    """sha256 of the canonical ML parameters (sorted JSON), the same for equal params."""
    canonical = json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def override_params(params: Params, assignments: Mapping[str, Any]) -> Params:
    """`params` with some values replaced, by dotted name (`text_cnn.epochs`), validated again."""
    values = params.model_dump(mode="json")
    for name, value in assignments.items():
        block, _, key = name.partition(".")
        if block not in values or not isinstance(values[block], dict) or key not in values[block]:
            raise RakutenError(f"unknown parameter {name!r}: expected BLOCK.KEY from params.yaml")
        values[block][key] = value
    try:
        return Params.model_validate(values)
    except ValueError as error:
        raise RakutenError(f"invalid parameters: {error}") from None


def load_params(path: Path | None = None) -> Params:
    """Read and validate params.yaml (the settings' `params_file` unless a path is given)."""
    path = path or get_settings().params_file
    if not path.is_file():
        raise RakutenError(f"ML parameters file {path} not found (set RAKUTEN_PARAMS_FILE)")
    raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Params.model_validate(raw or {})
