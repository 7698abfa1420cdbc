"""Where a neural branch trains: devices logged, a required GPU enforced, data parallelism."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.models import devices
from src.models.devices import (
    GpuRequiredError,
    Placement,
    choose_strategy,
    even_batches,
    placement,
    training_devices,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("backend", "gpus", "expected"),
    [
        ("jax", 0, "single"),
        ("jax", 1, "single"),
        ("jax", 2, "data_parallel"),
        ("jax", 8, "data_parallel"),
        ("tensorflow", 1, "single"),
        ("tensorflow", 4, "mirrored"),
        ("torch", 1, "single"),
        ("torch", 4, "single"),
    ],
)
def test_the_strategy_follows_the_backend_and_the_gpu_count(
    backend: str, gpus: int, expected: str
) -> None:
    assert choose_strategy(backend, gpus) == expected


def test_an_embedding_model_is_not_mirrored_under_tensorflow() -> None:
    assert choose_strategy("tensorflow", 4, sparse_gradients=True) == "single"
    assert choose_strategy("jax", 4, sparse_gradients=True) == "data_parallel"


def test_a_training_uses_every_gpu_else_one_cpu() -> None:
    assert training_devices(["gpu:0", "gpu:1"]) == ["gpu:0", "gpu:1"]
    assert training_devices(["cpu:0", "cpu:1"]) == ["cpu:0"]


def test_placement_scales_the_batch_per_device_and_logs_what_keras_sees(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(devices, "visible_devices", lambda: ["gpu:0", "gpu:1", "gpu:2"])
    monkeypatch.setattr(devices.keras.backend, "backend", lambda: "jax")
    with caplog.at_level(logging.INFO, logger="src.models.devices"):
        chosen = placement("image_cnn", 64, require_gpu=True)
    assert chosen == Placement("jax", ("gpu:0", "gpu:1", "gpu:2"), True, "data_parallel", 3, 192)
    assert "image_cnn: Keras backend jax sees gpu:0, gpu:1, gpu:2" in caplog.text
    assert "data_parallel over 3 devices, 192 examples per step" in caplog.text


def test_torch_on_several_gpus_trains_on_one_and_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(devices, "visible_devices", lambda: ["gpu:0", "gpu:1"])
    monkeypatch.setattr(devices.keras.backend, "backend", lambda: "torch")
    chosen = placement("text_cnn", 32, require_gpu=False)
    assert (chosen.devices, chosen.replicas, chosen.batch_size) == (("gpu:0",), 1, 32)
    assert "2 GPUs visible" in caplog.text


def test_on_the_cpu_it_trains_single_and_stops_only_if_a_gpu_is_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chosen = placement("image_cnn", 16, require_gpu=False)  # this machine has no GPU
    assert (chosen.gpu, chosen.strategy, chosen.batch_size) == (False, "single", 16)
    with pytest.raises(GpuRequiredError, match="RAKUTEN_REQUIRE_GPU is set but the Keras"):
        placement("image_cnn", 16, require_gpu=True)
    monkeypatch.setenv("RAKUTEN_REQUIRE_GPU", "true")
    devices.get_settings.cache_clear()
    try:
        with pytest.raises(GpuRequiredError):
            placement("image_cnn", 16)  # the setting, by default
    finally:
        devices.get_settings.cache_clear()


def test_even_batches_pad_with_weightless_rows_only_when_data_parallel() -> None:
    x, y, w = np.ones((10, 3)), np.arange(10), np.full(10, 2.0)
    single = Placement("jax", ("gpu:0",), True, "single", 1, 4)
    assert even_batches(single, x, y, w)[0] is x
    parallel = Placement("jax", ("gpu:0", "gpu:1"), True, "data_parallel", 2, 4)
    px, py, pw = even_batches(parallel, x, y, w)
    assert len(px) == len(py) == len(pw) == 12
    assert not px[10:].any() and (pw[10:] == 0).all() and (pw[:10] == 2).all()


def test_a_gpu_worker_without_its_gpu_stops_before_reading_any_data(tmp_path: Path) -> None:
    """`rakuten train` of a neural branch: one error line, before the (absent) dataset is read."""
    env = {**os.environ, "RAKUTEN_REQUIRE_GPU": "true", "RAKUTEN_DATA_ROOT": str(tmp_path)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rakuten"), "train", "--branch", "image_cnn"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: image_cnn: RAKUTEN_REQUIRE_GPU is set but the Keras backend")
    assert "sees no GPU" in last
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_both_neural_branches_train_data_parallel_over_two_devices(
    backend: str, tmp_path: Path
) -> None:
    """Two CPU devices stand in for two GPUs: the backend's strategy trains and predicts."""
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_data_parallel.py")), str(tmp_path / "raw")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {  # the text branch's Embedding is not mirrored (devices.choose_strategy)
        "jax": {"image_cnn": "data_parallel", "text_cnn": "data_parallel"},
        "tensorflow": {"image_cnn": "mirrored", "text_cnn": "single"},
    }[backend]
    for name, strategy in expected.items():
        assert summaries[name]["strategy"] == strategy
        replicas = 1 if strategy == "single" else 2
        assert summaries[name]["devices"] == ["cpu:0", "cpu:1"][:replicas]
        assert summaries[name]["epochs"] == 2
    assert summaries["predicted"] == {"image_cnn": 16, "text_cnn": 16}
