"""The API's Prometheus metrics, exposed at /metrics for Prometheus to scrape.

Each app gets its own registry, so that several apps in one process (the tests) do not collide.
The predicted types and their probabilities are the live signal of drift: a shift in the mix of
types, or in how sure the model is, shows on the dashboard before any label comes back.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from src.db.store import ModelRef
from src.serving.batching import BatchStats

LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROBABILITY_BUCKETS: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class ApiMetrics:
    """Requests, latency, batches, back-pressure, predictions and the served model, in one
    registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rakuten_api_requests",
            "HTTP requests answered, by route template, method and status code",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rakuten_api_request_duration_seconds",
            "Time to answer a request, by route template",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "rakuten_api_predictions",
            "Products classified by /predict, by predicted type",
            ["prdtypecode"],
            registry=self.registry,
        )
        self.probability = Histogram(
            "rakuten_api_prediction_probability",
            "The probability of the predicted type (the model's confidence)",
            buckets=PROBABILITY_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "rakuten_api_model_info",
            "The model version being served (value 1)",
            ["name", "version", "alias"],
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "rakuten_api_model_loaded",
            "1 when a model is loaded and /predict can answer",
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "rakuten_api_model_swaps",
            "Times a new model version was loaded (start-up, promotion, rollback)",
            registry=self.registry,
        )
        self.batch_listings = Histogram(
            "rakuten_api_batch_listings",
            "Listings scored per model call (micro-batching gathers concurrent requests)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_duration = Histogram(
            "rakuten_api_batch_duration_seconds",
            "Time of one model call on a batch",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queued_listings = Gauge(
            "rakuten_api_queued_listings",
            "Listings waiting to be scored",
            registry=self.registry,
        )
        self.overloaded = Counter(
            "rakuten_api_overloaded",
            "Requests refused with 503 because too many listings were waiting (back-pressure)",
            registry=self.registry,
        )
        self.store_errors = Counter(
            "rakuten_api_store_errors",
            "Calls that could not be recorded in the predictions store",
            registry=self.registry,
        )

    def serving(self, ref: ModelRef) -> None:
        """Show `ref` as the served version."""
        self.model_info.clear()
        self.model_info.labels(ref.name, ref.version, ref.alias or "").set(1)
        self.model_loaded.set(1)
        self.model_swaps.inc()

    def batched(self, batch: BatchStats) -> None:
        """Count one model call on a batch."""
        self.batch_listings.observe(batch.items)
        self.batch_duration.observe(batch.seconds)

    def predicted(self, prdtypecode: int, probability: float) -> None:
        """Count one prediction."""
        self.predictions.labels(str(prdtypecode)).inc()
        self.probability.observe(probability)
