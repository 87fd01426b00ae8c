"""Optional metrics hooks of the client library: off unless the application turns them on.

The producer's sender and the consumer's fetcher report each batch here (one call per
batch, never per record); with no hooks registered that call returns at once. To export
the numbers with prometheus_client, from the application's own registry::

    from prometheus_client import CollectorRegistry
    from conveyor.client.metrics import PrometheusClientMetrics

    registry = CollectorRegistry()          # or leave out: prometheus_client's default
    PrometheusClientMetrics(registry).enable()

Any object with the methods of :class:`ClientMetricsHooks` can be registered instead
(``add_hooks``), to feed statsd, logs or a test. Hooks are process-wide: every producer
and consumer in the process reports to them. They run on the clients' I/O threads, so
they must be quick and thread-safe. docs/monitoring.md lists the exported metrics.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# Batch sizes from one small record to the default batch_size (512 KiB) and beyond.
BATCH_SIZE_BUCKETS_BYTES: Final = (
    128.0,
    512.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    524288.0,
    1048576.0,
    4194304.0,
)
REQUEST_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class ClientMetricsHooks(Protocol):
    def batch_sent(self, topic: str, records: int, size_bytes: int, seconds: float) -> None:
        """A produce request succeeded: its batch, and the request's round trip."""

    def batch_retried(self, topic: str, error_code: str) -> None:
        """A produce request failed with a retriable error; the batch will be sent again."""

    def batch_failed(self, topic: str, records: int, error_code: str) -> None:
        """A batch's records failed for good (their futures raise)."""

    def records_fetched(self, topic: str, records: int, size_bytes: int) -> None:
        """A fetch response arrived with ``records`` records in ``size_bytes`` bytes."""


_hooks: tuple[ClientMetricsHooks, ...] = ()
_hooks_lock = threading.Lock()


def add_hooks(hooks: ClientMetricsHooks) -> None:
    global _hooks  # noqa: PLW0603 -- process-wide by design (module docstring)
    with _hooks_lock:
        if hooks not in _hooks:
            _hooks = (*_hooks, hooks)


def remove_hooks(hooks: ClientMetricsHooks) -> None:
    global _hooks  # noqa: PLW0603
    with _hooks_lock:
        _hooks = tuple(h for h in _hooks if h is not hooks)


# ---- what the client calls (one call per batch) ----------------------------------------


def batch_sent(topic: str, records: int, size_bytes: int, seconds: float) -> None:
    for hooks in _hooks:
        hooks.batch_sent(topic, records, size_bytes, seconds)


def batch_retried(topic: str, error_code: str) -> None:
    for hooks in _hooks:
        hooks.batch_retried(topic, error_code)


def batch_failed(topic: str, records: int, error_code: str) -> None:
    for hooks in _hooks:
        hooks.batch_failed(topic, records, error_code)


def records_fetched(topic: str, records: int, size_bytes: int) -> None:
    for hooks in _hooks:
        hooks.records_fetched(topic, records, size_bytes)


class PrometheusClientMetrics:
    """:class:`ClientMetricsHooks` that count into prometheus_client metrics.

    ``registry`` None means prometheus_client's default registry (what its
    ``start_http_server`` exports). Labelled by topic: a client's topics are few."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        target = REGISTRY if registry is None else registry
        self.records_sent = Counter(
            "conveyor_client_records_sent",
            "Records acknowledged by the broker",
            ("topic",),
            registry=target,
        )
        self.batch_size = Histogram(
            "conveyor_client_batch_size_bytes",
            "Encoded size of each batch the producer sent successfully",
            ("topic",),
            buckets=BATCH_SIZE_BUCKETS_BYTES,
            registry=target,
        )
        self.request_duration = Histogram(
            "conveyor_client_produce_request_duration_seconds",
            "Round trip of each successful produce request (acks=all includes replication)",
            ("topic",),
            buckets=REQUEST_BUCKETS_S,
            registry=target,
        )
        self.retries = Counter(
            "conveyor_client_produce_retries",
            "Produce requests that failed retriably and were retried, by error code",
            ("topic", "code"),
            registry=target,
        )
        self.records_failed = Counter(
            "conveyor_client_records_failed",
            "Records whose delivery failed for good, by error code",
            ("topic", "code"),
            registry=target,
        )
        self.records_fetched_ = Counter(
            "conveyor_client_records_fetched",
            "Records the consumer received",
            ("topic",),
            registry=target,
        )
        self.fetched_bytes = Counter(
            "conveyor_client_fetched_bytes",
            "Record-batch bytes the consumer received",
            ("topic",),
            registry=target,
        )

    def enable(self) -> PrometheusClientMetrics:
        add_hooks(self)
        return self

    def disable(self) -> None:
        remove_hooks(self)

    def batch_sent(self, topic: str, records: int, size_bytes: int, seconds: float) -> None:
        self.records_sent.labels(topic).inc(records)
        self.batch_size.labels(topic).observe(size_bytes)
        self.request_duration.labels(topic).observe(seconds)

    def batch_retried(self, topic: str, error_code: str) -> None:
        self.retries.labels(topic, error_code).inc()

    def batch_failed(self, topic: str, records: int, error_code: str) -> None:
        self.records_failed.labels(topic, error_code).inc(records)

    def records_fetched(self, topic: str, records: int, size_bytes: int) -> None:
        self.records_fetched_.labels(topic).inc(records)
        self.fetched_bytes.labels(topic).inc(size_bytes)
