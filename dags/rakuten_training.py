"""
### rakuten_training

Nightly (02:00 Europe/Paris) and on demand: pull the catalogue, validate it, build the datasets,
train each enabled branch, fuse and evaluate, register the model as `@challenger`, gate it
against `@champion`, promote it, and publish the batch predictions.

* **Trigger form**: data source and revision, sample size, branches, epochs, promotion mode,
  force. Empty fields keep `params.yaml` and the `RAKUTEN_*` settings, so *Trigger* works as the
  form opens. A revision applies to a hub source only (ignored, with a warning, otherwise). The
  run's parameters are written to `$RAKUTEN_DATA_ROOT/runs/<run id>/params.yaml` (`configure`'s
  log shows the changes).
* **Unpausing** (the form's "Unpause on trigger" included) starts no run for a missed night:
  the scheduler still creates the run of the last 02:00, but `on_time` skips all of it when it
  starts more than an hour after its slot. The next night runs as scheduled; a triggered run
  runs now.
* **Skip when unchanged**: `changes` skips training (and says why in its log) when a model was
  already registered from this data version with these parameters, unless *force* is set.
* **Branches** are mapped: `train_cpu` fits the scikit-learn branches, `train_gpu` the neural ones
  on the `gpu` queue and pool.
* **Reason**: a run triggered by `rakuten_batch_predict` (drift, or realised F1 under the
  floor) carries `reason` in its conf; `register` records it as the tag `retrain_reason`.
* **Gate**: a failed gate leaves `promote` skipped; the reasons are in `gate`'s log and XCom and
  on the model version in MLflow (tags `gate.*`).
* A promotion updates the Asset `rakuten://models/rakuten-product-classifier/champion`, which
  schedules `rakuten_batch_predict`.

Every task runs one `rakuten` command (see `rakuten --help`); its JSON summary is the XCom.
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, dag, task
from rakuten_common import (
    CHAMPION_ASSET,
    DEFAULT_ARGS,
    GPU_POOL,
    GPU_QUEUE,
    RUN_DAY,
    RUN_PARAMS,
    TIMEZONE,
    missed_slot,
    rakuten,
)

BRANCH_NAMES = ["text_tfidf", "text_cnn", "image_cnn"]
BRANCH_LABELS = {
    "text_tfidf": "text_tfidf: TF-IDF + linear SVM (CPU)",
    "text_cnn": "text_cnn: text CNN (GPU queue)",
    "image_cnn": "image_cnn: photo CNN (GPU queue)",
}
RAW = '"$RAKUTEN_DATA_ROOT/raw"'
INTERIM = '--interim-dir "$RAKUTEN_DATA_ROOT/interim"'


def _settings(params: dict[str, Any]) -> list[str]:
    """`rakuten params write --set` arguments for the trigger form's non-empty fields."""
    changes: dict[str, Any] = {}
    if params.get("branches"):
        changes["train.branches"] = params["branches"]
    if params.get("epochs"):
        changes["text_cnn.epochs"] = changes["image_cnn.epochs"] = params["epochs"]
    if params.get("sample_rows"):
        changes["make_dataset.sample_rows"] = params["sample_rows"]
    if params.get("promotion"):
        changes["promote.approval"] = params["promotion"]
    return [
        f"--set {shlex.quote(f'{name}={json.dumps(value)}')}" for name, value in changes.items()
    ]


@dag(
    dag_id="rakuten_training",
    schedule=CronTriggerTimetable("0 2 * * *", timezone=TIMEZONE),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["rakuten", "training", "mlflow"],
    doc_md=__doc__,
    description="Train, gate and promote the product classifier: nightly at 02:00 Paris and on "
    "demand. Unpausing starts no run for a missed night: trigger one to train now.",
    params={
        "data_source": Param(
            None,
            type=["null", "string"],
            examples=["synthetic", "hf"],
            title="Data source",
            description="hf (the Rakuten dataset repo), hf://OWNER/REPO, a folder in the hub's "
            "layout on the workers, or synthetic. Empty: RAKUTEN_DATA_SOURCE.",
        ),
        "data_revision": Param(
            None,
            type=["null", "string"],
            title="Hub revision",
            description="Branch, tag or commit, for a hub source (hf, hf://OWNER/REPO); ignored "
            "with a warning in ingest's log for a folder or synthetic. Empty: the source's own, "
            "or main.",
        ),
        "sample_rows": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Sample size",
            description="Labelled rows to keep, chosen by productid hash. Empty: params.yaml's "
            "make_dataset.sample_rows (all rows when unset).",
        ),
        "branches": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "enum": BRANCH_NAMES},
            # This Airflow's form offers a multi-select only for top-level examples or enum.
            examples=BRANCH_NAMES,
            values_display=BRANCH_LABELS,
            uniqueItems=True,
            title="Branches",
            description="Branches to train (the fused model combines them). "
            "Empty: params.yaml's train.branches.",
        ),
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Epochs",
            description="Epochs of the neural branches (text_cnn, image_cnn). "
            "Empty: params.yaml's.",
        ),
        "promotion": Param(
            None,
            type=["null", "string"],
            enum=[None, "auto", "manual"],
            values_display={
                "null": "params.yaml's promote.approval",
                "auto": "auto: a passed gate promotes",
                "manual": "manual: a person approves",
            },
            title="Promotion",
            description="What follows a passed gate: auto moves @champion to the new version; "
            "manual tags it approval=awaiting for `rakuten model promote --version V`.",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force retrain",
            description="Train even if the data and the parameters are unchanged.",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            title="Reason",
            description="Why this run trains (set by rakuten_batch_predict on drift); recorded "
            "as the tag retrain_reason of the MLflow run and the registered version. "
            "Empty: none.",
        ),
    },
)
def rakuten_training() -> None:
    """Wiring of the training pipeline; the work is in the `rakuten` commands."""

    @task.short_circuit
    def on_time(dag_run: Any = None) -> bool:
        """Skip a scheduled run that starts long after its slot (unpaused, or a missed night)."""
        return not missed_slot(dag_run, datetime.now(UTC))

    @task.bash
    def configure(params: dict[str, Any] | None = None) -> str:
        """Write the run's parameters: params.yaml with the trigger form's changes."""
        settings = " ".join(_settings(params or {}))
        return rakuten(f"params write --out {RUN_PARAMS} {settings}")

    @task.bash
    def ingest(params: dict[str, Any] | None = None) -> str:
        """Fetch the catalogue into a versioned raw snapshot (unchanged data: nothing fetched)."""
        params = params or {}
        # Quoted: the form's text goes into a shell command.
        source = (
            f"--source {shlex.quote(params['data_source'])}" if params.get("data_source") else ""
        )
        revision = (
            f"--revision {shlex.quote(params['data_revision'])}"
            if params.get("data_revision")
            else ""
        )
        return rakuten(f"data ingest {source} {revision}", run_params=True)

    @task.bash
    def validate() -> str:
        """Check the data contract; quarantine what breaks it and write the quality report."""
        return rakuten(f"data validate {RAW} {INTERIM}", run_params=True)

    @task.bash
    def make_dataset() -> str:
        """Clean the text, check the photos, and split into the pinned train/val/test."""
        return rakuten(
            f'data make-dataset {RAW} "$RAKUTEN_DATA_ROOT/processed" {INTERIM}', run_params=True
        )

    @task.bash
    def changes(params: dict[str, Any] | None = None) -> str:
        """Skip training (exit 99) when this data and these parameters were already trained."""
        force = "--force" if (params or {}).get("force") else ""
        return rakuten(f"model changes {force}", run_params=True)

    @task
    def branches(configured: str, device: str) -> list[str]:
        """The branches to train on a device, `cpu` or `gpu` (from `configure`'s summary)."""
        names: list[str] = json.loads(configured)["branches"][device]
        return names

    @task.bash(max_active_tis_per_dagrun=2)
    def train_cpu(branch: str) -> str:
        """Fit one scikit-learn branch."""
        return rakuten(f"train --branch {branch}", run_params=True)

    @task.bash(queue=GPU_QUEUE, pool=GPU_POOL)
    def train_gpu(branch: str) -> str:
        """Fit one neural branch, on a GPU worker where there is one."""
        return rakuten(f"train --branch {branch}", run_params=True)

    @task.bash(trigger_rule="none_failed_min_one_success")
    def fuse() -> str:
        """Fit the fusion weights on val and package the fused model (MLflow pyfunc)."""
        return rakuten("fuse", run_params=True)

    @task.bash
    def evaluate() -> str:
        """Score every branch and the fused model on the pinned test split."""
        return rakuten("evaluate", run_params=True)

    @task.bash
    def register(params: dict[str, Any] | None = None) -> str:
        """Track the run in MLflow and register its model as a new version @challenger."""
        reason = (params or {}).get("reason")
        # Quoted: the reason is text from the trigger's conf.
        return rakuten(
            f"model register {f'--reason {shlex.quote(reason)}' if reason else ''}",
            run_params=True,
        )

    @task.bash
    def gate() -> str:
        """Gate @challenger against @champion; the decision and reasons go on the version."""
        return rakuten("model validate --no-fail", run_params=True)

    @task.bash(outlets=[CHAMPION_ASSET])
    def promote() -> str:
        """Move @champion to the challenger if it passed the gate (skipped, with why, if not)."""
        return rakuten("model promote --auto --skip-failed", run_params=True)

    @task.bash(trigger_rule="none_failed")
    def batch_predict() -> str:
        """Score the products the champion has not scored yet; store and publish them."""
        return rakuten(f"predict-batch --date {RUN_DAY} --skip-missing", run_params=True)

    configured = configure()
    on_time() >> configured
    checked = configured >> ingest() >> validate() >> make_dataset() >> changes()
    cpu = branches.override(task_id="cpu_branches")(configured, "cpu")
    gpu = branches.override(task_id="gpu_branches")(configured, "gpu")
    checked >> [cpu, gpu]
    trained = [train_cpu.expand(branch=cpu), train_gpu.expand(branch=gpu)]
    packaged = fuse()
    trained >> packaged
    packaged >> evaluate() >> register() >> gate() >> promote() >> batch_predict()


rakuten_training()
