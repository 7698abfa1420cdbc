"""bench/bench_gpu.sh: its offline wheels match uv.lock, and it runs end to end on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "bench" / "gpu-requirements.txt"
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
# The GPU host: CPython 3.12 on Linux x86_64, with these packages (and what they depend on).
HOST_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
HOST_HAS = ("numpy", "pandas", "pillow", "scikit-learn", "jax")
TORCH_DEPENDENCIES = {"typing-extensions"}  # torch is not in uv.lock
# What the image branch, `rakuten data synth` and the benches import beyond the host's packages.
NEEDED = ("keras", "pydantic", "pydantic-settings", "pyyaml", "typer", "tqdm", "ftfy", "psutil")
BUILD_BACKEND = {"hatchling", "pathspec", "pluggy", "tomlkit", "trove-classifiers"}


def _pins() -> dict[str, str]:
    lines = [line.strip() for line in REQUIREMENTS.read_text().splitlines()]
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    return {canonicalize_name(name): version for name, version in pins.items()}


def _closure(roots: tuple[str, ...]) -> dict[str, set[str]]:
    """Every package the roots need on the host, by uv.lock, with its locked versions."""
    found: dict[str, set[str]] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found[name] = set()
        for package in (p for p in LOCK["package"] if p["name"] == name):
            found[name].add(package["version"])
            for dependency in package.get("dependencies", []):
                marker = dependency.get("marker")
                if marker is None or Marker(marker).evaluate(HOST_ENV):
                    pending.append(dependency["name"])
    return found


def test_the_wheels_are_the_locked_closure_of_what_the_bench_imports_less_the_hosts() -> None:
    host = set(_closure(HOST_HAS)) | TORCH_DEPENDENCIES
    needed = {name: versions for name, versions in _closure(NEEDED).items() if name not in host}
    pins = _pins()
    assert set(pins) - BUILD_BACKEND == set(needed)
    for name, versions in needed.items():
        assert pins[name] in versions, name
    assert "packaging" in pins  # hatchling's own dependency, shared with keras


@pytest.mark.slow
def test_every_pinned_wheel_is_there_for_cpython_312_on_linux(tmp_path: Path) -> None:
    """`make gpu-wheels` (into a temporary folder unless bench/wheels is filled) gets them all."""
    folder = ROOT / "bench" / "wheels"
    if not folder.is_dir():
        folder = tmp_path / "wheels"
        subprocess.run(["make", "gpu-wheels", f"GPU_WHEELS={folder}"], cwd=ROOT, check=True)
    host = {
        Tag(interpreter, abi, platform)
        for interpreter in ("cp312", "cp36", "cp310", "py3", "py2.py3")
        for abi in ("cp312", "abi3", "none")
        for platform in ("manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "any")
    }
    found = {}
    for wheel in folder.glob("*.whl"):
        name, version, _, tags = parse_wheel_filename(wheel.name)
        assert tags & host or any("py3" in str(tag) for tag in tags), wheel.name
        found[name] = str(version)
    assert {name: version for name, version in _pins().items()} == {
        name: found.get(name) for name in _pins()
    }


@pytest.mark.slow
def test_the_cpu_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    """--cpu-smoke under JAX (torch is not installed here; the GPU host runs both)."""
    done = subprocess.run(
        [str(ROOT / "bench" / "bench_gpu.sh"), "--cpu-smoke", "--python", sys.executable,
         "--backends", "jax"],
        env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True, cwd=ROOT,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    runs = json.loads((tmp_path / "gpu_jax.json").read_text())["runs"]
    assert [run["network"] for run in runs] == ["small", "efficientnetb0"]
    for run in runs:
        assert run["backend"] == "jax" and run["image_size"] == 32 and not run["photo_cache"]
        assert [epoch["epoch"] for epoch in run["epochs"]] == [1, 2]
        for epoch in run["epochs"]:
            assert epoch["photos_per_s"] > 0 and 0 <= epoch["input_wait_share"] <= 1
            assert epoch["gpu_utilisation_pct"] is None  # no nvidia-smi on this machine
    cached = json.loads((tmp_path / "gpu_jax-cache.json").read_text())["runs"]
    assert [(run["network"], run["photo_cache"]) for run in cached] == [("small", True)]
    pipeline = json.loads((tmp_path / "image_pipeline.json").read_text())
    readers = {run["reader"] for run in pipeline["runs"]}
    assert {"ImageBatches, threads: 1", "ImageBatches, threads: 2"} <= readers
    assert any(reader.startswith("ImageBatches from the photo cache") for reader in readers)
    summary = (tmp_path / "summary.md").read_text()
    assert "| jax | efficientnetb0 | 2 |" in summary
