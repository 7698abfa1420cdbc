"""The text branch: TF-IDF of words, character n-grams and the title into a calibrated LinearSVC.

Three TF-IDF views of the cleaned text feed one linear model: words and word n-grams of
`text` (designation + description) without French stop words (spaCy's list, which needs no
model download), character n-grams inside words of `text` (robust to typos, plurals and
glued tokens), and the words of `designation` alone, weighted, since the title names the
product more reliably than the description. A LinearSVC per calibration fold, with its scores
turned into probabilities by a sigmoid fitted on the fold's held-out rows, gives probabilities
averaged over the folds (scikit-learn's CalibratedClassifierCV).

An Optuna search (seeded TPE) over C, penalty, n-gram ranges, vocabulary size and the title's
weight picks the configuration with the best weighted F1 on val; the params block's own
configuration is its first trial.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import joblib
import numpy as np
import pandas as pd
import scipy.sparse
import sklearn
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from src.config import TextTfidfParams
from src.errors import RakutenError
from src.models.branch import CLASSES, Branch, Modality, labels_index
from src.models.evaluate import scores

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

MODEL_FILE: Final = "model.joblib"
CONFIG_FILE: Final = "text_tfidf.json"
TEXT_COLUMNS: Final = ["text", "designation"]
# scikit-learn's default: words of two or more letters or digits.
TOKEN_PATTERN: Final = r"(?u)\b\w\w+\b"


@functools.cache
def french_stop_words() -> list[str]:
    """spaCy's French stop words split like the vectorizer splits text (`aujourd'hui` ->
    `aujourd`, `hui`), so every stop word is dropped as the tokens it becomes.

    Read when a pipeline is built, not at import: spaCy's French package compiles its tokenizer's
    patterns when imported (seconds), and a fitted vectorizer keeps its own copy of the list, so
    loading a model to serve it needs none of it.
    """
    from spacy.lang.fr.stop_words import STOP_WORDS

    return sorted(
        {token for word in STOP_WORDS for token in re.findall(TOKEN_PATTERN, word.lower())}
    )


# The fields a search trial sets; the rest (trials, folds, threads, seed) stay as configured.
SEARCHED: Final = (
    "C",
    "penalty",
    "word_ngram_max",
    "char_ngram_min",
    "char_ngram_max",
    "max_features",
    "designation_weight",
)


def build_pipeline(config: TextTfidfParams, cv: list[tuple[np.ndarray, np.ndarray]]) -> Pipeline:
    """The TF-IDF views and the calibrated LinearSVC of one configuration, unfitted."""
    words = (1, config.word_ngram_max)
    views = [
        ("words", _words(words, config.max_features), "text"),
        (
            "chars",
            TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=(config.char_ngram_min, config.char_ngram_max),
                max_features=config.max_features,
                sublinear_tf=True,
                dtype=np.float32,
            ),
            "text",
        ),
    ]
    weights = {"words": 1.0, "chars": 1.0}
    if config.designation_weight > 0:
        views.append(("designation", _words(words, config.max_features), "designation"))
        weights["designation"] = config.designation_weight
    svc = LinearSVC(
        C=config.C, penalty=config.penalty, dual=config.penalty == "l2", random_state=config.seed
    )
    return Pipeline(
        [
            ("tfidf", ColumnTransformer(views, transformer_weights=weights)),
            (
                "svc",
                CalibratedClassifierCV(svc, method="sigmoid", cv=cv, n_jobs=_threads(config)),
            ),
        ]
    )


def _words(ngrams: tuple[int, int], max_features: int | None) -> TfidfVectorizer:
    return TfidfVectorizer(
        ngram_range=ngrams,
        token_pattern=TOKEN_PATTERN,
        stop_words=french_stop_words(),
        max_features=max_features,
        sublinear_tf=True,
        dtype=np.float32,
    )


def _threads(config: TextTfidfParams) -> int:
    """Worker processes fitting the calibration folds: as configured, or one per usable core."""
    return config.n_jobs or len(os.sched_getaffinity(0))


def calibration_folds(
    codes: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train, held-out) folds; fewer folds where no class has `folds` rows.

    A class with fewer rows than folds is missing from some folds' training rows: those folds'
    models give it probability 0, the others still learn it (scikit-learn refuses such folds
    when asked for a number of folds, not when given the folds).
    """
    largest = int(np.unique(codes, return_counts=True)[1].max())
    if largest < 2:
        raise RakutenError(
            "the text branch needs at least two train rows of some product type to calibrate"
        )
    splitter = StratifiedKFold(min(folds, largest), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return list(splitter.split(np.zeros(len(codes)), codes))


def fit_pipeline(config: TextTfidfParams, train: pd.DataFrame) -> Pipeline:
    """Fit one configuration on `train` (calibration folds in worker processes)."""
    codes = train["prdtypecode"].to_numpy()
    pipeline = build_pipeline(
        config, calibration_folds(codes, config.calibration_folds, config.seed)
    )
    # Processes, not threads: liblinear seeds one process-wide random generator, so folds fitted
    # in threads of one process interleave its draws and the fit stops being reproducible.
    pipeline.fit(train[TEXT_COLUMNS], codes)
    return pipeline


def _suggest(trial: optuna.Trial, base: TextTfidfParams) -> dict[str, Any]:
    """One point of the search space, whose ranges are widened to hold the base configuration."""
    sizes = [25_000, 50_000, 100_000, 200_000]
    title_weights = [0.0, 0.5, 1.0, 2.0]
    char_min = trial.suggest_int("char_ngram_min", 1, max(3, base.char_ngram_min))
    char_max_low = max(char_min, min(4, base.char_ngram_max))
    return {
        "C": trial.suggest_float("C", min(0.01, base.C), max(3.0, base.C), log=True),
        "penalty": trial.suggest_categorical("penalty", ["l2", "l1"]),
        "word_ngram_max": trial.suggest_int("word_ngram_max", 1, max(2, base.word_ngram_max)),
        "char_ngram_min": char_min,
        "char_ngram_max": trial.suggest_int(
            "char_ngram_max", char_max_low, max(6, base.char_ngram_max)
        ),
        "max_features": trial.suggest_categorical("max_features", _with(sizes, base.max_features)),
        "designation_weight": trial.suggest_categorical(
            "designation_weight", _with(title_weights, base.designation_weight)
        ),
    }


def _with(choices: list[Any], value: Any) -> list[Any]:
    """The choices, and the value too where it is not one of them."""
    return choices if value in choices else [*choices, value]


def _proba(pipeline: Pipeline, products: pd.DataFrame) -> np.ndarray:
    """A fitted pipeline's probabilities in `CLASSES` order, 0 for classes it never saw."""
    proba = np.zeros((len(products), len(CLASSES)))
    if len(products):
        known = pipeline_proba(pipeline, products[TEXT_COLUMNS])
        proba[:, labels_index(pipeline.classes_)] = known / known.sum(axis=1, keepdims=True)
    return proba


def pipeline_proba(pipeline: Pipeline, texts: pd.DataFrame) -> np.ndarray:
    """`pipeline.predict_proba(texts)`, computed as whole-array products.

    scikit-learn checks its inputs at every step of every call: 3 folds x 27 sigmoid calibrators
    each validate their column, and the ColumnTransformer dispatches through joblib. On a few
    listings those checks are ~90% of the call (docs/benchmarks.md, the API's profile). The same
    arithmetic here: each view's TF-IDF times its weight, stacked; per fold, the LinearSVC's
    scores, every class's sigmoid at once, normalised; the folds' mean. A pipeline of another
    shape (two classes, other calibration, a dense output) takes scikit-learn's own path.
    """
    views: ColumnTransformer = pipeline.named_steps["tfidf"]
    calibrated: CalibratedClassifierCV = pipeline.named_steps["svc"]
    folds = calibrated.calibrated_classifiers_
    if (
        len(calibrated.classes_) < 3
        or not views.sparse_output_
        or any(fold.method != "sigmoid" for fold in folds)
    ):
        return np.asarray(pipeline.predict_proba(texts))
    weights = views.transformer_weights or {}
    features = scipy.sparse.hstack(
        [
            vectorizer.transform(texts[column]) * weights.get(name, 1.0)
            if name in weights
            else vectorizer.transform(texts[column])
            for name, vectorizer, column in views.transformers_
            if vectorizer != "drop"
        ]
    ).tocsr()
    mean = np.zeros((features.shape[0], len(calibrated.classes_)))
    for fold in folds:
        svc = fold.estimator
        scores = np.asarray(features @ svc.coef_.T) + svc.intercept_
        slope = np.array([calibrator.a_ for calibrator in fold.calibrators])
        offset = np.array([calibrator.b_ for calibrator in fold.calibrators])
        proba = np.zeros_like(mean)
        proba[:, np.searchsorted(calibrated.classes_, svc.classes_)] = expit(
            -(slope * scores + offset)
        )
        total = proba.sum(axis=1, keepdims=True)
        proba = np.divide(
            proba, total, out=np.full_like(proba, 1 / proba.shape[1]), where=total != 0
        )
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        mean += proba
    return mean / len(folds)


class TfidfTextBranch(Branch):
    """Product text -> probabilities over the 27 product types, by TF-IDF and a linear model."""

    name: ClassVar[str] = "text_tfidf"
    modality: ClassVar[Modality] = "text"
    params: TextTfidfParams

    def __init__(self, params: TextTfidfParams | None = None) -> None:
        super().__init__(params or TextTfidfParams())
        self.config: TextTfidfParams = self.params
        self.pipeline: Pipeline | None = None

    def fit(self, train: pd.DataFrame, val: pd.DataFrame) -> dict[str, Any]:
        """Search configurations on val (unless `trials` is 0), keep the best one fitted on train.

        `rakuten train` then keeps this model's val probabilities for fusion and refits the
        chosen configuration on train + val (`refit_params`).
        """
        started = time.perf_counter()
        if self.params.trials and val.empty:
            raise RakutenError(
                "the text branch's search needs validation rows: set make_dataset.val_fraction "
                "above 0, or text_tfidf.trials to 0"
            )
        trials: list[dict[str, Any]] = []
        if self.params.trials:
            self.config, self.pipeline = self._search(train, val, trials)
        else:
            self.config, self.pipeline = self.params, fit_pipeline(self.params, train)
        val_scores = (
            scores(val["prdtypecode"].to_numpy(), self.predict_proba(val)) if len(val) else {}
        )
        summary = {
            "config": self.config.model_dump(mode="json", include=set(SEARCHED)),
            "best_trial": max(trials, key=lambda t: t["val_weighted_f1"])["number"]
            if trials
            else None,
            "trials": trials,
            "train_rows": len(train),
            "val_rows": len(val),
            "classes_in_train": int(train["prdtypecode"].nunique()),
            "val_weighted_f1": val_scores.get("weighted_f1"),
            "val_macro_f1": val_scores.get("macro_f1"),
            "val_accuracy": val_scores.get("accuracy"),
            "seconds": round(time.perf_counter() - started, 1),
        }
        logger.info(
            "text_tfidf fitted in %.1f s: val weighted F1 %s with %s",
            summary["seconds"],
            summary["val_weighted_f1"],
            summary["config"],
        )
        return summary

    def refit_params(self, summary: dict[str, Any]) -> TextTfidfParams:
        """The chosen configuration, without a search."""
        return self.config.model_copy(update={"trials": 0})

    def predict_proba(self, products: pd.DataFrame) -> np.ndarray:
        """Probabilities in `CLASSES` order; 0 for a class that had no train rows."""
        if self.pipeline is None:
            raise RakutenError("the text branch is not trained: fit or load it first")
        return _proba(self.pipeline, products)

    def save(self, directory: Path) -> None:
        """Write `model.joblib` (the fitted pipeline) and `text_tfidf.json` (params, config)."""
        if self.pipeline is None:
            raise RakutenError("the text branch is not trained: nothing to save")
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.pipeline, directory / MODEL_FILE)
        config = {
            "params": self.params.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"),
            "classes": CLASSES.tolist(),
            "sklearn": sklearn.__version__,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a branch written by `save` (with the scikit-learn version that wrote it)."""
        config: dict[str, Any] = json.loads((directory / CONFIG_FILE).read_text())
        if config["classes"] != CLASSES.tolist():
            raise ValueError(f"{directory}: saved for other classes than {CLASSES.tolist()}")
        if config["sklearn"] != sklearn.__version__:
            logger.warning(
                "%s was saved with scikit-learn %s, this is %s: retrain if it misbehaves",
                directory,
                config["sklearn"],
                sklearn.__version__,
            )
        branch = cls(TextTfidfParams.model_validate(config["params"]))
        branch.config = TextTfidfParams.model_validate(config["config"])
        branch.pipeline = joblib.load(directory / MODEL_FILE)
        return branch

    def _search(
        self, train: pd.DataFrame, val: pd.DataFrame, records: list[dict[str, Any]]
    ) -> tuple[TextTfidfParams, Pipeline]:
        """Run the Optuna trials; return the best configuration with its fitted pipeline.

        Each trial's pipeline is fitted on train, as the final one is, so the best trial's
        pipeline is kept rather than fitted again. `records` receives one entry per trial.
        """
        import optuna  # the search only: training a fixed configuration needs none of it

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        base = self.params.model_dump()
        codes = val["prdtypecode"].to_numpy()
        best: dict[str, Any] = {"score": -1.0}

        def objective(trial: optuna.Trial) -> float:
            started = time.perf_counter()
            config = TextTfidfParams.model_validate({**base, **_suggest(trial, self.params)})
            pipeline = fit_pipeline(config, train)
            val_scores = scores(codes, _proba(pipeline, val))
            score = float(val_scores["weighted_f1"])
            records.append(
                {
                    "number": trial.number,
                    "params": dict(trial.params),
                    "val_weighted_f1": score,
                    "val_macro_f1": val_scores["macro_f1"],
                    "val_accuracy": val_scores["accuracy"],
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            logger.info("text_tfidf trial %d: val weighted F1 %.4f", trial.number, score)
            if score > best["score"]:  # ties keep the earlier trial, as Optuna's best_trial does
                best.update(score=score, config=config, pipeline=pipeline)
            return score

        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.params.seed)
        )
        study.enqueue_trial({name: base[name] for name in SEARCHED})
        study.optimize(objective, n_trials=self.params.trials)
        return best["config"], best["pipeline"]
