"""The model card of a registered version: what it is for, what it learnt from, how well it does,
whether it passed the gate, its known limits, and how to retrain and roll it back.

Each version's card is a Markdown artifact of its pipeline run (`model_card.md`), rendered from
the facts stored beside it (`model_card.json`). Registration writes both; the gate, which runs
after registration, adds its decision and the confusion matrix of the registered model on the
pinned test split, and writes both again. The card is stored rather than rendered when read so
that the artifact a person opens in MLflow's UI and `rakuten model card` show the same text, with
the gate's latest result in both.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mlflow import MlflowClient

from src.data.classes import CLASS_NAMES, PRDTYPECODES
from src.errors import RakutenError
from src.registry.tracking import experiment_address

if TYPE_CHECKING:
    import numpy as np

    from src.registry.tracking import TrainingPaths

CARD_FILE: Final = "model_card.md"
FACTS_FILE: Final = "model_card.json"
SPLITS: Final = ("train", "val", "test")
FULL_TRAIN_ROWS: Final = 84_916  # labelled rows of the full Rakuten train set (DESIGN §5)
TOP_CONFUSIONS: Final = 10
INTENDED_USE: Final = (
    "Suggests the product type (one of the 27 `prdtypecode` of the Rakuten France catalogue) of a "
    "marketplace listing from its title (`designation`), its description and its photo. It is "
    "meant for the catalogue's data team: nightly batch predictions written to the predictions "
    "store, and the prediction API for single listings, each with its top 3 and probabilities "
    "so that uncertain listings can be reviewed by a person."
)
OUT_OF_SCOPE: Final = (
    "Not for listings of other marketplaces or languages than those it was trained on (mostly "
    "French, some German and English), nor for product types outside the 27 codes: it always "
    "answers one of them. Not a substitute for review where a wrong category has a cost."
)


def rows_per_class(processed_dir: Path) -> dict[str, dict[str, int]]:
    """Labelled rows per product-type code in each split of the processed dataset."""
    import pandas as pd

    from src.models.data import SPLIT_FILES

    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        codes = pd.read_parquet(processed_dir / SPLIT_FILES[split], columns=["prdtypecode"])
        found = codes["prdtypecode"].value_counts()
        counts[split] = {str(code): int(found.get(code, 0)) for code in PRDTYPECODES}
    return counts


def photo_share(processed_dir: Path) -> float:
    """Share of the train split's products that have a photo."""
    import pandas as pd

    from src.models.data import SPLIT_FILES

    paths = pd.read_parquet(processed_dir / SPLIT_FILES["train"], columns=["image_path"])
    return float(paths["image_path"].notna().mean()) if len(paths) else 0.0


def training_facts(
    paths: TrainingPaths,
    version: str,
    run_id: str,
    model_id: str,
    experiment_id: str,
    lineage: Mapping[str, str],
) -> dict[str, Any]:
    """What registration knows of a version: lineage, data, scores per model and class, fusion."""
    from src.models.evaluate import METRICS_FILE
    from src.models.fusion import FUSION_FILE
    from src.models.packaged import MODEL_NAME

    report = json.loads((paths.reports_dir / METRICS_FILE).read_text(encoding="utf-8"))
    fusion = json.loads((paths.fused_dir / FUSION_FILE).read_text(encoding="utf-8"))
    return {
        "model": MODEL_NAME,
        "version": version,
        "run_id": run_id,
        "model_id": model_id,
        "experiment_id": experiment_id,
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lineage": dict(lineage),
        "rows_per_class": rows_per_class(paths.processed_dir),
        "photo_share": photo_share(paths.processed_dir),
        "fusion": {
            "weights": fusion["weights"],
            "combiner": fusion.get("combiner", "grid"),
            "fitted_on": fusion.get("fitted_on"),
        },
        "scores": report,
        "gate": None,
    }


def confusion_counts(codes: np.ndarray, predicted: np.ndarray) -> list[list[int]]:
    """Counts of (true code, predicted code) over the 27 codes, rows true, columns predicted."""
    import numpy as np

    from src.models.branch import labels_index

    size = len(PRDTYPECODES)
    cells = labels_index(codes) * size + labels_index(predicted)
    matrix = np.bincount(cells, minlength=size * size).reshape(size, size)
    return [[int(count) for count in row] for row in matrix]


def gate_facts(report: Mapping[str, Any], confusion: list[list[int]]) -> dict[str, Any]:
    """The gate's result as the card shows it: decision, reasons, checks and confusion matrix."""
    return {
        "decision": report["decision"],
        "reasons": list(report["reasons"]),
        "checks": list(report["checks"]),
        "champion_version": report["champion_version"],
        "comparison": report["comparison"],
        "comparability": report.get("comparability"),
        "rows": report["rows"],
        "unjudged_classes": report["unjudged_classes"],
        "validated_at": report["validated_at"],
        "confusion": confusion,
    }


class MissingCardError(RakutenError):
    """The version's pipeline run has no model card (registered before cards existed)."""


def write(client: MlflowClient, facts: Mapping[str, Any]) -> None:
    """Store a version's card and its facts in its pipeline run (replacing earlier ones)."""
    client.log_dict(str(facts["run_id"]), dict(facts), FACTS_FILE)
    client.log_text(str(facts["run_id"]), render(facts), CARD_FILE)


def _download(client: MlflowClient, run_id: str, name: str) -> str:
    """One artifact of a run as text; a clear error when the run has no card."""
    with tempfile.TemporaryDirectory() as work:
        try:
            local = client.download_artifacts(run_id, name, work)
        except Exception as error:  # MLflow raises several types for a missing artifact
            raise MissingCardError(
                f"run {run_id} has no {name} ({error}): it was registered before model cards; "
                "register the model again"
            ) from None
        return Path(local).read_text(encoding="utf-8")


def read_facts(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """The facts a version's card was rendered from."""
    facts: dict[str, Any] = json.loads(_download(client, run_id, FACTS_FILE))
    return facts


def read(client: MlflowClient, run_id: str) -> str:
    """A version's card, as stored in its pipeline run."""
    return _download(client, run_id, CARD_FILE)


def _f(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(cell) for cell in row) + " |" for row in rows]
    return lines


def _label(code: str | int) -> str:
    return f"{code} {CLASS_NAMES[int(code)]}"


def _lineage(facts: Mapping[str, Any]) -> list[str]:
    lineage = facts["lineage"]
    lines = [
        f"- Data version (raw snapshot): `{lineage.get('data_version', 'unknown')}` "
        f"from a `{lineage.get('data_source', 'unknown')}` source",
    ]
    if "hub_commit" in lineage:
        lines.append(f"- Hub dataset: `{lineage['hub_repo']}` at commit `{lineage['hub_commit']}`")
    lines.append(
        f"- Code: git commit `{lineage.get('git_commit', 'unknown (not a git work tree)')}`"
    )
    lines.append(f"- ML parameters (params.yaml) hash: `{lineage.get('params_sha256', 'unknown')}`")
    if "airflow_dag_run_id" in lineage:
        dag, dag_run = lineage.get("airflow_dag_id"), lineage["airflow_dag_run_id"]
        lines.append(f"- Airflow: DAG `{dag}`, run `{dag_run}`")
    lines.append(
        f"- MLflow: run `{facts['run_id']}`, logged model `{facts['model_id']}`; in the UI: "
        f"`{experiment_address('', facts['experiment_id'], facts['run_id'])}`"
    )
    return lines


_COMBINERS: Final = {
    "grid": "The fused model averages the branches' class probabilities (a grid search)",
    "log_linear": "The fused model multiplies the branches' class probabilities, each raised to "
    "its weight, and renormalises (log-linear pooling)",
    "stacked": "The fused model is a logistic model on the branches' log-probabilities: log-linear "
    "pooling with, per class, a weight offset per branch, a bias and a shift when a branch "
    "abstains (no photo), L2-regularised",
}


def _scores(facts: Mapping[str, Any]) -> list[str]:
    scores = facts["scores"]
    weights = facts["fusion"]["weights"]
    rows = [
        [
            name,
            weights.get(name, "(fused)" if name == "fused" else "-"),
            s["weighted_f1"],
            s["macro_f1"],
            s["accuracy"],
            s["coverage"],
            s["rows"],
        ]
        for name, s in scores.items()
    ]
    header = ["model", "fusion weight", "weighted F1", "macro F1", "accuracy", "coverage", "rows"]
    return _table(header, rows)


def _per_class(facts: Mapping[str, Any]) -> list[str]:
    counts = facts["rows_per_class"]
    per_class = facts["scores"]["fused"]["per_class"]
    rows = [
        [
            _label(code),
            counts["train"][str(code)],
            counts["val"][str(code)],
            counts["test"][str(code)],
            per_class[str(code)]["precision"],
            per_class[str(code)]["recall"],
            per_class[str(code)]["f1"],
        ]
        for code in PRDTYPECODES
    ]
    totals = [sum(counts[split].values()) for split in SPLITS]
    rows.append(["**all**", *totals, "", "", ""])
    header = ["prdtypecode", "train rows", "val rows", "test rows", "precision", "recall", "F1"]
    return _table(header, rows)


def _confusion(matrix: list[list[int]]) -> list[str]:
    codes = [str(code) for code in PRDTYPECODES]
    rows = [
        [f"**{code}**", *[count or "" for count in line]]
        for code, line in zip(codes, matrix, strict=True)
    ]
    lines = _table(["true \\ predicted", *codes], rows)
    pairs = sorted(
        (
            (count, codes[true], codes[predicted])
            for true, line in enumerate(matrix)
            for predicted, count in enumerate(line)
            if count and true != predicted
        ),
        reverse=True,
    )[:TOP_CONFUSIONS]
    if pairs:
        lines += ["", "Most frequent confusions:", ""]
        lines += [
            f"- {count} x {_label(true)} taken for {_label(predicted)}"
            for count, true, predicted in pairs
        ]
    return lines


def _gate(facts: Mapping[str, Any]) -> list[str]:
    gate = facts["gate"]
    if gate is None:
        return [
            "Not validated yet: `rakuten model validate --version "
            f"{facts['version']}` gates it and writes its result here.",
        ]
    against = gate["champion_version"]
    lines = [
        f"**{gate['decision'].upper()}** on {gate['validated_at']}, on {gate['rows']['all']} "
        f"labelled rows ({', '.join(f'{k}: {v}' for k, v in gate['rows'].items() if k != 'all')}), "
        + (f"against champion version {against}." if against else "with no champion to beat."),
        "",
        "Reasons: " + ("; ".join(gate["reasons"]) or "all checks passed") + ".",
        "",
    ]
    rows = [
        [c["check"], "-" if c["value"] is None else c["value"], c["threshold"], c["passed"]]
        for c in gate["checks"]
    ]
    lines += _table(["check", "value", "threshold", "passed"], rows)
    comparison = gate["comparison"]
    if comparison:
        lines += [
            "",
            f"Weighted F1 against the champion: {comparison['weighted_f1_difference']:+.4f} "
            f"({comparison['confidence']:.0%} paired-bootstrap CI "
            f"[{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}]).",
        ]
    comparability = gate.get("comparability")
    if comparability and not comparability["comparable"]:
        lines += [
            "",
            f"Not comparable with the champion: {comparability['reason']}. The difference is "
            "reported, not judged; promotion needs a person's approval.",
        ]
    if gate["unjudged_classes"]:
        unjudged = ", ".join(f"{k} ({v} rows)" for k, v in gate["unjudged_classes"].items())
        lines += ["", f"Too few rows to hold to the per-class floor: {unjudged}."]
    return lines


def _limits(facts: Mapping[str, Any]) -> list[str]:
    counts = facts["rows_per_class"]
    # Val rows choose the configuration and fit the fusion, and refitted branches learn from them:
    # the model learned from train + val, never from test.
    trained_on = sum(counts["train"].values()) + sum(counts["val"].values())
    test_rows = counts["test"]
    thin = [code for code, rows in test_rows.items() if rows < 20]
    weights = facts["fusion"]["weights"]
    lines = [f"- {OUT_OF_SCOPE}"]
    if trained_on < FULL_TRAIN_ROWS / 10:
        lines.append(
            f"- Learned from {trained_on} labelled rows (train and val), a small part of the "
            f"{FULL_TRAIN_ROWS:,} of "
            "the full Rakuten train set: a demonstration model, not one to put in front of users."
        )
    if thin:
        lines.append(
            f"- {len(thin)} of 27 classes have fewer than 20 test rows ({', '.join(thin)}): "
            "their per-class scores move by large steps with one product and say little."
        )
    lines.append(
        f"- {facts['photo_share']:.0%} of the training products had a photo; "
        + (
            "the image branch weighs "
            + ", ".join(f"{w:.2f} ({b})" for b, w in weights.items() if b.startswith("image"))
            + " in the fusion."
            if any(b.startswith("image") for b in weights)
            else "no image branch is fused: photos are not used."
        )
    )
    lines.append(
        "- The product-type names are community labels, not Rakuten's official ones; classes "
        "such as 10 (used books), 2403 (book lots) and 2705 (new books) overlap by nature."
    )
    return lines


def _fitted_on(fitted_on: Mapping[str, Any] | None, branches: Iterable[str]) -> str:
    """Which held-out probabilities the combiner was fitted on."""
    if fitted_on is None:  # a model packaged before this was recorded
        return "the branches' held-out probabilities of the validation split"
    crossed, rows = fitted_on["cross_fitted"], fitted_on["rows"]
    others = [name for name in branches if name not in crossed]
    if not crossed:
        return (
            f"the branches' probabilities of the {rows} validation rows, from models fitted on "
            "train alone"
        )
    if not others:
        return (
            f"the branches' out-of-fold probabilities of all {rows} train + val rows "
            "(cross-fitting: each from a model fitted on the other folds)"
        )
    return (
        f"the branches' probabilities of the {rows} validation rows: out-of-fold over train + val "
        f"(cross-fitted) for {', '.join(crossed)}, from models fitted on train alone for "
        f"{', '.join(others)}"
    )


def render(facts: Mapping[str, Any]) -> str:
    """The card as Markdown."""
    version = facts["version"]
    lines = [
        f"# Model card: {facts['model']} version {version}",
        "",
        f"Registered on {facts['registered_at']}.",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Data and lineage",
        "",
        *_lineage(facts),
        "",
        "## Scores on the pinned test split",
        "",
        "Weighted F1 is the challenge's metric; macro F1 weighs every class alike; coverage is "
        "the share of test products a branch could answer (the image branch needs a photo).",
        "",
        *_scores(facts),
        "",
        "## The fusion",
        "",
        _COMBINERS[facts["fusion"].get("combiner", "grid")]
        + " with these weights, fitted on "
        + _fitted_on(facts["fusion"].get("fitted_on"), facts["fusion"]["weights"])
        + ", minimising the log loss: "
        + ", ".join(f"{b} {w:.2f}" for b, w in facts["fusion"]["weights"].items())
        + ".",
        "",
        "## Rows and scores per class (fused model)",
        "",
        *_per_class(facts),
        "",
        "## Gate",
        "",
        *_gate(facts),
        "",
    ]
    if facts["gate"] is not None:
        lines += [
            "## Confusion matrix (fused model, pinned test split)",
            "",
            "Counts of products by true (rows) and predicted (columns) prdtypecode, as the "
            "registered model predicts them at the gate.",
            "",
            *_confusion(facts["gate"]["confusion"]),
            "",
        ]
    lines += [
        "## Known limits",
        "",
        *_limits(facts),
        "",
        "## Retrain and roll back",
        "",
        "- Retrain: trigger the `rakuten_training` DAG from the Airflow UI, or run `dvc repro`; "
        "by hand: `rakuten data ingest`, `rakuten data make-dataset`, `rakuten train`, "
        "`rakuten fuse`, `rakuten evaluate`, then `rakuten model register`, "
        "`rakuten model validate` and `rakuten model promote`.",
        "- Roll back: `rakuten model rollback --reason WHY` moves @champion back to the previous "
        "champion in one step; `rakuten model promote --version V` brings back any version that "
        "passed the gate; `rakuten model history` lists every move.",
        f"- This card: `rakuten model card --version {version}`.",
        "",
    ]
    return "\n".join(lines)
