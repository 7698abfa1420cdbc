"""Reference models that the pipeline's scores are held against (tests and bench/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC


def plain_tfidf_linearsvc(processed: Path) -> float:
    """Weighted F1 on the test split of a default TF-IDF + LinearSVC fitted on train + val."""
    labelled = pd.concat([pd.read_parquet(processed / f"{s}.parquet") for s in ("train", "val")])
    test = pd.read_parquet(processed / "test.parquet")
    model = make_pipeline(TfidfVectorizer(), LinearSVC(random_state=0))
    model.fit(labelled["text"], labelled["prdtypecode"])
    return float(f1_score(test["prdtypecode"], model.predict(test["text"]), average="weighted"))
