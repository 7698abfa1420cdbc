"""What importing some modules loads, seen from a fresh interpreter: the tests that keep each
step's start-up lean check modules, not times (bench/bench_startup.py measures the times)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence


def loaded_by(modules: Sequence[str], among: Sequence[str]) -> set[str]:
    """The top-level packages of `among` that importing `modules` loads in a new interpreter."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {list(among)!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))
