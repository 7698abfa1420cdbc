"""One wrapper around every pipeline step: time it, record its outcome and summary, push it all.

The CLI runs each step inside `monitored(STEP)`; at the end of the step, whatever its outcome, the
step's metrics go to the Pushgateway of RAKUTEN_PUSHGATEWAY_URL with prometheus-client's
`pushadd_to_gateway`, in the group job="rakuten", step=STEP (plus the labels the command gives,
`branch` for train, `alias` for predict-batch): never a run id or a date, because the Pushgateway
keeps every group until someone deletes it. Monitoring never fails a step: without the URL the
steps run the same (one log line says metrics are off), and a gateway that is down or slow costs a
warning once the push times out (PUSH_TIMEOUT_SECONDS).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any, Final

from prometheus_client import pushadd_to_gateway

from src.config import get_settings
from src.errors import SKIPPED_EXIT_CODE
from src.monitoring.metrics import (
    RECORDERS,
    STEP_DURATION,
    STEP_LAST_FAILURE,
    STEP_LAST_SKIP,
    STEP_LAST_SUCCESS,
    StepMetrics,
)

logger = logging.getLogger(__name__)

JOB: Final = "rakuten"
PUSH_TIMEOUT_SECONDS: Final = 2.0


class StepRun:
    """What a step hands to its wrapper: its summary, turned into the step's own metrics."""

    def __init__(self, step: str, metrics: StepMetrics) -> None:
        self.step = step
        self.metrics = metrics
        self._summary: Mapping[str, Any] | None = None

    def summary(self, summary: Mapping[str, Any]) -> None:
        """Keep the step's JSON summary; its metrics are recorded when the step ends."""
        self._summary = summary

    def record(self, now: float) -> None:
        """Turn the summary into metrics; a summary that cannot be read costs a warning only."""
        recorder = RECORDERS.get(self.step)
        if recorder is None or self._summary is None:
            return
        try:
            recorder(self.metrics, self._summary, now)
        except Exception:  # a metric must never fail the step it describes
            logger.warning("step %s: could not record its metrics", self.step, exc_info=True)


def _outcome(error: BaseException | None) -> str:
    """success, skipped (exit 99) or failure, from how the step's block ended."""
    if error is None:
        return "success"
    # typer.Exit and click's exits carry the process's exit code, SystemExit its own.
    code = getattr(error, "exit_code", None)
    if isinstance(error, SystemExit):
        code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    if code == 0:
        return "success"
    return "skipped" if code == SKIPPED_EXIT_CODE else "failure"


@cache
def _metrics_off() -> None:
    """Say once per process that metrics are not pushed."""
    logger.info("metrics off: RAKUTEN_PUSHGATEWAY_URL is not set")


def push(url: str | None, step: str, grouping: Mapping[str, str], metrics: StepMetrics) -> bool:
    """Push-add the metrics to the step's group; False (and a warning) if the gateway failed."""
    if not url:
        _metrics_off()
        return False
    key = {"step": step, **grouping}
    try:
        pushadd_to_gateway(
            url, job=JOB, registry=metrics.registry, grouping_key=key, timeout=PUSH_TIMEOUT_SECONDS
        )
    # Refused, timed out, an HTTP error, a malformed URL, or anything else: never the step's fault.
    except Exception as error:
        logger.warning("step %s: metrics not pushed to %s: %s", step, url, error)
        return False
    logger.debug("step %s: pushed %s to %s", step, sorted(metrics.names()), url)
    return True


@contextmanager
def monitored(step: str, **grouping: str) -> Iterator[StepRun]:
    """Run a step's block, then push its duration, outcome timestamp and summary's metrics."""
    metrics = StepMetrics(os.environ)
    run = StepRun(step, metrics)
    started = time.monotonic()
    error: BaseException | None = None
    try:
        yield run
    except BaseException as raised:
        error = raised
        raise
    finally:
        now = time.time()
        metrics.set(STEP_DURATION, time.monotonic() - started)
        outcome = _outcome(error)
        if outcome == "success":
            run.record(now)
            metrics.set(STEP_LAST_SUCCESS, now)
        else:
            metrics.set(STEP_LAST_SKIP if outcome == "skipped" else STEP_LAST_FAILURE, now)
        push(get_settings().pushgateway_url, step, grouping, metrics)
