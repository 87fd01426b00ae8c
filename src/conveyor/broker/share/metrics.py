"""The share groups' metrics on a broker (docs/monitoring.md#share-groups).

Counted as it happens (one call from the manager): records delivered and redelivered,
acknowledgements by type, lock expiries, records dead-lettered, and the time from a
record's acquisition to its accept. Read at scrape time from the share-partitions this
broker leads: records in flight and available, and the oldest lock's age. Labelled by
group only (and ``type`` for acknowledgements): a group's figures are the sum over its
partitions and brokers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from conveyor.protocol.messages import SharePartitionStats
from conveyor.transport.metrics import LATENCY_BUCKETS_S


class ShareMetricsCollector:
    def __init__(self, stats: Callable[[], list[SharePartitionStats]] | None = None) -> None:
        self.stats = stats  # set once the manager exists
        group = ("group",)
        self.delivered_records = Counter(
            "conveyor_broker_share_delivered_records",
            "Records acquired by share-group members (first deliveries and redeliveries)",
            group,
            registry=None,
        )
        self.redelivered_records = Counter(
            "conveyor_broker_share_redelivered_records",
            "Records delivered again (delivery count above 1)",
            group,
            registry=None,
        )
        self.acknowledged_records = Counter(
            "conveyor_broker_share_acknowledged_records",
            "Records acknowledged, by type (accept, release, reject)",
            ("group", "type"),
            registry=None,
        )
        self.lock_expired_records = Counter(
            "conveyor_broker_share_lock_expired_records",
            "Records whose acquisition lock expired before an acknowledgement",
            group,
            registry=None,
        )
        self.dead_lettered_records = Counter(
            "conveyor_broker_share_dead_lettered_records",
            "Records written to the group's dead-letter topic",
            group,
            registry=None,
        )
        self.ack_latency_seconds = Histogram(
            "conveyor_broker_share_ack_latency_seconds",
            "From a record's acquisition to its accept (processing time plus transit)",
            group,
            buckets=LATENCY_BUCKETS_S,
            registry=None,
        )

    # ---- the manager's calls -------------------------------------------------------------

    def delivered(self, group: str, records: int, redelivered: int) -> None:
        self.delivered_records.labels(group).inc(records)
        if redelivered:
            self.redelivered_records.labels(group).inc(redelivered)

    def acknowledged(self, group: str, kind: str, records: int) -> None:
        self.acknowledged_records.labels(group, kind).inc(records)

    def ack_latency(self, group: str, seconds: float) -> None:
        self.ack_latency_seconds.labels(group).observe(seconds)

    def lock_expired(self, group: str, records: int) -> None:
        self.lock_expired_records.labels(group).inc(records)

    def dead_lettered(self, group: str, records: int) -> None:
        self.dead_lettered_records.labels(group).inc(records)

    # ---- scrape --------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        for counter in (
            self.delivered_records,
            self.redelivered_records,
            self.acknowledged_records,
            self.lock_expired_records,
            self.dead_lettered_records,
        ):
            yield from counter.collect()
        yield from self.ack_latency_seconds.collect()
        in_flight = GaugeMetricFamily(
            "conveyor_broker_share_in_flight_records",
            "Records acquired and not yet acknowledged, in share-partitions this broker leads",
            labels=["group"],
        )
        available = GaugeMetricFamily(
            "conveyor_broker_share_available_records",
            "Records in the window ready for delivery (or waiting for a not-before time)",
            labels=["group"],
        )
        oldest = GaugeMetricFamily(
            "conveyor_broker_share_oldest_in_flight_age_seconds",
            "Age of the oldest lock held in a share-partition this broker leads",
            labels=["group"],
        )
        totals: dict[str, list[float]] = {}
        for row in self.stats() if self.stats is not None else []:
            total = totals.setdefault(row.group, [0, 0, 0])
            total[0] += row.in_flight
            total[1] += row.available
            if row.oldest_in_flight_age_ms is not None:
                total[2] = max(total[2], row.oldest_in_flight_age_ms / 1000)
        for group, (flying, ready, age) in sorted(totals.items()):
            in_flight.add_metric([group], flying)
            available.add_metric([group], ready)
            oldest.add_metric([group], age)
        yield from (in_flight, available, oldest)
