"""The closed loop's steps: drift of a day's batch, realised performance from late labels, and
whether to ask for a retraining. Called by `rakuten monitor ...` (and so by the batch DAG).

Drift is a finding, not an error: a drifted batch ends these steps normally, with the verdict in
their summary, reports/drift/DAY.json and the store. The CLI runs each step inside
`src.monitoring.push.monitored`, which pushes its summary as metrics (src/monitoring/metrics.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score, f1_score
from sqlalchemy import Engine

from src.config import Params
from src.data.classes import PRDTYPECODES
from src.data.io import read_raw_csv, write_json
from src.db import monitoring as store
from src.db.store import ModelRef
from src.errors import RakutenError
from src.models.profile import input_features
from src.monitoring.drift import DRIFT, check_drift
from src.registry.reference import reference_profile

logger = logging.getLogger(__name__)

DRIFT_DIR: Final = "drift"
LABELS_DIR: Final = "labels"
RETRAIN_RUN_PREFIX: Final = "retrain__"


def photos_present(frame: pd.DataFrame, image_dirs: Sequence[Path]) -> np.ndarray:
    """Whether each product's photo (hub naming) is in one of `image_dirs`."""
    present = np.zeros(len(frame), dtype=bool)
    for directory in image_dirs:
        if not directory.is_dir():
            continue
        names = {path.name for path in directory.iterdir()}
        present |= np.array(
            [
                f"image_{imageid}_product_{productid}.jpg" in names
                for imageid, productid in zip(frame["imageid"], frame["productid"], strict=True)
            ],
            dtype=bool,
        )
    return present


def drift(
    logical_date: date,
    alias: str,
    *,
    engine: Engine,
    client: MlflowClient,
    params: Params,
    reports_dir: Path,
    image_dirs: Sequence[Path],
) -> dict[str, Any]:
    """Check the day's batch by `alias` against its model's reference; report and store it."""
    batch = store.day_batch(engine, logical_date, alias)
    profile = reference_profile(client, batch.model.name, batch.model.version)
    frame = batch.frame
    features = input_features(
        frame["designation"], frame["description"], photos_present(frame, image_dirs)
    )
    report = check_drift(profile, frame, features, params.drift)
    summary = {
        "logical_date": logical_date.isoformat(),
        "batch_id": batch.batch_id,
        "model": batch.model.name,
        "version": batch.model.version,
        "alias": alias,
        **report.as_dict(),
        "thresholds": params.drift.model_dump(),
    }
    path = reports_dir / DRIFT_DIR / f"{logical_date.isoformat()}.json"
    write_json(path, summary)
    store.save_drift_report(engine, logical_date, batch.model, batch.batch_id, summary)
    if report.drifted:
        logger.warning("batch of %s drifted: %s", logical_date, "; ".join(report.reasons))
    else:
        logger.info("batch of %s: %s", logical_date, report.verdict)
    return {**summary, "report": str(path)}


def parse_labels(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Late labels checked and typed: the hub's Y layout (index, prdtypecode) with productid, every
    code one of the 27 product types. `where` names the file in the error."""
    missing = [c for c in ("productid", "prdtypecode") if c not in frame]
    if missing:
        raise RakutenError(f"{where} lacks column(s) {', '.join(missing)} (Y layout + productid)")
    try:
        labels = frame.assign(
            productid=pd.to_numeric(frame["productid"]).astype("int64"),
            prdtypecode=pd.to_numeric(frame["prdtypecode"]).astype("int64"),
        )
    except (ValueError, TypeError, OverflowError) as error:
        raise RakutenError(f"{where}: productid and prdtypecode must be integers") from error
    unknown = sorted(set(labels["prdtypecode"].tolist()) - set(PRDTYPECODES))
    if unknown:
        raise RakutenError(f"{where}: {unknown[:5]} are no product type codes")
    return labels


def read_labels(labels_dir: Path) -> dict[str, pd.DataFrame]:
    """Every labels CSV in `labels_dir` (see `parse_labels`), by file name."""
    paths = sorted(labels_dir.glob("*.csv")) if labels_dir.is_dir() else []
    return {path.name: parse_labels(read_raw_csv(path), str(path)) for path in paths}


def performance(
    alias: str,
    since: date | None,
    *,
    engine: Engine,
    labels_dir: Path,
    params: Params,
) -> dict[str, Any]:
    """Store newly arrived labels; score `alias`'s batches per day on their labelled products."""
    arrived = {
        name: store.store_labels(engine, frame, name)
        for name, frame in read_labels(labels_dir).items()
    }
    labelled = store.labelled_predictions(engine, alias, since)
    days = []
    for keys, group in labelled.groupby(
        ["logical_date", "model", "version", "run_id"], dropna=False, sort=True
    ):
        day, name, version, run_id = cast(tuple[date, str, str, str | None], keys)
        truth, predicted = group["label"].to_numpy(), group["prdtypecode"].to_numpy()
        scores = {
            "labelled": len(group),
            "weighted_f1": float(f1_score(truth, predicted, average="weighted", zero_division=0)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(truth, predicted)),
        }
        model = ModelRef(name, version, alias, run_id if isinstance(run_id, str) else None)
        store.save_performance(engine, day, model, scores)
        days.append({"logical_date": day.isoformat(), "model": name, "version": version, **scores})
    summary: dict[str, Any] = {
        "alias": alias,
        "labels_arrived": arrived,
        "days": days,
        # The floor realised weighted F1 is held to, beside the scores (the alert compares them).
        "weighted_f1_floor": params.gate.min_weighted_f1,
    }
    logger.info("realised performance on %d batch day(s)", len(days))
    return summary


def retrain_run_id(logical_date: date) -> str:
    """The training run the loop triggers for a batch day: one per day, whatever the retries."""
    return f"{RETRAIN_RUN_PREFIX}{logical_date.isoformat()}"


def _reasons(engine: Engine, logical_date: date, alias: str, params: Params) -> list[str]:
    """Why the day's batch asks for a retraining: its drift, or realised F1 under the floor."""
    reasons = []
    batch = store.day_batch(engine, logical_date, alias)
    report = store.drift_verdict(engine, logical_date, batch.model)
    if report is not None and report["verdict"] == DRIFT:
        reasons.append(f"drift on {logical_date}: " + "; ".join(report["reasons"]))
    floor = params.gate.min_weighted_f1
    for scores in store.realised_performance(engine, batch.model):
        if scores["labelled"] >= params.drift.min_labelled_rows:
            if scores["weighted_f1"] < floor:
                reasons.append(
                    f"realised weighted F1 {scores['weighted_f1']:.3f} on "
                    f"{scores['labelled']} labelled products of {scores['logical_date']} "
                    f"< gate.min_weighted_f1={floor}"
                )
            break  # the newest day with enough labels speaks for the model
    return reasons


def retrain_decision(
    logical_date: date,
    alias: str,
    *,
    engine: Engine,
    params: Params,
    now: datetime,
) -> dict[str, Any]:
    """Whether the loop asks `rakuten_training` for a run for this day, and the run's id.

    A day asks at most once (a rerun gets the same request back, so the same run id, which
    Airflow does not trigger twice), and no new request is made within `drift.cooldown_hours`
    of the previous one.
    """
    run_id = retrain_run_id(logical_date)
    requests = store.retrain_requests(engine)
    same_day = [r for r in requests if r.logical_date == logical_date.isoformat()]
    decision: dict[str, Any]
    if same_day:
        decision = {"retrain": True, "reused": True, **asdict(same_day[0])}
    else:
        reasons = _reasons(engine, logical_date, alias, params)
        cutoff = now - timedelta(hours=params.drift.cooldown_hours)
        recent = [r for r in requests if datetime.fromisoformat(r.requested_at) > cutoff]
        if not reasons:
            decision = {"retrain": False, "why": "no drift and realised F1 not under the floor"}
        elif recent:
            decision = {
                "retrain": False,
                "why": f"cooldown: retraining already asked at {recent[0].requested_at} "
                f"({recent[0].dag_run_id}), within drift.cooldown_hours="
                f"{params.drift.cooldown_hours}; reasons now: {'; '.join(reasons)}",
            }
        else:
            request = store.record_retrain_request(engine, logical_date, "; ".join(reasons), run_id)
            decision = {"retrain": True, "reused": False, **asdict(request)}
    logger.info("retrain decision for %s: %s", logical_date, decision)
    requested = len(store.retrain_requests(engine))
    return {"logical_date": logical_date.isoformat(), **decision, "requests": requested}
