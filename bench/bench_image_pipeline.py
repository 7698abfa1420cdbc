"""Image input pipeline: photos/s decoded and resized, against plain PIL on the same files.

Writes a few thousand synthetic 500x500 JPEGs, reads them all once (so every run finds them in the
page cache), then times, at each input size: plain PIL `Image.open().convert("RGB").resize()` in
one thread; the branch's decode (`Image.draft` reduced decode) in one thread; the branch's
`ImageBatches` decoded ahead in 1 and N threads, without and with augmentation; and the same
batches through Keras's own enqueuer, as `fit` reads them; then `ImageBatches` reading the opt-in
photo cache (src/models/photo_cache.py, written once beforehand, its time reported apart). With
`--threads 1 2 4 8 16` the threaded readers run at each count (bench_gpu.sh does that on a
16-core GPU host); by default at 1 and one per core. Each run also reports the process's
CPU time over wall time (near the thread count where the threads decode in parallel; lower where
other jobs hold the cores) and the growth of its resident memory while it ran (sampled every
10 ms): batches stream, nothing piles up. Last, the network's side: photos/s of training steps
(`train_on_batch` on decoded batches, so decoding is left out) for params.yaml's demo image
branch and for the full-size one of its `full data:` comments.
Usage: uv run python bench/bench_image_pipeline.py [--photos 3000] [--sizes 64 128 224]
       [--threads 1 2 4 8 16] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import psutil
from _measure import RESULTS, write_result
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
from PIL import Image

from src.config import ImageCnnParams, load_params
from src.data.synth import synthesize
from src.features.images import decode_image
from src.models.image_batches import ImageBatches, prefetched
from src.models.image_cnn import SMALL, build_model
from src.models.photo_cache import PhotoCache, open_cache

BATCH = 64


def _plain_pil(paths: list[str], size: int) -> int:
    """Decode and resize every photo with PIL's defaults, one after the other."""
    done = 0
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((size, size)))
        done += 1
    return done


def _draft_decode(paths: list[str], size: int) -> int:
    """The branch's decode of every photo, one after the other."""
    return sum(decode_image(path, size) is not None for path in paths)


def _pipeline(
    paths: list[str], size: int, workers: int, augment: bool, cache: PhotoCache | None = None
) -> int:
    """Every batch of ImageBatches, decoded ahead (or read from `cache`) in `workers` threads."""
    batches = _batches(paths, size, workers, augment, cache)
    return sum(len(rows) for _, rows in prefetched(batches))


def _keras_enqueuer(paths: list[str], size: int, workers: int, augment: bool) -> int:
    """Every batch through Keras's PyDataset adapter and its thread enqueuer (what fit uses)."""
    adapter = PyDatasetAdapter(_batches(paths, size, workers, augment))
    adapter.on_epoch_begin()
    done = sum(len(batch[0]) for batch in adapter.get_numpy_iterator())
    adapter.on_epoch_end()
    return done


def _batches(
    paths: list[str], size: int, workers: int, augment: bool, cache: PhotoCache | None = None
) -> ImageBatches:
    labels = np.zeros(len(paths), dtype=np.int64)
    return ImageBatches(
        paths, image_size=size, batch_size=BATCH, labels=labels, augment=augment,
        workers=workers, cache=cache,
    )  # fmt: skip


def _timed(run: Callable[[], int]) -> tuple[float, float, int, float]:
    """Seconds, CPU seconds of the process, photos done, and the peak growth of resident memory
    (MiB) during `run`."""
    process = psutil.Process()
    base = peak = process.memory_info().rss
    running = True

    def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start, cpu = time.perf_counter(), process.cpu_times()
    try:
        done = run()
    finally:
        seconds = time.perf_counter() - start
        running = False
        sampler.join()
    used = process.cpu_times()
    cpu_seconds = used.user + used.system - cpu.user - cpu.system
    return seconds, cpu_seconds, done, (peak - base) / 1024**2


def _threads(paths: list[str], workers: int, size: int) -> int:
    return _pipeline(paths, size, workers, False)


caches: dict[int, PhotoCache] = {}  # size -> the cache written by the run before its readers


def _write_cache(folder: Path, paths: list[str], size: int, workers: int) -> int:
    """Write the photo cache of `paths` at `size` (the readers after it use it)."""
    caches[size] = open_cache(folder, paths, size, workers)
    return int(caches[size].ok.sum())


def _training_steps(params: ImageCnnParams, seconds: float) -> tuple[float, float]:
    """Photos/s of training steps of the branch's network, and the process's CPU s / wall s."""
    import keras

    model, _ = build_model(params, SMALL, None)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    size, batch = params.image_size, params.batch_size
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 27, batch)
    model.train_on_batch(x, y)  # the first step builds the graph: not timed
    start, cpu, done = time.perf_counter(), psutil.Process().cpu_times(), 0
    while time.perf_counter() - start < seconds:
        model.train_on_batch(x, y)
        done += batch
    wall = time.perf_counter() - start
    used = psutil.Process().cpu_times()
    keras.backend.clear_session()
    return done / wall, (used.user + used.system - cpu.user - cpu.system) / wall


FULL_SIZE = {"image_size": 128, "conv_filters": (32, 64, 128, 256, 512), "batch_size": 64}


def _photos(folder: Path, count: int) -> Iterator[str]:
    for path in sorted(folder.glob("*.jpg")):
        if decode_image(path, 8) is not None:  # the generator breaks a few on purpose
            yield str(path)
            count -= 1
            if not count:
                return


def main() -> None:
    """Time every reader at every size; print a table, write bench/results/image_pipeline.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--threads", type=int, nargs="+", help="default: 1 and one per core")
    parser.add_argument("--out", type=Path, help="folder of the JSON (default: bench/results)")
    parser.add_argument("--train-seconds", type=float, default=20, help="Per network; 0: none.")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    threads = sorted(set(args.threads or [1, cores]))
    workers = threads[-1]
    work = Path(tempfile.mkdtemp(prefix="bench-images-"))
    try:
        synthesize(work / "raw", rows=args.photos + 50, test_rows=1, image_size=500, seed=0)
        paths = list(_photos(work / "raw" / "images" / "image_train", args.photos))
        for path in paths:  # into the page cache, so that no run pays the disk for the others
            Path(path).read_bytes()
        readers: list[tuple[str, Callable[[int], int]]] = [
            ("plain PIL open+convert+resize, 1 thread", lambda s: _plain_pil(paths, s)),
            ("branch decode (Image.draft), 1 thread", lambda s: _draft_decode(paths, s)),
            *((f"ImageBatches, threads: {n}", partial(_threads, paths, n)) for n in threads),
            (
                f"ImageBatches + augmentation, {workers} threads",
                lambda s: _pipeline(paths, s, workers, True),
            ),
            (
                f"Keras enqueuer (as fit), + augmentation, {workers} threads",
                lambda s: _keras_enqueuer(paths, s, workers, True),
            ),
            (
                f"photo cache: writing it, {workers} threads",
                lambda s: _write_cache(work / "cache", paths, s, workers),
            ),
            (
                f"ImageBatches from the photo cache, {workers} threads",
                lambda s: _pipeline(paths, s, workers, False, caches[s]),
            ),
            (
                f"ImageBatches from the photo cache + augmentation, {workers} threads",
                lambda s: _pipeline(paths, s, workers, True, caches[s]),
            ),
        ]
        lines = [
            "| size | reader | photos/s | x plain PIL | CPU s / wall s | peak RSS growth MiB |",
            "|---|---|---|---|---|---|",
        ]
        runs = []
        for size in args.sizes:
            plain = 0.0
            for label, reader in readers:
                seconds, cpu, done, memory = _timed(partial(reader, size))
                rate = done / seconds
                plain = plain or rate
                lines.append(f"| {size} | {label} | {rate:.0f} | {rate / plain:.2f} | "
                             f"{cpu / seconds:.2f} | {memory:.0f} |")  # fmt: skip
                runs.append(
                    {"size": size, "reader": label, "photos": done, "seconds": seconds,
                     "cpu_seconds": cpu, "photos_per_s": rate, "rss_growth_mib": memory}
                )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    demo = load_params().image_cnn
    networks = {"demo (params.yaml)": demo, "full size": demo.model_copy(update=FULL_SIZE)}
    training = []
    if args.train_seconds:
        lines += ["", "| network | size | filters | batch | train photos/s | CPU s / wall s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for label, params in networks.items():
            rate, cpu = _training_steps(params, args.train_seconds)
            filters = list(params.conv_filters)
            lines.append(f"| {label} | {params.image_size} | {filters} | {params.batch_size} | "
                         f"{rate:.0f} | {cpu:.2f} |")  # fmt: skip
            training.append(
                {"network": label, "image_size": params.image_size, "conv_filters": filters,
                 "batch_size": params.batch_size, "photos_per_s": rate, "cpu_per_wall": cpu}
            )  # fmt: skip
    print(f"{len(paths)} synthetic 500x500 JPEGs, batches of {BATCH}, {cores} CPUs")
    print("\n".join(lines))
    payload = {"photos": len(paths), "cpus": cores, "runs": runs, "training": training}
    print(f"written to {write_result('image_pipeline', payload, args.out or RESULTS)}")


if __name__ == "__main__":
    main()
