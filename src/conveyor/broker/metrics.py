"""Every metric a broker exports (besides the transport's HTTP and process metrics).

Most are read from the broker's state when Prometheus scrapes (:meth:`BrokerMetrics.collect`):
offsets, sizes and segments per partition, roles, ISR health, replication lag, disk space.
What cannot be read back later is counted as it happens, each by one call from the code
that does it: messages and bytes in and out (``produced`` / ``fetched``; messages are
summed from the batch headers' ``records_count``, records are never decoded), flush
latency (the shared :class:`Flusher` reports each fsync round), ISR changes and
replication fetches (hooks for the replication work, exported at 0 until then), and
per-request latency and errors (the transport's request observer).

Cardinality: per partition, five gauges and four counters, none labelled by anything but
topic and partition; per follower of a led partition, one lag gauge. Counters of a
partition this broker no longer hosts are dropped at the next scrape. docs/monitoring.md
lists every metric; docs/benchmarks.md measures a broker with 800 partitions.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from conveyor.broker.fetchmemory import FetchMemory
from conveyor.broker.replica import Replica
from conveyor.broker.rules import ACKS_ALIASES
from conveyor.broker.share.metrics import ShareMetricsCollector
from conveyor.protocol.batch import HEADER_SIZE, LOG_OVERHEAD
from conveyor.protocol.replica import IsrChanged
from conveyor.protocol.txn import MARKERS_PATH
from conveyor.storage import PartitionLog
from conveyor.storage.cleaner import LogCleaner
from conveyor.transport.client import CLIENT_ID_HEADER
from conveyor.transport.clock import Clock
from conveyor.transport.kafka_server import ListenerStats
from conveyor.transport.limits import ConnectionLimiter
from conveyor.transport.metrics import LATENCY_BUCKETS_S, TableFamily, label_text

PartitionView = tuple[Replica, PartitionLog]  # a hosted replica (the core's view) and its log

# Logs per flush round: 1 is a round per request, more is group commit across partitions.
_ROUND_LOGS_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
_PARTITION_PATH: Final = "/v1/topics/{topic}/partitions/{partition}"
# (method, route template) -> the request kind in conveyor_broker_requests_total. A test
# checks every data route of broker_routes() is here, so a renamed route fails it.
REQUEST_KINDS: Final = {
    ("POST", _PARTITION_PATH + "/records"): "produce",
    ("GET", _PARTITION_PATH + "/records"): "fetch",
    ("GET", _PARTITION_PATH + "/offsets"): "offsets",
    ("DELETE", _PARTITION_PATH + "/records"): "delete_records",
    ("POST", "/v1/topics/{topic}/records"): "produce_routed",
    ("GET", "/v1/partitions"): "list_partitions",
    ("GET", "/internal/v1/replicas/listener"): "replica_listener",
    ("POST", "/v1/share-groups/{group}/topics/{topic}/receive"): "share_receive",
    ("POST", "/v1/share-groups/{group}/topics/{topic}/acknowledge"): "share_acknowledge",
    ("POST", "/internal/v1/share-state/read"): "share_state_read",
    ("POST", "/internal/v1/share-state/write"): "share_state_write",
    ("POST", MARKERS_PATH): "txn_markers",
}
_CLIENT_KINDS: Final = {
    "produce": "producer",
    "produce_routed": "producer",
    "fetch": "consumer",
    "share_receive": "consumer",
}
CLIENT_ACTIVE_WINDOW_S: Final = 60.0  # a client counts as active this long after a request
CLIENTS_TRACKED_MAX: Final = 10_000  # bounds the memory a flood of client ids can take
FLUSH_BUCKETS_S: Final = (
    0.0001,
    0.00025,
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
)
_ACKS: Final = (*sorted(set(ACKS_ALIASES.values())), "invalid")
_TP: Final = ("topic", "partition")
_TP_TUPLE: tuple[str, ...] = _TP
_TP_FOLLOWER: Final = ("topic", "partition", "follower")
_Labels = tuple[str, tuple[str, ...]]  # (rendered label set, label values)
_RECORDS_COUNT: Final = struct.Struct(">i")
_RECORDS_COUNT_POSITION: Final = 57  # the last field of the 61-byte v2 batch header
_BATCH_LENGTH: Final = struct.Struct(">i")
_BATCH_LENGTH_POSITION: Final = 8  # after the base offset


class KafkaListenerView(Protocol):
    """What the metrics read of the Kafka listener (transport/kafka_server.KafkaListener)."""

    @property
    def stats(self) -> ListenerStats: ...

    @property
    def limiter(self) -> ConnectionLimiter: ...


def count_records(data: bytes | bytearray | memoryview) -> int:
    """Records in the whole batches of ``data``, from their headers' ``records_count``.

    One header read per batch; a trailing partial batch (a fetch may end with one) is not
    counted. Pure."""
    position, count, end = 0, 0, len(data)
    length_at, count_at = _BATCH_LENGTH.unpack_from, _RECORDS_COUNT.unpack_from
    while end - position >= HEADER_SIZE:  # on every produce and fetch: kept lean
        size_bytes = LOG_OVERHEAD + length_at(data, position + _BATCH_LENGTH_POSITION)[0]
        if size_bytes < HEADER_SIZE or position + size_bytes > end:
            break
        count += count_at(data, position + _RECORDS_COUNT_POSITION)[0]
        position += size_bytes
    return count


class BrokerMetrics:
    """The broker's metrics; ``BrokerService`` owns one, ``build_broker_app`` exports it."""

    def __init__(
        self,
        *,
        view: Callable[[], list[PartitionView]],
        fetch_memory: FetchMemory,
        cleaner: LogCleaner,
        data_dir: Path,
        clock: Clock,
    ) -> None:
        """Narrow dependencies: ``view`` lists the hosted replicas with their logs (read at
        scrape time), the fetch memory budget, the log cleaner's counts, the data dir (its
        disk), the one clock."""
        self._view = view
        self._fetch_memory = fetch_memory
        self._cleaner = cleaner
        self._data_dir = data_dir
        self._disk: tuple[int, int] | None = None  # (free, total) bytes: measure_disk
        self._clock = clock
        # (topic, partition) -> [messages in, bytes in, messages out, bytes out]
        self._traffic: dict[tuple[str, int], list[int]] = {}
        self._clients: dict[tuple[str, str], float] = {}  # (kind, client id) -> last seen
        self._request_counts: dict[str, int] = dict.fromkeys(REQUEST_KINDS.values(), 0)
        self._errors: dict[tuple[str, str], int] = {}
        self._label_cache: dict[tuple[str, int, int | None], _Labels] = {}
        self.produce_duration = Histogram(
            "conveyor_broker_produce_duration_seconds",
            "Produce requests to a partition, from routing to answer (acks=all includes "
            "waiting for the high watermark), by acks",
            ("acks",),
            buckets=LATENCY_BUCKETS_S,
            registry=None,
        )
        self._produce_by_acks = {acks: self.produce_duration.labels(acks) for acks in _ACKS}
        self.fetch_duration = Histogram(
            "conveyor_broker_fetch_duration_seconds",
            "Fetch requests, from routing to answer (includes the long-poll wait)",
            buckets=LATENCY_BUCKETS_S,
            registry=None,
        )
        self.replication_fetch_duration = Histogram(
            "conveyor_broker_replication_fetch_duration_seconds",
            "A follower's fetches from its leaders, round trip (0 until replication lands)",
            buckets=LATENCY_BUCKETS_S,
            registry=None,
        )
        self.flush_duration = Histogram(
            "conveyor_broker_flush_duration_seconds",
            "One fsync round of one partition log (its dirty segments and directory)",
            buckets=FLUSH_BUCKETS_S,
            registry=None,
        )
        self.flush_round_logs = Histogram(
            "conveyor_broker_flush_round_logs",
            "Partition logs one broker-wide flush round fsynced (its count: the rounds)",
            buckets=_ROUND_LOGS_BUCKETS,
            registry=None,
        )
        self.flush_rounds_inline = Counter(
            "conveyor_broker_flush_rounds_inline",
            "Flush rounds run on the event loop for a lone small produce (storage/flusher.py)",
            registry=None,
        )
        self.isr_shrinks = Counter(
            "conveyor_broker_isr_shrinks",
            "Followers removed from the ISR by this leader",
            registry=None,
        )
        self.isr_expands = Counter(
            "conveyor_broker_isr_expands",
            "Followers added back to the ISR by this leader",
            registry=None,
        )
        self.slow_consumers = Counter(
            "conveyor_broker_slow_consumer_closes",
            "Connections closed because a fetch answer was not read within the write "
            "deadline (fetch_write_timeout_ms)",
            registry=None,
        )
        self.kafka_requests = Counter(
            "conveyor_broker_kafka_requests",
            "Requests decoded by the Kafka listener, by API (before authentication checks)",
            ("api",),
            registry=None,
        )
        # set by the Kafka listener when it starts: its connection counts, exported below
        self.kafka_listener: KafkaListenerView | None = None
        self.share = ShareMetricsCollector()  # share groups (issue 23)

    def kafka_request(self, api: str) -> None:
        self.kafka_requests.labels(api).inc()

    # ---- counted as it happens (one call from the code that does it) ---------------------

    def produced(self, topic: str, partition: int, batches: bytes | memoryview) -> None:
        traffic = self._traffic.get((topic, partition))
        if traffic is None:
            traffic = self._traffic[(topic, partition)] = [0, 0, 0, 0]
        traffic[0] += count_records(batches)
        traffic[1] += len(batches)

    def fetched(self, topic: str, partition: int, batches: bytes) -> None:
        if not batches:
            return
        traffic = self._traffic.get((topic, partition))
        if traffic is None:
            traffic = self._traffic[(topic, partition)] = [0, 0, 0, 0]
        traffic[2] += count_records(batches)
        traffic[3] += len(batches)

    def slow_consumer_closed(self) -> None:
        self.slow_consumers.inc()

    def isr_changed(self, change: IsrChanged) -> None:
        if len(change.after) < len(change.before):
            self.isr_shrinks.inc()
        elif len(change.after) > len(change.before):
            self.isr_expands.inc()

    def flushed(self, seconds: float) -> None:
        """One fsync round of a log (the Flusher calls this on its threads)."""
        self.flush_duration.observe(seconds)

    def flush_round(self, logs: int) -> None:
        """One broker-wide flush round covered ``logs`` partition logs (flusher thread)."""
        self.flush_round_logs.observe(logs)

    def observe_replication_fetch(self, seconds: float) -> None:
        self.replication_fetch_duration.observe(seconds)

    def observe_request(
        self, request: web.Request, route: str, status: int, error_code: str | None, seconds: float
    ) -> None:
        """The transport calls this after every request (``transport.metrics.install``)."""
        kind = REQUEST_KINDS.get((request.method, route))
        if kind is None:
            return
        self._request_counts[kind] += 1
        if error_code is not None:
            key = (kind, error_code)
            self._errors[key] = self._errors.get(key, 0) + 1
        if kind == "produce":
            acks = ACKS_ALIASES.get(request.query.get("acks", "all"), "invalid")
            self._produce_by_acks[acks].observe(seconds)
        elif kind == "fetch":
            self.fetch_duration.observe(seconds)
        client_kind = _CLIENT_KINDS.get(kind)
        if client_kind is not None:
            self._seen(client_kind, request)

    def _seen(self, kind: str, request: web.Request) -> None:
        client = request.headers.get(CLIENT_ID_HEADER) or request.remote or "unknown"
        key = (kind, client[:64])
        if key not in self._clients and len(self._clients) >= CLIENTS_TRACKED_MAX:
            self._prune_clients(self._clock.now_ms() / 1000)
            if len(self._clients) >= CLIENTS_TRACKED_MAX:
                return  # saturated: the gauge reads at most the limit
        self._clients[key] = self._clock.now_ms() / 1000

    def _prune_clients(self, now: float) -> None:
        expired = [k for k, seen in self._clients.items() if now - seen > CLIENT_ACTIVE_WINDOW_S]
        for key in expired:
            del self._clients[key]

    # ---- read at scrape time -------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        partitions = self._view()
        yield from self._partition_metrics(partitions)
        yield from self._traffic_metrics({(r.tp.topic, r.tp.partition) for r, _ in partitions})
        yield from self._broker_metrics(partitions)
        yield from self._request_metrics()
        for histogram in (
            self.produce_duration,
            self.fetch_duration,
            self.replication_fetch_duration,
            self.flush_duration,
            self.flush_round_logs,
        ):
            yield from histogram.collect()
        yield from self.flush_rounds_inline.collect()
        yield from self.isr_shrinks.collect()
        yield from self.isr_expands.collect()
        yield from self.slow_consumers.collect()
        yield from self.kafka_requests.collect()
        yield from self._kafka_listener_metrics()
        yield from self.share.collect()
        yield from self.share.collect()

    def _kafka_listener_metrics(self) -> Iterable[Metric]:
        listener = self.kafka_listener
        if listener is None:
            return
        stats = listener.stats
        open_now = _gauge("kafka_connections", "Open connections of the Kafka listener")
        open_now.add_metric([], listener.limiter.open_count)
        yield open_now
        for name, text, value in (
            (
                "kafka_connections_total",
                "Connections the Kafka listener accepted",
                stats.connections_total,
            ),
            (
                "kafka_connections_refused_total",
                "Connections refused by the listener's connection limits",
                sum(listener.limiter.refused_count.values()),
            ),
            (
                "kafka_protocol_errors_total",
                "Kafka connections closed for a bad frame or a request that cannot be answered",
                stats.protocol_errors,
            ),
            (
                "kafka_slow_readers_closed_total",
                "Kafka connections reset because an answer was not read within the write deadline",
                stats.slow_readers_closed,
            ),
            (
                "kafka_idle_closed_total",
                "Kafka connections closed after the idle timeout",
                stats.idle_closed,
            ),
        ):
            counter = _counter(name.removesuffix("_total"), text)
            counter.add_metric([], value)
            yield counter

    def _labels(self, topic: str, partition: int, follower: int | None = None) -> _Labels:
        """Rendered label sets, made once per partition (and follower), not per scrape."""
        key = (topic, partition, follower)
        labels = self._label_cache.get(key)
        if labels is None:
            if follower is None:
                values: tuple[str, ...] = (topic, str(partition))
                labels = (label_text(_TP, values), values)
            else:
                values = (topic, str(partition), str(follower))
                labels = (label_text(_TP_FOLLOWER, values), values)
            self._label_cache[key] = labels
        return labels

    def _partition_metrics(self, partitions: list[PartitionView]) -> Iterable[Metric]:
        start = _table("partition_log_start_offset", "First offset still in the log")
        end = _table("partition_log_end_offset", "Offset the next append gets")
        high = _table(
            "partition_high_watermark",
            "Offset below which consumers may read (partitions this broker leads)",
        )
        size = _table("partition_size_bytes", "Bytes of the partition's segments")
        segments = _table("partition_segments", "Segment files of the partition")
        lag = _table(
            "replica_lag_messages",
            "Leader's log end offset minus the durable offset a follower last reported "
            "(the whole log while it has reported nothing)",
            labels=_TP_FOLLOWER,
        )
        for partition, log in partitions:
            tp = partition.tp
            rendered, values = self._labels(tp.topic, tp.partition)
            log_end_offset = log.log_end_offset
            start.add_row(rendered, values, log.log_start_offset)
            end.add_row(rendered, values, log_end_offset)
            size.add_row(rendered, values, log.size_bytes)
            segments.add_row(rendered, values, log.segment_count)
            if partition.role != "leader":
                continue
            high.add_row(rendered, values, partition.high_watermark)
            reported = partition.follower_durable_offsets
            for follower in partition.state.replicas:
                if follower != partition.broker_id:
                    behind = max(0, log_end_offset - reported.get(follower, 0))
                    lag.add_row(*self._labels(tp.topic, tp.partition, follower), behind)
        return (start, end, high, size, segments, lag)

    def _traffic_metrics(self, hosted: set[tuple[str, int]]) -> Iterable[Metric]:
        families = (
            _table("messages_in", "Records appended by produce requests", "counter"),
            _table("bytes_in", "Record-batch bytes appended by produce requests", "counter"),
            _table("messages_out", "Records returned by fetch requests", "counter"),
            _table("bytes_out", "Record-batch bytes returned by fetch requests", "counter"),
        )
        for key in [k for k in self._traffic if k not in hosted]:
            del self._traffic[key]  # moved away or deleted: its series ends
        for cached in [k for k in self._label_cache if (k[0], k[1]) not in hosted]:
            del self._label_cache[cached]
        for (topic, partition), counts in self._traffic.items():
            rendered, values = self._labels(topic, partition)
            for family, value in zip(families, counts, strict=True):
                family.add_row(rendered, values, value)
        return families

    def _broker_metrics(self, views: list[PartitionView]) -> Iterable[Metric]:
        partitions = [replica for replica, _ in views]
        roles = _gauge("partitions", "Partition replicas hosted, by role", ("role",))
        led = [p for p in partitions if p.role == "leader"]
        roles.add_metric(("leader",), len(led))
        roles.add_metric(("follower",), len(partitions) - len(led))
        under = _gauge(
            "under_replicated_partitions", "Led partitions whose ISR is smaller than replicas"
        )
        under.add_metric((), sum(1 for p in led if len(p.state.isr) < len(p.state.replicas)))
        under_min = _gauge(
            "under_min_isr_partitions",
            "Led partitions whose ISR is below min_insync_replicas (acks=all fails)",
        )
        under_min.add_metric(
            (), sum(1 for p in led if len(p.state.isr) < p.state.min_insync_replicas)
        )
        failed = _gauge(
            "failed_partitions",
            "Hosted partitions whose log cannot take writes (an fsync error: read-only until "
            "a restart; or a full disk: until space returns); leadership moves away",
        )
        failed.add_metric((), sum(1 for p in partitions if p.log_failed))
        memory = self._fetch_memory
        held = _gauge("fetch_memory_bytes", "Fetch answers read from the log and not yet written")
        held.add_metric((), memory.held)
        cut = _counter(
            "fetch_memory_cut",
            "Fetch answers whose read limit the fetch memory budget lowered (once per answer)",
        )
        cut.add_metric((), memory.cut)
        yield from (roles, under, under_min, failed, held, cut)
        yield from self._cleaner_metrics()
        yield from self._disk_metrics()
        yield from self._client_metrics()

    def _cleaner_metrics(self) -> Iterable[Metric]:
        cleaner = self._cleaner
        totals = cleaner.totals
        for name, documentation, value in (
            ("cleaner_passes", "Log cleaner passes over a compacted log", cleaner.passes),
            ("cleaner_failures", "Log cleaner passes that failed (bad data)", cleaner.failures),
            ("cleaner_bytes_read", "Bytes the log cleaner read", totals.bytes_read),
            ("cleaner_bytes_written", "Bytes the log cleaner wrote", totals.bytes_written),
            ("cleaner_records_removed", "Records compaction removed", totals.records_removed),
            ("cleaner_seconds", "Time spent cleaning", totals.seconds),
        ):
            family = _counter(name, documentation)
            family.add_metric((), value)
            yield family

    async def measure_disk(self) -> None:
        """Measure the data dir's filesystem in a worker thread (``statvfs`` can block: a
        slow or failing disk, a network filesystem), for the next scrapes; the heartbeat
        round calls it. A data dir that cannot be read leaves no disk series (the failed
        partitions and error metrics say why)."""
        try:
            stat = await asyncio.to_thread(os.statvfs, self._data_dir)
        except OSError:
            self._disk = None
            return
        self._disk = (stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize)

    def _disk_metrics(self) -> Iterable[Metric]:
        # What the last heartbeat round measured: never a system call on the event loop.
        if self._disk is None:
            return
        free_bytes, total_bytes = self._disk
        free = _gauge("disk_free_bytes", "Bytes available to the broker on its data dir's disk")
        free.add_metric((), free_bytes)
        total = _gauge("disk_total_bytes", "Size of the filesystem holding the data dir")
        total.add_metric((), total_bytes)
        yield from (free, total)

    def _client_metrics(self) -> Iterable[Metric]:
        self._prune_clients(self._clock.now_ms() / 1000)
        active = _gauge(
            "clients_active",
            f"Distinct clients (by client id, else address) that produced or fetched in the "
            f"last {CLIENT_ACTIVE_WINDOW_S:.0f} s",
            ("kind",),
        )
        for kind in ("producer", "consumer"):
            active.add_metric((kind,), sum(1 for k, _ in self._clients if k == kind))
        yield active

    def _request_metrics(self) -> Iterable[Metric]:
        requests = _counter("requests", "Data-path requests answered, by kind", ("request",))
        for kind, count in self._request_counts.items():
            requests.add_metric((kind,), count)
        errors = _counter(
            "request_errors",
            "Data-path requests that failed, by kind and error code",
            ("request", "code"),
        )
        for (kind, code), count in sorted(self._errors.items()):
            errors.add_metric((kind, code), count)
        yield from (requests, errors)


def _table(
    name: str, documentation: str, typ: str = "gauge", labels: tuple[str, ...] = _TP_TUPLE
) -> TableFamily:
    return TableFamily(f"conveyor_broker_{name}", documentation, typ, labels)


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"conveyor_broker_{name}", documentation, labels=list(labels))


def _counter(name: str, documentation: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"conveyor_broker_{name}", documentation, labels=list(labels))
