"""Run a command and sample the memory of its whole process tree: what every bench reports."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Measurement:
    """Wall time and peak resident memory of one command and all its children."""

    command: list[str]
    seconds: float
    peak_rss_mib: float  # the largest sum over the tree at one sampling instant
    peak_process_rss_mib: float  # the largest single process
    returncode: int


def measure(command: list[str], interval: float = 0.1) -> Measurement:
    """Run `command`, polling its process tree's RSS every `interval` seconds."""
    start = time.perf_counter()
    process = subprocess.Popen(command)
    root = psutil.Process(process.pid)
    peak_tree = peak_single = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            sizes = [p.memory_info().rss for p in tree if p.is_running()]
        except psutil.Error:  # a child ended between listing and reading
            continue
        peak_tree = max(peak_tree, sum(sizes))
        peak_single = max(peak_single, *sizes)
        time.sleep(interval)
    seconds = time.perf_counter() - start
    mib = 1024 * 1024
    return Measurement(command, seconds, peak_tree / mib, peak_single / mib, process.returncode)


def machine() -> dict[str, object]:
    """The machine a result was taken on."""
    return {
        "cpus": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def write_result(name: str, payload: dict[str, object], directory: Path = RESULTS) -> Path:
    """Write a bench's JSON under bench/results/ (or `directory`) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str) + "\n")
    return path


def result_row(label: str, m: Measurement, extra: str = "") -> str:
    """One line of a bench's printed table."""
    memory = f"{m.peak_rss_mib:9.0f} | {m.peak_process_rss_mib:9.0f}"
    return f"| {label} | {m.seconds:8.1f} | {memory} | {extra} |"


TABLE_HEADER = "| run | seconds | tree MiB | max proc MiB | notes |\n|---|---|---|---|---|"

__all__ = ["TABLE_HEADER", "Measurement", "asdict", "measure", "result_row", "write_result"]
