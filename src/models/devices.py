"""Where a neural branch trains: the devices Keras sees, the GPU requirement, data parallelism.

At the start of a training, `placement` logs the Keras backend and the devices it sees, stops
with `GpuRequiredError` when the GPU worker (`RAKUTEN_REQUIRE_GPU=true`) finds no GPU, and
chooses how to use several GPUs: Keras's own `keras.distribution.DataParallel` under JAX (its
distribution API supports JAX only), `tf.distribute.MirroredStrategy` under TensorFlow (what
Keras 3 documents for multi-GPU training with that backend: build, compile and fit under the
strategy's scope). Under torch, Keras 3 offers data parallelism only across processes
(torchrun and DistributedDataParallel), which one Airflow task does not start, so a torch
training uses one GPU and says so; so does the text branch under TensorFlow (its Embedding's
sparse gradients, see `choose_strategy`). `batch_size` in params.yaml is per device: with N
replicas, each step takes N times as many examples, one slice per device.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Literal

import keras
import numpy as np

from src.config import get_settings
from src.errors import RakutenError

logger = logging.getLogger(__name__)

Strategy = Literal["single", "data_parallel", "mirrored"]
GPU_PREFIXES: Final = ("gpu", "cuda")


class GpuRequiredError(RakutenError):
    """A GPU is required (RAKUTEN_REQUIRE_GPU) and the Keras backend sees none."""


def choose_strategy(backend: str, gpus: int, sparse_gradients: bool = False) -> Strategy:
    """How to train on `gpus` GPUs under a Keras backend: one device, or data-parallel.

    `sparse_gradients`: the model has an Embedding, whose gradients tf.distribute's all-reduce
    under Keras 3 does not sum across replicas (a collective shape mismatch), so such a model
    trains on one device under TensorFlow.
    """
    if gpus <= 1:
        return "single"
    if backend == "jax":
        return "data_parallel"
    if backend == "tensorflow" and not sparse_gradients:
        return "mirrored"
    return "single"  # torch: multi-GPU needs one process per GPU (see the module docstring)


def replicas(strategy: Strategy, gpus: int) -> int:
    """How many model replicas a strategy trains on `gpus` GPUs (1 unless data-parallel)."""
    return gpus if strategy != "single" else 1


def visible_devices() -> list[str]:
    """The devices the Keras backend computes on, as `gpu:0`, `gpu:1`... or `cpu:0`."""
    if keras.backend.backend() == "torch":
        torch = importlib.import_module("torch")
        count = int(torch.cuda.device_count())
        return [f"gpu:{i}" for i in range(count)] if count else ["cpu:0"]
    devices: list[str] = keras.distribution.list_devices()
    return devices


def training_devices(devices: list[str]) -> list[str]:
    """The devices a training uses: every GPU, else the first device (the CPU)."""
    gpus = [device for device in devices if device.lower().startswith(GPU_PREFIXES)]
    return gpus or devices[:1]


@dataclass(frozen=True)
class Placement:
    """Where and how one training runs."""

    backend: str
    devices: tuple[str, ...]  # the devices it trains on
    gpu: bool  # whether they are GPUs
    strategy: Strategy
    replicas: int
    batch_size: int  # examples per step over all replicas

    def describe(self) -> str:
        """A log line's account of the placement."""
        if self.strategy == "single":
            how = f"one device ({self.devices[0]})"
        else:
            how = f"{self.strategy} over {self.replicas} devices"
        return f"{how}, {self.batch_size} examples per step"


def ensure_gpu(branch: str, require_gpu: bool | None = None) -> list[str]:
    """The devices Keras sees, logged with the backend; GpuRequiredError if a GPU is required
    (`require_gpu`, default: the RAKUTEN_REQUIRE_GPU setting) and none is visible."""
    required = get_settings().require_gpu if require_gpu is None else require_gpu
    backend = keras.backend.backend()
    seen = visible_devices()
    logger.info("%s: Keras backend %s sees %s", branch, backend, ", ".join(seen))
    if required and not any(device.lower().startswith(GPU_PREFIXES) for device in seen):
        raise GpuRequiredError(
            f"{branch}: RAKUTEN_REQUIRE_GPU is set but the Keras backend {backend} sees no GPU "
            f"(only {', '.join(seen)}); not training on the CPU. Check the worker's GPU "
            "reservation and its CUDA libraries (the image built with the `cuda` extra)"
        )
    return seen


def placement(
    branch: str,
    per_device_batch: int,
    require_gpu: bool | None = None,
    sparse_gradients: bool = False,
) -> Placement:
    """Log what Keras sees and choose where `branch` trains; stop if a GPU is required but absent.

    Called first thing in a neural branch's `fit`, before any data is read.
    """
    backend = keras.backend.backend()
    devices = training_devices(ensure_gpu(branch, require_gpu))
    gpu = devices[0].lower().startswith(GPU_PREFIXES)
    strategy = choose_strategy(backend, len(devices) if gpu else 0, sparse_gradients)
    if gpu and len(devices) > 1 and strategy == "single":
        logger.warning(
            "%s: %d GPUs visible but this model trains data-parallel under %s only on one of "
            "them: %s",
            branch,
            len(devices),
            backend,
            devices[0],
        )
    count = replicas(strategy, len(devices))
    chosen = Placement(
        backend=backend,
        devices=tuple(devices[:count]),
        gpu=gpu,
        strategy=strategy,
        replicas=count,
        batch_size=per_device_batch * count,
    )
    logger.info("%s: training on %s", branch, chosen.describe())
    return chosen


def even_batches(
    where: Placement, x: np.ndarray, y: np.ndarray, sample_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays for `fit`, padded with rows of weight 0 to whole batches when data-parallel (each
    device takes an equal slice of every batch, the last one included); unchanged otherwise."""
    padding = (-len(x)) % where.batch_size if where.replicas > 1 else 0
    if not padding:
        return x, y, sample_weights
    return (
        np.concatenate([x, np.zeros((padding, *x.shape[1:]), dtype=x.dtype)]),
        np.concatenate([y, np.repeat(y[:1], padding)]),
        np.concatenate([sample_weights, np.zeros(padding, dtype=sample_weights.dtype)]),
    )


@contextmanager
def distributed(chosen: Placement) -> Iterator[None]:
    """Build, compile and fit under this context: the placement's strategy is in force."""
    if chosen.strategy == "data_parallel":
        with keras.distribution.DataParallel(devices=list(chosen.devices)).scope():
            yield
    elif chosen.strategy == "mirrored":
        tf = importlib.import_module("tensorflow")
        names = [f"/{device}" for device in chosen.devices]
        with tf.distribute.MirroredStrategy(devices=names).scope():
            yield
    else:
        yield
