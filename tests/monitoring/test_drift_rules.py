"""The closed loop's alert rules: valid for Prometheus, and each fires exactly when it should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus" / "rules"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian's prometheus package; .ci/run installs it)")
    return found


def test_the_rules_are_valid_and_loaded_by_prometheus(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES / "drift.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((RULES.parent / "prometheus.yml").read_text())
    assert "rules/drift.yml" in config["rule_files"]


def test_each_alert_fires_on_its_series_and_not_otherwise(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "test", "rules", "drift_test.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load((RULES / "drift_test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((RULES / "drift.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert tested == alerts == {"RakutenBatchDrifted", "RakutenRealisedF1UnderFloor"}
