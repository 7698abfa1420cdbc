"""The wrapper around every step (src/monitoring/push.py), against a real Pushgateway."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from src.config import get_settings
from src.errors import SKIPPED_EXIT_CODE, RakutenError
from src.monitoring import push
from src.monitoring.metrics import STEP_INPUT_ROWS
from src.monitoring.push import monitored
from tests.monitoring.conftest import gateway_samples, step_samples
from tests.servers import free_port

SUCCESS = "rakuten_step_last_success_timestamp_seconds"
FAILURE = "rakuten_step_last_failure_timestamp_seconds"
SKIP = "rakuten_step_last_skip_timestamp_seconds"
DURATION = "rakuten_step_duration_seconds"


@pytest.fixture
def gateway_url(pushgateway: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """RAKUTEN_PUSHGATEWAY_URL set to the real gateway, outside Airflow."""
    monkeypatch.setenv("RAKUTEN_PUSHGATEWAY_URL", pushgateway)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_TASK_ID", raising=False)
    get_settings.cache_clear()
    yield pushgateway
    get_settings.cache_clear()


def _value(url: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels`, if there is one."""
    for (sample, sample_labels), value in gateway_samples(url).items():
        if sample == name and labels.items() <= dict(sample_labels).items():
            return value
    return None


def test_a_successful_step_pushes_its_duration_and_success_in_its_own_group(
    gateway_url: str,
) -> None:
    with monitored("unit_success", branch="b1") as run:
        run.metrics.set(STEP_INPUT_ROWS, 12)
    pushed = step_samples(gateway_url, "unit_success")
    assert {DURATION, SUCCESS, "rakuten_step_input_rows"} <= set(pushed)
    assert FAILURE not in pushed and SKIP not in pushed
    # The group is job, step and the command's own key: no run id, no date.
    labels = pushed[SUCCESS]
    assert {k for k, v in labels.items() if v} == {"job", "step", "branch"}
    assert labels["job"] == "rakuten" and labels["branch"] == "b1"
    assert _value(gateway_url, "rakuten_step_input_rows", step="unit_success") == 12


def test_a_failed_step_pushes_its_failure_and_leaves_the_last_success(gateway_url: str) -> None:
    with monitored("unit_failure"):
        pass
    success = _value(gateway_url, SUCCESS, step="unit_failure")
    with pytest.raises(RakutenError, match="broken"), monitored("unit_failure"):
        raise RakutenError("broken")
    assert _value(gateway_url, SUCCESS, step="unit_failure") == success
    failure = _value(gateway_url, FAILURE, step="unit_failure")
    assert success is not None and failure is not None and failure >= success


def test_a_step_that_never_succeeded_has_no_success_series(gateway_url: str) -> None:
    with pytest.raises(typer.Exit), monitored("unit_never"):
        raise typer.Exit(1)
    pushed = step_samples(gateway_url, "unit_never")
    assert FAILURE in pushed and SUCCESS not in pushed


def test_exit_99_is_a_skip_and_exit_0_a_success(gateway_url: str) -> None:
    with pytest.raises(typer.Exit), monitored("unit_skip"):
        raise typer.Exit(SKIPPED_EXIT_CODE)
    pushed = step_samples(gateway_url, "unit_skip")
    assert set(pushed) == {DURATION, SKIP}
    with pytest.raises(typer.Exit), monitored("unit_skip"):
        raise typer.Exit(0)
    assert SUCCESS in step_samples(gateway_url, "unit_skip")


def test_under_airflow_the_samples_carry_the_dag_and_task(
    gateway_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "rakuten_training")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "evaluate")
    with monitored("unit_airflow"):
        pass
    labels = step_samples(gateway_url, "unit_airflow")[SUCCESS]
    assert labels["dag_id"] == "rakuten_training" and labels["task_id"] == "evaluate"


def test_a_summary_that_cannot_be_read_costs_a_warning_not_the_step(
    gateway_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), monitored("validate", branch="unit-bad-summary") as run:
        run.summary({"unexpected": True})
    assert "could not record its metrics" in caplog.text
    assert _value(gateway_url, SUCCESS, step="validate", branch="unit-bad-summary") is not None


def test_without_a_url_steps_run_and_say_once_that_metrics_are_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.delenv("RAKUTEN_PUSHGATEWAY_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env to read
    get_settings.cache_clear()
    push._metrics_off.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="src.monitoring.push"):
            for _ in range(2):
                with monitored("unit_off") as run:
                    run.metrics.set(STEP_INPUT_ROWS, 1)
    finally:
        get_settings.cache_clear()
    assert caplog.text.count("metrics off") == 1


def test_an_unreachable_gateway_costs_a_warning_not_the_step(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAKUTEN_PUSHGATEWAY_URL", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.WARNING), monitored("unit_unreachable") as run:
            run.summary({})
        ran = True
    finally:
        get_settings.cache_clear()
    assert ran and "metrics not pushed" in caplog.text


def test_a_gateway_that_never_answers_is_given_up_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A socket that listens but never answers: the connection opens, the reply never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("RAKUTEN_PUSHGATEWAY_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        get_settings.cache_clear()
        try:
            with caplog.at_level(logging.WARNING), monitored("unit_silent"):
                pass
        finally:
            get_settings.cache_clear()
    assert "metrics not pushed" in caplog.text and "timed out" in caplog.text
    assert push.PUSH_TIMEOUT_SECONDS <= 2
