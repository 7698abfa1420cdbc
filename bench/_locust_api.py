"""The locust user of bench_api.py: POSTs one fixed body to one path, as fast as it is answered
(BENCH_WAIT_SECONDS=0) or waiting that long between requests.

Set by bench_api.py through the environment: BENCH_PATH, BENCH_BODY_FILE (the JSON body),
BENCH_HEADERS (a JSON object), BENCH_WAIT_SECONDS. A 503 (the API's deliberate back-pressure)
is a failure named "503 overloaded", so the bench can tell it from any other failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from locust import HttpUser, constant, task

PATH = os.environ.get("BENCH_PATH", "/predict")
BODY = Path(os.environ["BENCH_BODY_FILE"]).read_bytes() if "BENCH_BODY_FILE" in os.environ else b""
HEADERS = {"Content-Type": "application/json", **json.loads(os.environ.get("BENCH_HEADERS", "{}"))}


class Client(HttpUser):
    """One client of the API under test."""

    wait_time = constant(float(os.environ.get("BENCH_WAIT_SECONDS", "0")))

    @task
    def score(self) -> None:
        """One scoring request."""
        with self.client.post(
            PATH, data=BODY, headers=HEADERS, name=PATH, catch_response=True
        ) as response:
            if response.status_code == 503:
                response.failure("503 overloaded")
            elif response.status_code != 200:
                response.failure(f"status {response.status_code}")
