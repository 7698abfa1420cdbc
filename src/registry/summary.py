"""What a pipeline run did, told from what its steps wrote: the end of `make run`.

Read, never recomputed: the training decision (`reports/changes.json`, written by
`rakuten model changes`), the test scores (`reports/metrics.json`), the fusion weights (the
packaged model's `fusion.json`), the gate's decision (`reports/gate.json`), the registry's
aliases, and the store's batches. A part that a run has not written yet is reported missing,
with the step that writes it, so the summary also tells a run that stopped half-way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any, Final

from mlflow import MlflowClient
from sqlalchemy import Engine

from src.db.engine import DatabaseError, shown
from src.db.models import BatchStatus
from src.db.queries import batches
from src.db.store import ModelRef, parquet_path
from src.models.evaluate import METRICS_FILE
from src.models.fusion import FUSION_FILE
from src.models.packaged import MODEL_NAME, fused_model_dir
from src.models.train import PACKAGED_DIR
from src.registry.lifecycle import CHALLENGER, CHAMPION, CHANGES_FILE, GATE_FILE, alias_version
from src.registry.tracking import EXPERIMENT, experiment_address

logger = logging.getLogger(__name__)

HEADLINE: Final = ("weighted_f1", "macro_f1", "accuracy", "coverage")
# The commands that open what the run filled (Makefile targets; each prints its address too).
OPEN_COMMANDS: Final = {
    "MLflow UI": ("make mlflow", "http://127.0.0.1:5000"),
    "Airflow UI": ("make airflow", "http://127.0.0.1:8080"),
    "prediction API": ("make serve", "http://127.0.0.1:8000/docs"),
}


def _read_json(path: Path) -> dict[str, Any] | None:
    """A step's JSON report, or None where the step has not written it."""
    if not path.is_file():
        return None
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload


def _scores(reports_dir: Path) -> dict[str, dict[str, float]] | None:
    """Each branch's and the fused model's headline test scores (from `rakuten evaluate`)."""
    report = _read_json(reports_dir / METRICS_FILE)
    if report is None:
        return None
    return {name: {k: float(s[k]) for k in HEADLINE if k in s} for name, s in report.items()}


def _fusion(models_dir: Path) -> dict[str, float] | None:
    """The packaged model's fusion weights (from `rakuten fuse`)."""
    config = _read_json(fused_model_dir(models_dir / PACKAGED_DIR) / FUSION_FILE)
    return None if config is None else {k: float(v) for k, v in config["weights"].items()}


def _gate(reports_dir: Path) -> dict[str, Any] | None:
    """The gate's decision, reasons and numbers (from `rakuten model validate`)."""
    report = _read_json(reports_dir / GATE_FILE)
    if report is None:
        return None
    return {
        "version": report["version"],
        "champion_version": report["champion_version"],
        "decision": report["decision"],
        "reasons": report["reasons"],
        "weighted_f1": report["challenger"]["all"]["weighted_f1"],
        "comparison": report["comparison"],
        "validated_at": report["validated_at"],
    }


def _store(engine: Engine, predictions_dir: Path) -> dict[str, Any]:
    """The newest batch of predictions and where it is (database and Parquet file)."""
    where = shown(engine.url)
    try:
        newest = next(iter(batches(engine)), None)
    except DatabaseError as error:
        return {"database": where, "error": str(error), "batch": None}
    if newest is None:
        return {"database": where, "batch": None}
    batch = asdict(newest)
    if newest.status == BatchStatus.COMPLETE:
        model = ModelRef(name=newest.model, version=newest.version, alias=newest.alias)
        path = parquet_path(predictions_dir, date.fromisoformat(newest.logical_date), model)
        batch["parquet"] = str(path) if path.is_file() else None
    return {"database": where, "batch": batch}


def run_summary(
    client: MlflowClient,
    engine: Engine,
    *,
    reports_dir: Path,
    models_dir: Path,
    predictions_dir: Path,
) -> dict[str, Any]:
    """What the last pipeline run left: decision to train, scores, fusion, gate, aliases, batch."""
    return {
        "changes": _read_json(reports_dir / CHANGES_FILE),
        "scores": _scores(reports_dir),
        "fusion_weights": _fusion(models_dir),
        "gate": _gate(reports_dir),
        "model": MODEL_NAME,
        "champion": alias_version(client, CHAMPION),
        "challenger": alias_version(client, CHALLENGER),
        "tracking_uri": str(client.tracking_uri),
        "predictions": _store(engine, predictions_dir),
        "open": _open(client),
    }


def _open(client: MlflowClient) -> dict[str, dict[str, str]]:
    """The commands that open the UIs, with their addresses: MLflow's on the training runs."""
    opened = {name: {"command": c, "address": a} for name, (c, a) in OPEN_COMMANDS.items()}
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        mlflow_ui = opened["MLflow UI"]
        mlflow_ui["address"] = experiment_address(mlflow_ui["address"], experiment.experiment_id)
    return opened


def _missing(what: str, step: str) -> str:
    return f"  {what}: none yet (written by `{step}`)"


def render(summary: dict[str, Any]) -> list[str]:
    """The summary as lines for a terminal."""
    lines = ["", "Summary of the pipeline run", ""]
    changes = summary["changes"]
    if changes is None:
        lines.append(_missing("training decision", "rakuten model changes"))
    else:
        verdict = "trained" if changes["train"] else "skipped"
        lines.append(f"Training: {verdict}: {changes['reason']} ({changes['checked_at']})")
        if not changes["train"]:
            lines.append("  (the scores, fusion and gate below are those of that earlier run)")
    lines += ["", "Test scores (pinned test split):"]
    scores = summary["scores"]
    if scores is None:
        lines.append(_missing("scores", "rakuten evaluate"))
    else:
        lines.append(f"  {'model':<12} {'weighted F1':>11} {'macro F1':>9} {'accuracy':>9} "
                     f"{'coverage':>9}")  # fmt: skip
        for name, s in scores.items():
            lines.append(
                f"  {name:<12} {s['weighted_f1']:>11.4f} {s['macro_f1']:>9.4f} "
                f"{s['accuracy']:>9.4f} {s['coverage']:>9.1%}"
            )
    weights = summary["fusion_weights"]
    if weights is None:
        lines.append(_missing("fusion weights", "rakuten fuse"))
    else:
        shares = ", ".join(f"{name} {weight:.2f}" for name, weight in weights.items())
        lines.append(f"Fusion weights: {shares}")
    gate = summary["gate"]
    lines.append("")
    if gate is None:
        lines.append(_missing("gate", "rakuten model validate"))
    else:
        against = gate["champion_version"] or "no champion (floors only)"
        why = "; ".join(gate["reasons"]) or "all checks passed"
        lines.append(
            f"Gate: version {gate['version']} {gate['decision']} against {against}, "
            f"weighted F1 {gate['weighted_f1']:.4f}: {why}"
        )
    champion, challenger = summary["champion"], summary["challenger"]
    lines.append(
        f"Registry: {summary['model']} @champion = "
        f"{'version ' + champion if champion else 'not set'}"
        + (f", @challenger = version {challenger}" if challenger else "")
        + f" ({summary['tracking_uri']})"
    )
    store = summary["predictions"]
    batch = store["batch"]
    lines.append("")
    if "error" in store:
        lines.append(f"Predictions: the store {store['database']} cannot be read: {store['error']}")
    elif batch is None:
        lines.append(f"Predictions: no batch in {store['database']} (written by predict-batch)")
    else:
        lines.append(
            f"Predictions: batch {batch['batch_id']} of {batch['logical_date']} by version "
            f"{batch['version']} ({batch['status']}): {batch['predictions']} rows in "
            f"{store['database']}"
        )
        if batch.get("parquet"):
            lines.append(f"  and in {batch['parquet']}")
    lines += ["", "Open:"]
    for name, where in summary["open"].items():
        lines.append(f"  {name + ':':<16}{where['command']:<14}then {where['address']}")
    return lines
