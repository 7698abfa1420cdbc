"""The alert rules and Alertmanager's configuration, checked by Prometheus's own tools."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "monitoring" / "prometheus" / "rules"
RULES = RULES_DIR / "rakuten.yml"
RULE_TESTS = RULES_DIR / "rakuten_test.yml"
ALERTMANAGER = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
DOC = ROOT / "docs" / "monitoring.md"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs Debian's monitoring packages)")
    return path


def _run(*command: str, cwd: Path = ROOT) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_rules_pass_promtool_check() -> None:
    _run(_tool("promtool"), "check", "rules", str(RULES))


def test_the_rules_pass_their_unit_tests() -> None:
    _run(_tool("promtool"), "test", "rules", RULE_TESTS.name, cwd=RULES_DIR)


def test_prometheus_loads_the_rules() -> None:
    config = yaml.safe_load((RULES_DIR.parent / "prometheus.yml").read_text())
    assert [str((RULES_DIR.parent / path).resolve()) for path in config["rule_files"]] == [
        str(RULES)
    ]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


def test_every_alert_has_a_test_where_it_fires_and_one_where_it_does_not() -> None:
    cases: dict[str, set[bool]] = {}
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            cases.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    for alert in _alerts():
        assert cases.get(alert["alert"]) == {True, False}, alert["alert"]


def test_every_alert_waits_says_how_bad_and_links_its_runbook() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
        for title in re.findall(r"^#+ (.+)$", DOC.read_text(), re.M)
    }
    for alert in _alerts():
        name = alert["alert"]
        assert "for" in alert, name
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert alert["annotations"]["summary"], name
        path, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert path == "docs/monitoring.md" and anchor == name.lower(), name
        assert anchor in anchors, f"docs/monitoring.md has no section {name}"


def test_alertmanager_config_passes_amtool_with_the_webhook_of_env(tmp_path: Path) -> None:
    """The container writes ALERTMANAGER_WEBHOOK_URL into the file (docker-compose.yml): the
    same replacement, then amtool's check."""
    text = ALERTMANAGER.read_text()
    assert "ALERTMANAGER_WEBHOOK_URL" in text
    config = tmp_path / "alertmanager.yml"
    config.write_text(text.replace("ALERTMANAGER_WEBHOOK_URL", "https://hooks.example.org/x"))
    _run(_tool("amtool"), "check-config", str(config))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    service = compose["alertmanager"]
    assert 's|ALERTMANAGER_WEBHOOK_URL|$${ALERTMANAGER_WEBHOOK_URL}|"' in service["command"][0]
    assert service["environment"]["ALERTMANAGER_WEBHOOK_URL"].startswith(
        "${ALERTMANAGER_WEBHOOK_URL:?"
    )
    assert "alertmanager" in compose["prometheus"]["depends_on"]
