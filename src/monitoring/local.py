"""Prometheus on one machine: the stack's configuration and rules, pointed at 127.0.0.1.

`make monitor` and the tests run Debian's `prometheus` and `prometheus-pushgateway` with the
configuration this module writes from monitoring/prometheus/prometheus.yml, so that the scrape
jobs and the alert rules are the production ones, only with local targets.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Final

import yaml

MONITORING_DIR: Final = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"
STACK_CONFIG: Final = MONITORING_DIR / "prometheus.yml"


def local_config(
    prometheus_port: int,
    pushgateway_port: int,
    api_port: int | None = None,
    scrape_interval: str | None = None,
) -> dict[str, Any]:
    """The stack's configuration with local targets: Prometheus, the Pushgateway and the API.

    Airflow's statsd-exporter and Alertmanager do not run locally: their job and the alerting
    block are left out. The rule files become absolute paths to the repository's.
    """
    config: dict[str, Any] = yaml.safe_load(STACK_CONFIG.read_text(encoding="utf-8"))
    targets = {"prometheus": prometheus_port, "pushgateway": pushgateway_port}
    if api_port is not None:
        targets["rakuten-api"] = api_port
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            port = targets[job["job_name"]]
            jobs.append({**job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]})
    config["scrape_configs"] = jobs
    config["rule_files"] = [str(MONITORING_DIR / path) for path in config.get("rule_files", [])]
    config.pop("alerting", None)
    if scrape_interval is not None:
        config["global"] = {
            **config.get("global", {}),
            "scrape_interval": scrape_interval,
            "evaluation_interval": scrape_interval,
        }
    return config


def write_local_config(path: Path, **ports: Any) -> Path:
    """Write `local_config(**ports)` to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(local_config(**ports), sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    """`python -m src.monitoring.local --out FILE`: what `make monitor` runs."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="Configuration file to write.")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--pushgateway-port", type=int, default=9091)
    parser.add_argument("--api-port", type=int, default=8000)
    arguments = parser.parse_args()
    write_local_config(
        arguments.out,
        prometheus_port=arguments.prometheus_port,
        pushgateway_port=arguments.pushgateway_port,
        api_port=arguments.api_port,
    )


if __name__ == "__main__":
    main()
