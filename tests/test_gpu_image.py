"""The GPU worker's image, and only it, carries the CUDA wheels (uv.lock's `cuda` extra)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[1]
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
PROJECT = "rakuten-classifier"
# The images' platform: Linux x86_64, the Python of their base images (3.11).
LINUX = {
    "python_version": "3.11",
    "python_full_version": "3.11.11",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _packages(name: str) -> list[dict[str, Any]]:
    return [p for p in LOCK["package"] if p["name"] == name]


def _applies(dependency: dict[str, Any], extras: tuple[str, ...]) -> bool:
    marker = dependency.get("marker")
    if marker is None:
        return True
    return any(Marker(marker).evaluate({**LINUX, "extra": extra}) for extra in ("", *extras))


def installed_by(extras: tuple[str, ...]) -> set[str]:
    """What `uv sync --frozen --no-dev [--extra ...]` installs on Linux x86_64, by the lock."""
    seen: set[str] = set()
    pending: list[tuple[str, tuple[str, ...]]] = [(PROJECT, extras)]
    while pending:
        name, wanted = pending.pop()
        for package in _packages(name):
            dependencies = list(package.get("dependencies", []))
            for extra in wanted:
                dependencies += package.get("optional-dependencies", {}).get(extra, [])
            for dependency in dependencies:
                if not _applies(dependency, wanted):
                    continue
                key = (dependency["name"], tuple(dependency.get("extra", [])))
                if f"{key[0]}{key[1]}" not in seen:
                    seen.add(f"{key[0]}{key[1]}")
                    pending.append(key)
    return {entry.split("(")[0] for entry in seen}


def _cuda_wheels(names: set[str]) -> set[str]:
    return {name for name in names if name.startswith("nvidia-")}


def test_the_lock_has_a_cuda_extra_with_tensorflow_and_its_cuda_wheels() -> None:
    project = _packages(PROJECT)[0]
    assert project["optional-dependencies"]["cuda"] == [
        {"name": "tensorflow", "extra": ["and-cuda"]}
    ]
    with_cuda = _cuda_wheels(installed_by(("cuda",)))
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= with_cuda
    assert not _cuda_wheels(installed_by(()))


def _dockerfile_syncs(dockerfile: Path) -> list[str]:
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    return [line for line in text.splitlines() if "uv sync" in line]


def test_only_the_airflow_dockerfile_can_add_an_extra_and_only_through_its_build_arg() -> None:
    for dockerfile in sorted((ROOT / "docker").glob("*/Dockerfile")):
        for sync in _dockerfile_syncs(dockerfile):
            assert "--all-extras" not in sync, dockerfile
            extras = re.findall(r"--extra[ =](\S+)", sync)
            if dockerfile.parent.name == "airflow":
                assert extras == ["$RAKUTEN_EXTRAS}"], sync
                assert "${RAKUTEN_EXTRAS:+--extra $RAKUTEN_EXTRAS}" in sync
            else:
                assert not extras, sync
    airflow = (ROOT / "docker/airflow/Dockerfile").read_text()
    assert re.search(r'^ARG RAKUTEN_EXTRAS=""$', airflow, re.MULTILINE)


def _services() -> dict[str, dict[str, Any]]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]


def test_the_gpu_worker_alone_is_built_with_the_cuda_extra_and_requires_its_gpu() -> None:
    services = _services()
    gpu = services["airflow-worker-gpu"]
    assert gpu["build"]["args"] == {"RAKUTEN_EXTRAS": "cuda"}
    assert gpu["build"]["dockerfile"] == "docker/airflow/Dockerfile"
    assert gpu["environment"]["RAKUTEN_REQUIRE_GPU"] == "true"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name, service in services.items():
        if name == "airflow-worker-gpu":
            continue
        assert not service.get("build", {}).get("args"), name
        assert service.get("image") != gpu["image"], name
        assert "RAKUTEN_REQUIRE_GPU" not in service.get("environment", {}), name


def test_ci_builds_the_gpu_image_with_the_cuda_extra() -> None:
    ci = yaml.load((ROOT / ".github/workflows/ci.yml").read_text(), Loader=yaml.BaseLoader)
    images = ci["jobs"]["images"]
    assert {"image": "airflow-gpu", "dockerfile": "airflow", "extras": "cuda"} in images[
        "strategy"
    ]["matrix"]["include"]
    build = next(s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push"))
    assert build["with"]["build-args"] == "RAKUTEN_EXTRAS=${{ matrix.extras }}"
    assert build["with"]["file"] == "docker/${{ matrix.dockerfile || matrix.image }}/Dockerfile"
