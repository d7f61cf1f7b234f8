"""Prometheus metrics of one frontend, on a registry of its own (several apps may live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds; dense around the 50 ms objective.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "codecomp_request_latency_seconds", "End-to-end completion latency", buckets=LATENCY_BUCKETS, registry=r
        )
        self.requests = Counter("codecomp_requests_total", "Completion requests by outcome", ["outcome"], registry=r)
        self.model_latency = Histogram(
            "codecomp_model_latency_seconds", "Per-model batch latency", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.model_answers = Counter(
            "codecomp_model_answers_total", "Per-model answers by status (ok, late, error, shed)", ["model", "status"],
            registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "codecomp_batch_size", "Requests per batch", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.queue_depth = Gauge("codecomp_queue_depth", "Requests waiting per model", ["model"], registry=r)
        self.queue_wait = Histogram(
            "codecomp_queue_wait_seconds", "Per-model time a request waits in the queue before it is sent", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.cache = Counter("codecomp_cache_total", "Cache lookups by result", ["model", "result"], registry=r)
        self.degraded = Counter("codecomp_degraded_total", "Answers that were partial or missed a model", registry=r)
        self.restarts = Counter("codecomp_container_restarts_total", "Containers restarted", ["model"], registry=r)
        self.replicas = Gauge("codecomp_replicas", "Live replicas per model", ["model"], registry=r)
        self.store_degraded = Gauge(
            "codecomp_store_degraded", "1 while the shared feedback store (Redis) is unreachable", registry=r
        )
        self.store_buffered = Gauge("codecomp_store_buffered", "Feedback events waiting locally for it", registry=r)
