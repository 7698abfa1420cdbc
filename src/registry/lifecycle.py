"""The model lifecycle in the MLflow registry: register a challenger, gate it, promote, roll back.

A pipeline run registers its packaged model as a new version of `rakuten-product-classifier` with
the alias `challenger` and its test scores as tags. `validate` scores challenger and champion on
the same rows and writes the gate's decision, numbers and reasons on the version (tags `gate.*`)
and in `reports/gate.json`. `promote` moves the alias `champion` to a version that passed the gate
(aliases, never the deprecated stages); `rollback` moves it back to the previous champion.
Registration writes the version's model card (`src/registry/card.py`); the gate writes it again
with its result.

Every move of `champion` is one run of the audit experiment `rakuten-product-classifier-audit`,
named for the move ("promote v1", "rollback v3 -> v2"), with tags `audit.*` (action, version,
previous version, who, why, when): it lives in the tracking backend, so it survives restarts,
and rollback reads it. A move's run is FINISHED only once the
alias has moved, so a failed move leaves no record. The versions also carry `champion_since`,
`champion_until` and `promoted_by`.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from src.config import GateParams, Params, params_hash
from src.data.io import raw_version, write_json
from src.errors import RakutenError
from src.models.packaged import MODEL_NAME
from src.registry import card
from src.registry.tracking import (
    TrainingPaths,
    TrainingRun,
    airflow_context,
    data_lineage,
    experiment_id,
    log_batch,
    log_training,
    metrics_at,
    run,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow.pyfunc import PyFuncModel

    from src.db.store import ModelRef
    from src.registry import gate

# The gate's scoring stack (scikit-learn, the model's own libraries) and the store's SQLAlchemy
# are imported by the functions that use them: promote, rollback and history start without them.

logger = logging.getLogger(__name__)

CHALLENGER: Final = "challenger"
CHAMPION: Final = "champion"
AUDIT_EXPERIMENT: Final = f"{MODEL_NAME}-audit"
GATE_FILE: Final = "gate.json"
CHANGES_FILE: Final = "changes.json"  # the training decision of `rakuten model changes`
RETRAIN_REASON_TAG: Final = "retrain_reason"  # why a training ran (the closed loop's finding)
DESCRIPTION: Final = (
    "Rakuten France product-type classifier: 27 prdtypecodes from a listing's text and photo "
    "(late fusion of branches). @champion serves; @challenger awaits the gate."
)
_NONE: Final = "none"  # tag value for "no version" (tags cannot be empty everywhere)
SPLIT_TAG: Final = "split_definition"  # JSON of the train/val/test split the version learnt on
_PREDICT_BATCH: Final = 2048


class GateNotPassedError(RakutenError):
    """A version that did not pass the gate cannot be promoted."""


class NoModelError(RakutenError):
    """The alias to score with points to no model version."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _missing(error: MlflowException) -> bool:
    return bool(error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST))


def alias_version(client: MlflowClient, alias: str) -> str | None:
    """The version an alias points to, or None when it is not set (or no model is registered)."""
    try:
        aliases = client.get_registered_model(MODEL_NAME).aliases
    except MlflowException as error:
        if _missing(error):
            return None
        raise
    version = aliases.get(alias)
    return None if version is None else str(version)


def model_ref(client: MlflowClient, alias: str) -> ModelRef:
    """The version `alias` points to, as the store records it."""
    from src.db.store import ModelRef

    version = alias_version(client, alias)
    if version is None:
        raise NoModelError(f"{MODEL_NAME} has no @{alias}")
    run_id = client.get_model_version(MODEL_NAME, version).run_id
    return ModelRef(name=MODEL_NAME, version=version, alias=alias, run_id=run_id)


def _version(client: MlflowClient, version: str | None) -> ModelVersion:
    """A version by number, or the challenger's; a clear error when there is none."""
    number = version or alias_version(client, CHALLENGER)
    if number is None:
        raise RakutenError(
            f"{MODEL_NAME} has no @{CHALLENGER}: run `rakuten model register`, or give --version"
        )
    try:
        return client.get_model_version(MODEL_NAME, number)
    except MlflowException as error:
        if _missing(error):
            raise RakutenError(f"{MODEL_NAME} has no version {number}") from None
        raise


def actor(automatic: bool, environ: Mapping[str, str]) -> str:
    """Who moves an alias: the pipeline (with its Airflow run when there is one) or a person."""
    if automatic:
        run_id = airflow_context(environ).get("airflow_dag_run_id")
        return f"pipeline ({run_id})" if run_id else "pipeline"
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _ensure_registered_model(client: MlflowClient) -> None:
    """Create the registered model on first use."""
    try:
        client.get_registered_model(MODEL_NAME)
    except MlflowException as error:
        if not _missing(error):
            raise
        client.create_registered_model(MODEL_NAME, description=DESCRIPTION)


def register_challenger(
    client: MlflowClient, training: TrainingRun, split: Mapping[str, Any] | None
) -> str:
    """Register a logged model as a new version with alias `challenger`, its scores and the
    split definition of its data as tags."""
    _ensure_registered_model(client)
    tags = {**{k: repr(v) for k, v in training.scores.items()}, **training.lineage}
    if split is not None:
        tags[SPLIT_TAG] = json.dumps(split, sort_keys=True)
    created = client.create_model_version(
        MODEL_NAME,
        source=f"models:/{training.model_id}",
        run_id=training.run_id,
        tags=tags,
        description=f"pipeline run {training.run_id}",
        model_id=training.model_id,
    )
    version = str(created.version)
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
    logger.info("registered %s version %s as @%s", MODEL_NAME, version, CHALLENGER)
    return version


def _registered_by_airflow_run(client: MlflowClient, context: Mapping[str, str]) -> str | None:
    """The version an earlier try of this Airflow run registered, if any."""
    dag_id, run_id = context.get("airflow_dag_id"), context.get("airflow_dag_run_id")
    if not dag_id or not run_id:
        return None
    quote = "''"
    found = client.search_model_versions(
        f"name = '{MODEL_NAME}' and tags.airflow_dag_id = '{dag_id.replace(chr(39), quote)}' "
        f"and tags.airflow_dag_run_id = '{run_id.replace(chr(39), quote)}'"
    )
    return max((str(v.version) for v in found), key=int, default=None)


def register(
    client: MlflowClient,
    paths: TrainingPaths,
    params: Params,
    environ: Mapping[str, str],
    reason: str | None = None,
) -> dict[str, Any]:
    """Track a pipeline run and register its model as @challenger (once per Airflow run).

    `reason` (why this training ran, e.g. the drift that triggered it) becomes the tag
    `retrain_reason` of the run and of the version.
    """
    earlier = _registered_by_airflow_run(client, airflow_context(environ))
    if earlier is None:
        from src.data.make_dataset import split_definition_of

        training = log_training(client, paths, params, environ)
        version = register_challenger(client, training, split_definition_of(paths.processed_dir))
        run_id, model_id, scores = training.run_id, training.model_id, training.scores
        facts = card.training_facts(
            paths, version, run_id, model_id, experiment_id(client), training.lineage
        )
        card.write(client, facts)
    else:
        client.set_registered_model_alias(MODEL_NAME, CHALLENGER, earlier)
        logger.info("this Airflow run already registered version %s; kept it", earlier)
        found = client.get_model_version(MODEL_NAME, earlier)
        version, run_id = earlier, str(found.run_id)
        model_id = str(found.source).removeprefix("models:/")  # the source is the LoggedModel
        scores = {k: float(v) for k, v in found.tags.items() if k.startswith("test_")}
    if reason:
        client.set_tag(run_id, RETRAIN_REASON_TAG, reason)
        client.set_model_version_tag(MODEL_NAME, version, RETRAIN_REASON_TAG, reason)
    return {
        "model": MODEL_NAME,
        "version": version,
        "alias": CHALLENGER,
        "run_id": run_id,
        "model_id": model_id,
        "scores": scores,
        "reused": earlier is not None,
        "reason": reason,
    }


def _predict_codes(model: PyFuncModel, inputs: pd.DataFrame) -> np.ndarray:
    """The product-type code the packaged model predicts for each listing."""
    import numpy as np
    import pandas as pd

    parts = [
        pd.DataFrame(model.predict(inputs.iloc[start : start + _PREDICT_BATCH]))["prdtypecode"]
        for start in range(0, len(inputs), _PREDICT_BATCH)
    ]
    return np.concatenate(parts).astype(np.int64)


def _model(client: MlflowClient, version: str) -> PyFuncModel:
    from src.models.packaged import load

    return load(f"models:/{MODEL_NAME}/{version}", str(client.tracking_uri))


def validate(
    client: MlflowClient,
    paths: TrainingPaths,
    params: GateParams,
    version: str | None = None,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Gate a version (default @challenger) against @champion; record the decision and report.

    The version's model card is written again with the gate's result.
    """
    from src.data.make_dataset import split_definition_of
    from src.registry import gate

    candidate = _version(client, version)
    number = str(candidate.version)
    champion = alias_version(client, CHAMPION)
    compared = champion if champion not in (None, number) else None
    split = _split_of(candidate)
    if split is not None and split != split_definition_of(paths.processed_dir):
        raise RakutenError(
            f"version {number} was trained on another split than {paths.processed_dir}'s: its "
            "test rows are elsewhere. Run `rakuten data make-dataset` with its make_dataset "
            f"params ({json.dumps(split, sort_keys=True)})"
        )
    comparability = (
        None
        if compared is None
        else gate.comparability(split, _split_of(_version(client, compared)))
    )
    parts = [gate.pinned_test_rows(paths.processed_dir, paths.raw_dir)]
    quarantined = 0
    if data_dir is not None:
        supplied, quarantined = gate.supplied_rows(data_dir)
        parts.append(supplied)
    rows = gate.combine(parts)
    logger.info("gate: version %s vs champion %s on %d rows", number, compared, len(rows.codes))
    challenger_codes = _predict_codes(_model(client, number), rows.inputs)
    champion_codes = (
        None if compared is None else _predict_codes(_model(client, compared), rows.inputs)
    )
    incomparable: str | None = (
        None if comparability is None or comparability["comparable"] else comparability["reason"]
    )
    comparable = incomparable is None
    decision = gate.decide(rows, challenger_codes, champion_codes, params, comparable)
    if incomparable is not None:
        logger.warning("gate: not comparable with champion %s: %s", compared, incomparable)
    report = {
        "model": MODEL_NAME,
        "version": number,
        "champion_version": compared,
        **decision,
        "comparability": comparability,
        "data": {
            "raw_version": raw_version(paths.raw_dir),
            "supplied": None if data_dir is None else str(data_dir.absolute()),
            "supplied_quarantined": quarantined,
        },
        "validated_at": _now(),
    }
    report_file = paths.reports_dir / GATE_FILE
    write_json(report_file, report)
    gate_run = _log_gate(client, candidate, report, report_file)
    comparison = decision["comparison"] or {}
    tags = {
        "gate.decision": decision["decision"],
        "gate.reasons": "; ".join(decision["reasons"]) or "all checks passed",
        "gate.weighted_f1": f"{decision['challenger']['all']['weighted_f1']:.6g}",
        "gate.champion_version": compared or _NONE,
        "gate.comparable": _NONE if comparability is None else str(comparable).lower(),
        "gate.rows": str(len(rows.codes)),
        "gate.run_id": gate_run,
        "gate.validated_at": report["validated_at"],
    }
    for key in ("weighted_f1_difference", "ci_low", "ci_high"):
        if key in comparison:
            tags[f"gate.{key}"] = f"{comparison[key]:.6g}"
    if incomparable is not None:
        tags["gate.comparability"] = incomparable
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, number, key, value)
    for key in candidate.tags.keys() - tags.keys():  # left by an earlier validation
        if key.startswith("gate."):
            client.delete_model_version_tag(MODEL_NAME, number, key)
    _card_with_gate(client, candidate, report, rows, challenger_codes)
    logger.info("gate %s for version %s: %s", decision["decision"], number, tags["gate.reasons"])
    return {
        "model": MODEL_NAME,
        "version": number,
        "champion_version": compared,
        "decision": decision["decision"],
        "reasons": decision["reasons"],
        "weighted_f1": decision["challenger"]["all"]["weighted_f1"],
        "comparison": decision["comparison"],
        "comparable": comparable,
        "comparability": incomparable,
        "rows": decision["rows"],
        "report": str(report_file),
        "run_id": gate_run,
    }


def _split_of(version: ModelVersion) -> dict[str, Any] | None:
    """The split definition a version records (None: registered before it was recorded)."""
    recorded = version.tags.get(SPLIT_TAG)
    return None if recorded is None else dict(json.loads(recorded))


def _card_with_gate(
    client: MlflowClient,
    candidate: ModelVersion,
    report: Mapping[str, Any],
    rows: gate.EvaluationRows,
    predicted: np.ndarray,
) -> None:
    """Write the version's model card again with the gate's result and its confusion matrix on
    the pinned test split (the rows its test scores come from)."""
    from src.registry import gate

    if not candidate.run_id:
        logger.warning("version %s has no pipeline run: no model card to update", candidate.version)
        return
    pinned = rows.source == gate.PINNED_TEST
    confusion = card.confusion_counts(rows.codes[pinned], predicted[pinned])
    try:
        facts = card.read_facts(client, candidate.run_id)
    except card.MissingCardError as error:
        logger.warning("gate result not added to a model card: %s", error)
        return
    card.write(client, {**facts, "gate": card.gate_facts(report, confusion)})


def _log_gate(
    client: MlflowClient, candidate: ModelVersion, report: Mapping[str, Any], report_file: Path
) -> str:
    """The gate as a run nested under the version's pipeline run: numbers, thresholds, report."""
    experiment = experiment_id(client)
    tags = {"model_version": str(candidate.version), "gate.decision": str(report["decision"])}
    metrics = {
        f"challenger_{key}": float(report["challenger"]["all"][key])
        for key in ("weighted_f1", "macro_f1", "accuracy")
    }
    if report["champion"] is not None:
        metrics |= {
            f"champion_{key}": float(report["champion"]["all"][key])
            for key in ("weighted_f1", "macro_f1", "accuracy")
        }
        metrics |= {
            key: float(report["comparison"][key])
            for key in ("weighted_f1_difference", "ci_low", "ci_high")
        }
    params = {f"gate.{k}": v for k, v in report["thresholds"].items()}
    params |= {"champion_version": report["champion_version"] or _NONE}
    params |= {"supplied_data": report["data"]["supplied"] or _NONE}
    name = f"gate v{candidate.version}"
    with run(client, experiment, name, candidate.run_id or None, tags) as gate_run:
        log_batch(client, gate_run, metrics_at(metrics), params)
        client.log_artifact(gate_run, str(report_file))
    return gate_run


def _audit_experiment(client: MlflowClient) -> str:
    return experiment_id(client, AUDIT_EXPERIMENT)


def _move_champion(
    client: MlflowClient, version: str, previous: str | None, action: str, by: str, reason: str
) -> dict[str, Any]:
    """Point @champion at `version`, tag both versions and record the move in the audit log."""
    at = _now()
    record = {
        "action": action,
        "alias": CHAMPION,
        "version": version,
        "previous_version": previous or _NONE,
        "by": by,
        "reason": reason,
        "at": at,
    }
    name = f"{action} v{version}" if previous is None else f"{action} v{previous} -> v{version}"
    with run(client, _audit_experiment(client), name) as audit:
        log_batch(client, audit, tags={f"audit.{k}": v for k, v in record.items()})
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
        client.set_model_version_tag(MODEL_NAME, version, "champion_since", at)
        client.set_model_version_tag(MODEL_NAME, version, "promoted_by", by)
        tags = client.get_model_version(MODEL_NAME, version).tags
        if "champion_until" in tags:
            client.delete_model_version_tag(MODEL_NAME, version, "champion_until")
        if previous is not None:
            client.set_model_version_tag(MODEL_NAME, previous, "champion_until", at)
    logger.info("@%s: version %s -> %s (%s by %s)", CHAMPION, previous, version, action, by)
    return {**record, "previous_version": previous, "audit_run_id": audit}


def promote(
    client: MlflowClient,
    approval: Literal["auto", "manual"],
    version: str | None = None,
    automatic: bool = False,
    by: str = "unknown",
) -> dict[str, Any]:
    """Make a version that passed the gate champion; under manual approval the pipeline asks."""
    candidate = _version(client, version)
    number = str(candidate.version)
    tags = candidate.tags
    champion = alias_version(client, CHAMPION)
    decision = tags.get("gate.decision")
    if decision != "passed":
        why = tags.get("gate.reasons", "it was never validated: run `rakuten model validate`")
        raise GateNotPassedError(
            f"version {number} did not pass the gate ({why}); @{CHAMPION} stays "
            f"{champion or 'unset'}"
        )
    summary = {"model": MODEL_NAME, "version": number, "previous_version": champion}
    if champion == number:
        return {**summary, "promoted": False, "reason": f"version {number} is already champion"}
    gated_against = tags.get("gate.champion_version", _NONE)
    if gated_against != (champion or _NONE):
        raise RakutenError(
            f"version {number} was validated against champion {gated_against}, but the champion "
            f"is now {champion or _NONE}: run `rakuten model validate --version {number}` again"
        )
    incomparable = tags.get("gate.comparable") == "false"
    if automatic and (approval == "manual" or incomparable):
        why = (
            f"not comparable with champion {gated_against}: {tags.get('gate.comparability')}"
            if incomparable
            else "manual approval (params.yaml promote.approval)"
        )
        client.set_model_version_tag(MODEL_NAME, number, "approval", "awaiting")
        client.set_model_version_tag(MODEL_NAME, number, "approval.reason", why)
        reason = (
            f"{why}: version {number} awaits a person: `rakuten model promote --version {number}`"
        )
        logger.info(reason)
        return {**summary, "promoted": False, "reason": reason}
    reason = f"gate passed with weighted F1 {tags.get('gate.weighted_f1')}"
    if not automatic:
        client.set_model_version_tag(MODEL_NAME, number, "approval", f"approved by {by}")
        reason += f", approved by {by}"
    moved = _move_champion(client, number, champion, "promote", by, reason)
    if alias_version(client, CHALLENGER) == number:
        client.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
    return {**summary, "promoted": True, "audit_run_id": moved["audit_run_id"]}


def training_needed(
    client: MlflowClient, raw_dir: Path, params: Params, force: bool = False
) -> dict[str, Any]:
    """Whether a pipeline run must train: no version was yet registered from this data version
    with these ML parameters (its lineage tags say), or training is forced."""
    data_version = data_lineage(raw_dir)["data_version"]
    digest = params_hash(params)
    summary: dict[str, Any] = {"data_version": data_version, "params_sha256": digest}
    registered: list[ModelVersion] = []
    try:
        registered = client.search_model_versions(
            f"name = '{MODEL_NAME}' and tags.data_version = '{data_version}' "
            f"and tags.params_sha256 = '{digest}'"
        )
    except MlflowException as error:
        if not _missing(error):
            raise
    same = max((str(v.version) for v in registered), key=int, default=None)
    if force:
        reason = "training forced"
    elif same is None:
        reason = "no model was registered from this data version with these params"
    else:
        reason = (
            f"version {same} was trained on data {data_version[:12]} with params "
            f"{digest[:12]}, which are unchanged: training skipped (force to retrain)"
        )
    logger.info(reason)
    return {**summary, "train": force or same is None, "same_version": same, "reason": reason}


def model_card(client: MlflowClient, version: str | None = None) -> str:
    """A version's model card (default: @champion's, else @challenger's), as stored in MLflow."""
    number = version or alias_version(client, CHAMPION) or alias_version(client, CHALLENGER)
    if number is None:
        raise RakutenError(
            f"{MODEL_NAME} has no @{CHAMPION} nor @{CHALLENGER}: give --version, or register one"
        )
    run_id = _version(client, number).run_id
    if not run_id:
        raise RakutenError(f"version {number} has no pipeline run, hence no model card")
    return card.read(client, run_id)


def champion_history(client: MlflowClient) -> list[dict[str, Any]]:
    """Every recorded move of @champion, oldest first."""
    experiment = client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return []
    records = []
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            filter_string="attributes.status = 'FINISHED'",
            max_results=1000,
            page_token=token,
        )
        for found in page:
            tags = found.data.tags
            record: dict[str, Any] = {
                key.removeprefix("audit."): value
                for key, value in tags.items()
                if key.startswith("audit.")
            }
            if record.get("previous_version") == _NONE:
                record["previous_version"] = None
            records.append({**record, "audit_run_id": found.info.run_id})
        token = page.token
        if not token:
            break
    return sorted(records, key=lambda record: str(record.get("at", "")))


def rollback(client: MlflowClient, by: str, reason: str) -> dict[str, Any]:
    """Return @champion to the version that was champion before the current one, in one step."""
    champion = alias_version(client, CHAMPION)
    if champion is None:
        raise RakutenError(f"{MODEL_NAME} has no @{CHAMPION} to roll back")
    reigns: list[str] = []  # promotions push a champion, rollbacks pop one
    for record in champion_history(client):
        if record["action"] == "promote":
            reigns.append(record["version"])
        elif record["action"] == "rollback" and reigns:
            reigns.pop()
    if not reigns or reigns[-1] != champion:
        raise RakutenError(
            f"@{CHAMPION} is version {champion} but the audit log says "
            f"{reigns[-1] if reigns else 'none'}: it was moved outside `rakuten model`; "
            f"promote the wanted version with `rakuten model promote --version V`"
        )
    if len(reigns) < 2:
        raise RakutenError(f"version {champion} is the first champion: there is none to go back to")
    target = reigns[-2]
    _version(client, target)
    moved = _move_champion(client, target, champion, "rollback", by, reason)
    client.set_model_version_tag(MODEL_NAME, champion, "rolled_back_at", moved["at"])
    return {
        "model": MODEL_NAME,
        "version": target,
        "previous_version": champion,
        "audit_run_id": moved["audit_run_id"],
    }
