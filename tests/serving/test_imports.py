"""Serving a model imports nothing that only training needs: not spaCy (its French package
compiles its tokenizer's patterns at import, seconds of the API's start-up), not Optuna, not
matplotlib. Modules are checked, not times (bench/bench_api.py measures the time to /ready)."""

from __future__ import annotations

from tests.imports import loaded_by

TRAINING_ONLY = ("spacy", "optuna", "matplotlib")


def test_the_api_and_the_text_branch_import_no_training_only_library() -> None:
    modules = ["src.serving.app", "src.models.fusion", "src.models.text_tfidf"]
    assert loaded_by(modules, TRAINING_ONLY) == set()
