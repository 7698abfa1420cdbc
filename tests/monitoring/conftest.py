"""A real Prometheus (Debian's binary) scraping the session's real Pushgateway (`pushgateway`
in tests/conftest.py, shared with the DAG tests), once per test session.

It listens on a free port of 127.0.0.1 and runs the repository's scrape jobs and alert
rules (src/monitoring/local.py) with a 1 s scrape interval, so that a pushed metric is queryable
a second or two later.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from src.monitoring.local import write_local_config
from tests.servers import Server, free_port, started, wait_until_healthy

SCRAPE_SECONDS = 1


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {name}; .ci/run installs it)")
    return path


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus: its URL and its HTTP API."""

    url: str

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH?PARAMS: the `data` of a successful answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, seconds: int = 600) -> list[dict[str, Any]]:
        """The result of a range query over the last `seconds`, one point a second."""
        now = time.time()
        data = self.api("query_range", query=expr, start=str(now - seconds), end=str(now), step="1")
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The result of `expr` once it is not empty (a scrape or two after a push)."""
        deadline = time.monotonic() + timeout
        while not (result := self.query(expr)):
            assert time.monotonic() < deadline, f"no data for {expr} after {timeout} s"
            time.sleep(SCRAPE_SECONDS / 2)
        return result


@pytest.fixture(scope="session")
def prometheus(pushgateway: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus scraping `pushgateway` every second, with the repository's rules."""
    binary = _binary("prometheus")
    root = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = write_local_config(
        root / "prometheus.yml",
        prometheus_port=port,
        pushgateway_port=int(pushgateway.rsplit(":", 1)[1]),
        scrape_interval=f"{SCRAPE_SECONDS}s",
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with started(command, root / "prometheus.log", dict(os.environ)) as process:
        server = Server(process, f"http://127.0.0.1:{port}", root / "prometheus.log")
        yield Prometheus(wait_until_healthy(server, "/-/ready"))


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def gateway_samples(url: str) -> Samples:
    """Every sample the Pushgateway exposes: (name, labels) -> value."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def step_samples(url: str, step: str) -> dict[str, dict[str, str]]:
    """The metrics of one step's group on the gateway: name -> labels (first sample)."""
    found: dict[str, dict[str, str]] = {}
    for (name, labels), _ in gateway_samples(url).items():
        if dict(labels).get("step") == step and name.startswith("rakuten_"):
            found.setdefault(name, dict(labels))
    return found
