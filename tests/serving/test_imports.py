"""Serving a model imports nothing that only training needs: not spaCy (its French package
compiles its tokenizer's patterns at import, seconds of the API's start-up), not Optuna, not
matplotlib. Modules are checked, not times (bench/bench_api.py measures the time to /ready)."""

from __future__ import annotations

import json
import subprocess
import sys

TRAINING_ONLY = ("spacy", "optuna", "matplotlib")


def test_the_api_and_the_text_branch_import_no_training_only_library() -> None:
    modules = ["src.serving.app", "src.models.fusion", "src.models.text_tfidf"]
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {list(TRAINING_ONLY)!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
