"""
### rakuten_batch_predict

Daily (06:00 Europe/Paris) and whenever a promotion moves `@champion` (the Asset
`rakuten://models/rakuten-product-classifier/champion`): score the products the champion has
not scored yet (the raw snapshot's test listings and the CSVs dropped in `RAKUTEN_INCOMING_DIR`),
store them as the day's batch in the predictions database and publish them as Parquet under
`$RAKUTEN_DATA_ROOT/predictions/<day>/`.

* **Shadow scoring**: when a `@challenger` exists (a version that failed the gate, or awaits a
  person's approval), it scores the same listings into its own batch, and `agreement` logs how
  often it agrees with the champion. Without a challenger these two tasks are skipped.
* **Idempotent**: a batch is keyed by (day, model version); a rerun of a day replaces that day's
  batch in one transaction. No champion yet: `score_champion` is skipped, with why.
* **Closed loop**: `drift` compares the champion's batch with the reference profile packaged
  with it (`reports/drift/<day>.json`, table `drift_reports`, pushed metrics); `performance`
  stores the late labels dropped in `$RAKUTEN_INCOMING_DIR/labels/` and scores the champion's
  batches on them. Drift is a finding, not an error: these tasks fail only on errors. `retrain`
  asks for a training when the batch drifted or the realised weighted F1 is under the gate's
  floor, at most once per `drift.cooldown_hours` (skipped, with why, otherwise);
  `trigger_training` then starts `rakuten_training` with conf `{"force": true, "reason": ...}`
  under the run id `retrain__<day>`, so a retried or rerun day never triggers twice.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task
from rakuten_common import CHAMPION_ASSET, DEFAULT_ARGS, RUN_DAY, TIMEZONE, rakuten


@dag(
    dag_id="rakuten_batch_predict",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * *", timezone=TIMEZONE), assets=CHAMPION_ASSET
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["rakuten", "predictions"],
    doc_md=__doc__,
)
def rakuten_batch_predict() -> None:
    """Wiring of the batch predictions; the work is in `rakuten predict-batch`."""

    @task.bash
    def score_champion() -> str:
        """Score the listings the champion has not scored yet: the day's batch."""
        return rakuten(f"predict-batch --date {RUN_DAY} --skip-missing")

    @task.bash
    def score_challenger() -> str:
        """Shadow scoring: the challenger scores the same listings into its own batch."""
        return rakuten(f"predict-batch --date {RUN_DAY} --alias challenger --skip-missing")

    @task.bash
    def agreement(champion: str, challenger: str) -> str:
        """How often the challenger agrees with the champion on the listings both scored."""
        champion_batch = json.loads(champion)["batch_id"]
        challenger_batch = json.loads(challenger)["batch_id"]
        return rakuten(
            f"db agreement --champion-batch {champion_batch} --challenger-batch {challenger_batch}"
        )

    @task.bash
    def drift() -> str:
        """Compare the champion's batch with its reference profile; drift is not an error."""
        return rakuten(f"monitor drift --date {RUN_DAY}")

    @task.bash
    def performance() -> str:
        """Store the late labels that arrived; the champion's realised F1 per batch day."""
        return rakuten("monitor performance")

    @task.bash
    def retrain() -> str:
        """Whether the day asks for a retraining (exit 99: no, and why)."""
        return rakuten(f"monitor retrain --date {RUN_DAY}")

    @task(multiple_outputs=True)
    def training_request(decision: str) -> dict[str, Any]:
        """The training run to trigger: its id (from the batch day) and its conf."""
        request = json.loads(decision)
        return {
            "run_id": request["dag_run_id"],
            "conf": {"force": True, "reason": request["reason"]},
        }

    champion = score_champion()
    challenger = score_challenger()
    champion >> challenger
    agreement(champion, challenger)
    decision = retrain()
    champion >> [drift(), performance()] >> decision
    request = training_request(decision)
    TriggerDagRunOperator(
        task_id="trigger_training",
        trigger_dag_id="rakuten_training",
        trigger_run_id=request["run_id"],
        conf=request["conf"],
        skip_when_already_exists=True,
    )


rakuten_batch_predict()
