"""The server's Prometheus metrics, in a registry of its own (one per app, so tests and several
apps in one process never share counters). Every series carries the task as `model`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """Request counts, latencies, batch sizes, errors, queue depth and captures per model."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "liveml_requests", "Prediction requests by outcome", ["model", "status"], registry=r
        )
        self.latency = Histogram(
            "liveml_request_seconds",
            "Prediction request latency (read, decode, queue, model, answer)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "liveml_inference_seconds",
            "Model call time per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "liveml_batch_size",
            "Inputs per model call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "liveml_errors", "Failed requests by error code", ["model", "code"], registry=r
        )
        self.queue_depth = Gauge(
            "liveml_queue_depth", "Inputs waiting for a batch", ["model"], registry=r
        )
        self.decoding = Gauge(
            "liveml_decoding_inputs",
            "Inputs being decoded or waiting for a decode thread (all models)",
            registry=r,
        )
        self.body_bytes = Gauge(
            "liveml_request_body_bytes",
            "Request-body bytes held in memory by requests in progress (max_inflight_bytes)",
            registry=r,
        )
        self.captured = Counter(
            "liveml_captured_inputs", "Inputs queued for the capture folder", ["model"], registry=r
        )
        self.reloads = Counter(
            "liveml_model_reloads",
            "Hot reloads of a model whose export changed, by outcome (ok, failed)",
            ["model", "outcome"],
            registry=r,
        )
        self.info = Gauge(
            "liveml_model_info",
            "The served model (value 1): name, fingerprint, runtime",
            ["model", "name", "fingerprint", "runtime"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
