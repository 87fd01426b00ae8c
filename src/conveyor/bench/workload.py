"""The client benchmarks' settings, results and the arithmetic on them: pure, no I/O.

``conveyor bench produce|consume|e2e`` (``bench/client.py``) runs producer and consumer
*processes* (``bench/workers.py``) against a cluster; what they measure comes back here to
be summarized: rates over the whole run (first start to last finish, so a straggler
counts), latency percentiles over every sample of every process, and error counts.

Latencies are kept in nanoseconds while measured and reported in microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

Mode = Literal["produce", "consume", "e2e"]
MODES: Final[tuple[Mode, ...]] = ("produce", "consume", "e2e")
TIMESTAMP_BYTES: Final = 8  # e2e: each value starts with the producer's time.time_ns()
MB: Final = 1_000_000


CLIENTS = ("conveyor", "conveyor-kafka", "confluent-kafka", "aiokafka")


@dataclass(frozen=True, slots=True)
class ClientBenchConfig:
    """One run of ``conveyor bench produce|consume|e2e``; see the CLI help for each."""

    mode: Mode
    message_bytes: int = 100
    count: int = 100_000  # messages in all (produce, consume); e2e uses rate * duration
    duration_s: float | None = None  # produce/e2e: run for this long instead of ``count``
    rate: int | None = None  # messages/s in all, spread over producers; None: as fast as possible
    keys: int = 8  # distinct keys, cycled; 0: no keys (the sticky partitioner spreads)
    partitions: int = 8
    replication_factor: int | None = None  # None: the cluster's default
    acks: str = "all"
    producers: int = 1
    consumers: int = 1
    batch_bytes: int = 512 * 1024
    linger_ms: int = 5
    # conveyor clients: max_in_flight_requests_per_connection (batches per partition)
    max_in_flight: int | None = None  # None: the producer's default (client/producer.py)
    sequential: bool = False  # wait for each record's ack before the next send (W3)
    fetch_max_bytes: int = 4 * 1024 * 1024
    fetch_max_wait_ms: int = 100
    sample_every: int = 64  # produce-ack latency: time one send in this many
    topic: str | None = None  # None: a new topic per run
    # conveyor (its Producer, over Kafka as every Conveyor client; consumers: HTTP fetch
    # readers, bench/fetch.py) | conveyor-kafka (its Producer and Consumer) |
    # confluent-kafka | aiokafka
    client: str = "conveyor"
    # conveyor: Producer.send_many per progress step, not send; conveyor-kafka's
    # consumers: poll_batch, not poll
    batch_api: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if self.client not in CLIENTS:
            raise ValueError(f"client must be one of {CLIENTS}")
        if self.message_bytes < (TIMESTAMP_BYTES if self.mode == "e2e" else 0):
            raise ValueError(f"e2e needs messages of at least {TIMESTAMP_BYTES} bytes")
        positive = ("count", "partitions", "producers", "consumers", "batch_bytes")
        for name in (*positive, "sample_every", "fetch_max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("max_in_flight must be positive")
        if self.keys < 0 or self.linger_ms < 0 or self.fetch_max_wait_ms < 0:
            raise ValueError("keys, linger_ms and fetch_max_wait_ms must be >= 0")
        if self.mode == "e2e" and self.rate is None:
            raise ValueError("e2e needs a rate (messages/s)")
        if self.rate is not None and self.rate < 1:
            raise ValueError("rate must be positive")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration_s must be positive")

    def planned_count(self) -> int | None:
        """Messages the producers will send in all; None when bounded only by time."""
        if self.duration_s is None:
            return self.count
        if self.rate is not None:
            return math.ceil(self.rate * self.duration_s)
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` items over ``parts`` workers, the first ones taking one more when uneven."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def assign_partitions(partitions: int, consumers: int) -> list[list[int]]:
    """Manual assignment, range style: consumer ``i`` reads a contiguous slice. A consumer
    may get none when there are more consumers than partitions."""
    sizes = split_evenly(partitions, consumers)
    out: list[list[int]] = []
    start = 0
    for size in sizes:
        out.append(list(range(start, start + size)))
        start += size
    return out


def due_count(rate: float, elapsed_s: float) -> int:
    """Messages a paced sender should have sent ``elapsed_s`` after it started."""
    return int(rate * elapsed_s) + 1 if elapsed_s >= 0 else 0


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of a set of latency samples, in microseconds (nearest rank)."""

    count: int
    p50_us: float
    p95_us: float
    p99_us: float
    max_us: float
    mean_us: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of already sorted values (``fraction`` in [0, 1])."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_latencies(samples_ns: Sequence[int]) -> LatencySummary | None:
    if not samples_ns:
        return None
    ordered = sorted(samples_ns)

    def us(fraction: float) -> float:
        return percentile(ordered, fraction) / 1000

    return LatencySummary(
        count=len(ordered),
        p50_us=us(0.50),
        p95_us=us(0.95),
        p99_us=us(0.99),
        max_us=ordered[-1] / 1000,
        mean_us=sum(ordered) / len(ordered) / 1000,
    )


@dataclass(slots=True)
class WorkerReport:
    """What one producer or consumer process sends back to the orchestrator."""

    role: Literal["producer", "consumer"]
    index: int
    messages: int = 0
    payload_bytes: int = 0
    errors: int = 0
    started_s: float = 0.0  # time.time(): comparable across processes
    finished_s: float = 0.0
    cpu_s: float = 0.0  # user + system CPU of the process while measuring
    latencies_ns: list[int] = field(default_factory=list)  # produce ack or end to end
    error_messages: list[str] = field(default_factory=list)  # the first few, for the report


@dataclass(frozen=True, slots=True)
class Throughput:
    messages: int
    payload_bytes: int
    seconds: float
    errors: int
    cpu_s: float

    @property
    def msg_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / MB / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "payload_bytes": self.payload_bytes,
            "seconds": round(self.seconds, 6),
            "msg_per_s": round(self.msg_per_s, 1),
            "mb_per_s": round(self.mb_per_s, 3),
            "errors": self.errors,
            "client_cpu_s": round(self.cpu_s, 3),
        }


def combine(reports: Sequence[WorkerReport]) -> Throughput | None:
    """The rate of a set of workers: all their messages over first start to last finish."""
    if not reports:
        return None
    started = min(r.started_s for r in reports)
    finished = max(r.finished_s for r in reports)
    return Throughput(
        messages=sum(r.messages for r in reports),
        payload_bytes=sum(r.payload_bytes for r in reports),
        seconds=max(finished - started, 0.0),
        errors=sum(r.errors for r in reports),
        cpu_s=sum(r.cpu_s for r in reports),
    )


@dataclass(frozen=True, slots=True)
class ClientBenchResult:
    """The outcome of one run; ``to_dict`` is the ``--json`` output."""

    config: ClientBenchConfig
    bootstrap: str
    brokers: int | None  # None when the cluster was not started by the benchmark
    produce: Throughput | None
    consume: Throughput | None
    produce_latency: LatencySummary | None
    e2e_latency: LatencySummary | None
    broker_cpu_s: float | None  # CPU the brokers used during the run (local clusters)
    broker_rss_bytes_max: int | None
    error_messages: tuple[str, ...]
    machine: dict[str, Any]

    @property
    def errors(self) -> int:
        return sum(t.errors for t in (self.produce, self.consume) if t is not None)

    def to_dict(self) -> dict[str, Any]:
        def opt(value: Throughput | LatencySummary | None) -> dict[str, Any] | None:
            return None if value is None else value.to_dict()

        return {
            "mode": self.config.mode,
            "config": self.config.to_dict(),
            "bootstrap": self.bootstrap,
            "brokers": self.brokers,
            "produce": opt(self.produce),
            "consume": opt(self.consume),
            "produce_latency_us": opt(self.produce_latency),
            "e2e_latency_us": opt(self.e2e_latency),
            "errors": self.errors,
            "error_messages": list(self.error_messages),
            "broker_cpu_s": self.broker_cpu_s,
            "broker_rss_bytes_max": self.broker_rss_bytes_max,
            "machine": self.machine,
        }
