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
"""

from __future__ import annotations

import json
from datetime import datetime

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

    champion = score_champion()
    challenger = score_challenger()
    champion >> challenger
    agreement(champion, challenger)


rakuten_batch_predict()
