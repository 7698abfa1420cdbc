"""The image branch training on a GPU: photos/s per epoch, GPU utilisation, input wait.

Run by bench/bench_gpu.sh, one process per Keras backend (KERAS_BACKEND is read once, at import).
For each network it builds the branch's model (`image_cnn.build_model`, from scratch), places it
with `devices.placement` (every GPU, the branch's strategy), and fits it on the synthetic photos
streamed by the branch's `ImageBatches` (augmented, shuffled, decoded in one thread per core),
in mixed precision where there is a GPU. Per epoch it reports photos/s, the share of the epoch
spent waiting for input (from the end of one step to the start of the next, and before the
first: the fit loop's wait on the batch queue; a synchronous callback makes each step's end the
end of its computation), and the GPU utilisation that `nvidia-smi` sampled every 200 ms during
that epoch. Epoch 1 includes compiling the step (XLA under JAX).
Usage: python bench/bench_gpu.py --raw DIR --out DIR [--image-size 224] [--epochs 2] ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from src.config import ImageCnnParams
from src.data.layout import TRAIN_IMAGE_DIR, X_TRAIN_FILE, Y_TRAIN_FILE
from src.models import devices
from src.models.branch import labels_index
from src.models.data import photo_paths
from src.models.image_batches import ImageBatches
from src.models.image_cnn import build_model, dtype_policy
from src.models.photo_cache import open_cache


class GpuSampler:
    """`nvidia-smi` utilisation of every GPU, sampled every 200 ms in the background."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (time, mean utilisation % over GPUs)
        self.process: subprocess.Popen[str] | None = None
        if shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        gpus = max(1, len(devices.visible_devices()))
        values: list[float] = []
        for line in self.process.stdout:
            values.append(float(line.strip() or 0))
            if len(values) == gpus:
                self.samples.append((time.perf_counter(), sum(values) / gpus))
                values = []

    def mean(self, start: float, end: float) -> float | None:
        """Mean utilisation between two instants (None without nvidia-smi or samples)."""
        inside = [value for when, value in self.samples if start <= when <= end]
        return round(sum(inside) / len(inside), 1) if inside else None

    def stop(self) -> None:
        """End the sampling process."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait()


class EpochTimer(keras.callbacks.Callback):  # type: ignore[misc]
    """Each epoch's wall time and time spent waiting for the next batch."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.start = self.last_end = time.perf_counter()
        self.wait = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.wait += time.perf_counter() - self.last_end

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.last_end = time.perf_counter()  # logs are synced to the host before this is called

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        end = time.perf_counter()
        self.epochs.append({"start": self.start, "end": end, "wait": self.wait})


def training_photos(raw: Path, count: int) -> tuple[list[str | None], np.ndarray]:
    """The first `count` synthetic train photos and their class indexes."""
    listings = pd.read_csv(raw / X_TRAIN_FILE, index_col=0).head(count)
    codes = pd.read_csv(raw / Y_TRAIN_FILE, index_col=0)["prdtypecode"].loc[listings.index]
    return photo_paths(listings, raw / TRAIN_IMAGE_DIR), labels_index(codes)


def run(args: argparse.Namespace, network: str, sampler: GpuSampler) -> dict[str, Any]:
    """Train one network for the epochs asked; its per-epoch figures."""
    images, labels = training_photos(args.raw, args.photos)
    params = ImageCnnParams(
        backbone=network, image_size=args.image_size, batch_size=args.batch_size,
        epochs=args.epochs, workers=args.workers,
    )  # fmt: skip
    where = devices.placement(f"bench {network}", params.batch_size)
    cache = None
    if args.cache_dir is not None:
        cache = open_cache(args.cache_dir, images, params.image_size, params.workers)
    batches = ImageBatches(
        images, image_size=params.image_size, batch_size=where.batch_size, labels=labels,
        augment=True, shuffle=True, workers=params.workers, cache=cache, replicas=where.replicas,
    )  # fmt: skip
    mixed = where.gpu
    timer = EpochTimer()
    keras.utils.set_random_seed(0)
    with devices.distributed(where):
        with dtype_policy("mixed_float16" if mixed else "float32"):
            model, _ = build_model(params, network, None)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(batches, epochs=params.epochs, callbacks=[timer], verbose=0)
    photos = len(batches.rows)
    epochs = [
        {
            "epoch": number + 1,
            "seconds": round(epoch["end"] - epoch["start"], 2),
            "photos_per_s": round(photos / (epoch["end"] - epoch["start"]), 1),
            "input_wait_share": round(epoch["wait"] / (epoch["end"] - epoch["start"]), 3),
            "gpu_utilisation_pct": sampler.mean(epoch["start"], epoch["end"]),
        }
        for number, epoch in enumerate(timer.epochs)
    ]
    return {
        "backend": keras.backend.backend(), "network": network, "photos": photos,
        "image_size": params.image_size, "batch_size": where.batch_size,
        "devices": list(where.devices), "strategy": where.strategy, "mixed_precision": mixed,
        "decode_threads": params.workers, "photo_cache": cache is not None, "epochs": epochs,
    }  # fmt: skip


def main() -> None:
    """Train every network asked under this process's backend; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, required=True, help="`rakuten data synth` output")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--photos", type=int, default=20_000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128, help="per device")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--networks", nargs="+", default=["small", "efficientnetb0"])
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--cache-dir", type=Path, help="read the photos from a photo cache")
    args = parser.parse_args()
    sampler = GpuSampler()
    try:
        runs = [run(args, network, sampler) for network in args.networks]
    finally:
        sampler.stop()
    label = keras.backend.backend() + ("-cache" if args.cache_dir else "")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_{label}.json"
    path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print("| backend | network | epoch | photos/s | input wait | GPU util % | devices |")
    print("|---|---|---|---|---|---|---|")
    for result in runs:
        for epoch in result["epochs"]:
            print(f"| {label} | {result['network']} | {epoch['epoch']} | "
                  f"{epoch['photos_per_s']:.0f} | {epoch['input_wait_share']:.1%} | "
                  f"{epoch['gpu_utilisation_pct']} | {','.join(result['devices'])} |")  # fmt: skip
    print(f"written to {path}")


if __name__ == "__main__":
    main()
