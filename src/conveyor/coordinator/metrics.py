"""Every metric the coordinator exports (besides the transport's HTTP and process metrics).

Most are read from the current :class:`ClusterState` when Prometheus scrapes
(:meth:`CoordinatorMetrics.collect`): brokers, topics, partitions and their health, the
offsets brokers report, committed offsets and consumer lag. Events that the state does not
keep are counted from each applied transition (:meth:`on_transition`, one call from the
service shell): leader elections and how long the partition went without a leader, ISR
shrinks and expands, brokers declared dead, missed broker heartbeats. Consumer groups
(issue 5) add rebalances and member expirations through :meth:`rebalanced` and
:meth:`member_expired`; until then they stay 0.

Lag = the partition's log end offset in its leader's latest report minus the group's
committed offset: the messages the group has not consumed yet (the seed's "messages in the
queue"). docs/monitoring.md lists every metric with its labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from aiohttp import web
from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from conveyor.coordinator.model import (
    BrokerRecord,
    BrokerSeen,
    ClusterState,
    Partition,
    PartitionKey,
    PartitionRecord,
    TopicRemoved,
)
from conveyor.coordinator.state import Result
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import BrokerId, PartitionReport
from conveyor.transport.client import CLIENT_ID_HEADER
from conveyor.transport.clock import Clock

GROUP_ROUTES: Final = frozenset({"/v1/groups/{group}/offsets"})
CONSUMER_ACTIVE_WINDOW_S: Final = 60.0  # a consumer counts this long after its last call
CONSUMERS_TRACKED_MAX: Final = 10_000
ELECTION_BUCKETS_S: Final = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class CoordinatorMetrics:
    """The coordinator's metrics; ``CoordinatorService`` owns one, the app exports it."""

    def __init__(
        self,
        *,
        state: Callable[[], ClusterState],
        group_members: Callable[[], Mapping[str, int]],
        heartbeat_interval_ms: int,
        clock: Clock,
    ) -> None:
        """``state`` reads the current state (raises NOT_READY while loading);
        ``group_members`` the member count of each group with members."""
        self._state = state
        self._group_members = group_members
        # (acting now, epoch): set by the service; several coordinators on etcd (issue 20)
        self.role: Callable[[], tuple[bool, int]] = lambda: (True, 0)
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._clock = clock
        self.elections = _counter_obj("leader_elections", "Partitions given a new leader")
        self.unclean_elections = _counter_obj(
            "unclean_leader_elections", "Elections of a replica outside the ISR (data loss)"
        )
        self.isr_shrinks = _counter_obj("isr_shrinks", "Partitions whose ISR lost members")
        self.isr_expands = _counter_obj("isr_expands", "Partitions whose ISR gained members")
        self.broker_expirations = _counter_obj(
            "broker_expirations", "Brokers declared dead after a silent session timeout"
        )
        self.election_duration = Histogram(
            "conveyor_coordinator_leader_election_duration_seconds",
            "How long a partition went without a live leader before an election gave it "
            "one: from the dead leader's last heartbeat, or from going offline",
            buckets=ELECTION_BUCKETS_S,
            registry=None,
        )
        self._heartbeat_misses: dict[BrokerId, int] = {}
        self._rebalances: dict[str, int] = {}
        self._member_expirations: dict[str, int] = {}
        self._offline_since_ms: dict[PartitionKey, int] = {}
        self._consumers: dict[tuple[str, str], float] = {}  # (group, client) -> last seen

    # ---- counted as it happens -----------------------------------------------------------

    def on_transition(
        self, previous: ClusterState | None, result: Result[Any], now_ms: int
    ) -> None:
        """Count the events in one applied transition (``previous`` -> ``result.state``)."""
        if previous is None:
            return
        for record in result.records:
            match record:
                case PartitionRecord(partition=partition):
                    self._partition_changed(previous, result.state, partition, now_ms)
                case BrokerRecord(broker=broker):
                    known = previous.brokers.get(broker.broker_id)
                    if known is not None and known.alive and not broker.alive:
                        self.broker_expirations.inc()
                case BrokerSeen(broker_id=broker_id, now_ms=seen_ms, reports=reports):
                    if reports is not None:  # a heartbeat, not a grace period
                        self._heartbeat_seen(previous, broker_id, seen_ms)
                case TopicRemoved(name=name):
                    for key in [k for k in self._offline_since_ms if k[0] == name]:
                        del self._offline_since_ms[key]
                case _:
                    pass

    def _partition_changed(
        self, previous: ClusterState, current: ClusterState, new: Partition, now_ms: int
    ) -> None:
        old = previous.partitions.get(new.key)
        if old is None:
            return  # a new partition: created with its leader, not elected
        if len(new.isr) < len(old.isr):
            self.isr_shrinks.inc()
        elif len(new.isr) > len(old.isr):
            self.isr_expands.inc()
        if new.leader == old.leader:
            return
        # Since when the partition has had no serving leader: since it went offline, or
        # since its dead leader last heartbeated. None: a move away from a live leader.
        since_ms = self._offline_since_ms.pop(new.key, None)
        if since_ms is None and old.leader is not None:
            now_leader = current.brokers.get(old.leader)
            if now_leader is None or not now_leader.alive:
                before = previous.brokers.get(old.leader)
                since_ms = now_ms if before is None else before.last_heartbeat_ms
        if new.leader is None:
            self._offline_since_ms[new.key] = now_ms if since_ms is None else since_ms
            return
        self.elections.inc()
        if new.leader not in old.isr:
            self.unclean_elections.inc()
        if since_ms is not None:
            self.election_duration.observe(max(0, now_ms - since_ms) / 1000)

    def _heartbeat_seen(self, previous: ClusterState, broker_id: BrokerId, now_ms: int) -> None:
        known = previous.brokers.get(broker_id)
        if known is None or not known.alive:
            return  # registration or return from the dead: counted as expiration instead
        interval_ms = self._heartbeat_interval_ms
        missed = (now_ms - known.last_heartbeat_ms) // interval_ms - 1
        if missed > 0:
            self._heartbeat_misses[broker_id] = self._heartbeat_misses.get(broker_id, 0) + missed

    def rebalanced(self, group: str) -> None:
        """A group started a new generation (consumer groups, issue 5)."""
        self._rebalances[group] = self._rebalances.get(group, 0) + 1

    def member_expired(self, group: str) -> None:
        """A group member missed its session timeout (consumer groups, issue 5)."""
        self._member_expirations[group] = self._member_expirations.get(group, 0) + 1

    def observe_request(
        self, request: web.Request, route: str, status: int, error_code: str | None, seconds: float
    ) -> None:
        """The transport calls this after every request: consumers show themselves by
        fetching and committing their group's offsets."""
        if route not in GROUP_ROUTES or error_code is not None:
            return
        group = request.match_info.get("group", "")[:256]
        client = request.headers.get(CLIENT_ID_HEADER) or request.remote or "unknown"
        key = (group, client[:64])
        if key not in self._consumers and len(self._consumers) >= CONSUMERS_TRACKED_MAX:
            self._prune_consumers(self._clock.now_ms() / 1000)
            if len(self._consumers) >= CONSUMERS_TRACKED_MAX:
                return
        self._consumers[key] = self._clock.now_ms() / 1000

    def _prune_consumers(self, now: float) -> None:
        old = [k for k, seen in self._consumers.items() if now - seen > CONSUMER_ACTIVE_WINDOW_S]
        for key in old:
            del self._consumers[key]

    # ---- read at scrape time -------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        for counter in (
            self.elections,
            self.unclean_elections,
            self.isr_shrinks,
            self.isr_expands,
            self.broker_expirations,
        ):
            yield from counter.collect()
        yield from self.election_duration.collect()
        acting, epoch = self.role()
        active = _gauge("active", "1 while this coordinator is the one deciding (always 1 alone)")
        active.add_metric((), 1 if acting else 0)
        current = _gauge("epoch", "The coordinator epoch this one last acted at (0: alone)")
        current.add_metric((), epoch)
        yield from (active, current)
        try:
            state = self._state()
        except ConveyorError:
            return  # still loading: only the counters
        yield from self._broker_metrics(state)
        yield from self._partition_metrics(state)
        yield from self._group_metrics(state)

    def _broker_metrics(self, state: ClusterState) -> Iterable[Metric]:
        now_ms = self._clock.now_ms()
        brokers = sorted(state.brokers.values(), key=lambda b: b.broker_id)
        registered = _gauge("brokers_registered", "Brokers that ever registered")
        registered.add_metric((), len(brokers))
        alive = _gauge("brokers_alive", "Brokers whose session is live")
        alive.add_metric((), sum(1 for b in brokers if b.alive))
        labels = ("broker",)
        each_alive = _gauge("broker_alive", "1 while the broker's session is live", labels)
        age = _gauge(
            "broker_heartbeat_age_seconds", "Time since the broker's last heartbeat", labels
        )
        leaders = _gauge("broker_leader_partitions", "Partitions the broker leads", labels)
        replicas = _gauge("broker_replica_partitions", "Replicas placed on the broker", labels)
        misses = _counter(
            "broker_heartbeat_misses",
            "Heartbeat intervals that passed without one from a live broker",
            labels,
        )
        led: dict[BrokerId, int] = {}
        placed: dict[BrokerId, int] = {}
        for partition in state.partitions.values():
            if partition.leader is not None:
                led[partition.leader] = led.get(partition.leader, 0) + 1
            for broker_id in partition.replicas:
                placed[broker_id] = placed.get(broker_id, 0) + 1
        for broker in brokers:
            broker_label = (str(broker.broker_id),)
            each_alive.add_metric(broker_label, 1 if broker.alive else 0)
            age.add_metric(broker_label, max(0, now_ms - broker.last_heartbeat_ms) / 1000)
            leaders.add_metric(broker_label, led.get(broker.broker_id, 0))
            replicas.add_metric(broker_label, placed.get(broker.broker_id, 0))
            misses.add_metric(broker_label, self._heartbeat_misses.get(broker.broker_id, 0))
        return (registered, alive, each_alive, age, leaders, replicas, misses)

    def _partition_metrics(self, state: ClusterState) -> Iterable[Metric]:
        partitions = sorted(state.partitions.values(), key=lambda p: p.key)
        topics = _gauge("topics", "Topics")
        topics.add_metric((), len(state.topics))
        total = _gauge("partitions", "Partitions of all topics")
        total.add_metric((), len(partitions))
        offline = _gauge("partitions_offline", "Partitions without a leader")
        offline.add_metric((), sum(1 for p in partitions if p.leader is None))
        under = _gauge("partitions_under_replicated", "Partitions whose ISR lacks replicas")
        under.add_metric((), sum(1 for p in partitions if len(p.isr) < len(p.replicas)))
        labels = ("topic", "partition")
        leader = _gauge("partition_leader", "Leader broker id (-1: offline)", labels)
        isr = _gauge("partition_isr_size", "Replicas in the ISR", labels)
        replicas = _gauge("partition_replicas", "Replicas (the replication factor)", labels)
        end = _gauge(
            "partition_log_end_offset", "Log end offset in the leader's latest report", labels
        )
        high = _gauge(
            "partition_high_watermark", "High watermark in the leader's latest report", labels
        )
        for partition in partitions:
            tp_labels = (partition.topic, str(partition.partition))
            leader.add_metric(tp_labels, -1 if partition.leader is None else partition.leader)
            isr.add_metric(tp_labels, len(partition.isr))
            replicas.add_metric(tp_labels, len(partition.replicas))
            report = latest_report(state.reports, partition)
            if report is not None:
                end.add_metric(tp_labels, report.log_end_offset)
                high.add_metric(tp_labels, report.high_watermark)
        return (topics, total, offline, under, leader, isr, replicas, end, high)

    def _group_metrics(self, state: ClusterState) -> Iterable[Metric]:
        self._prune_consumers(self._clock.now_ms() / 1000)
        joined = dict(self._group_members())
        groups = (
            set(state.group_offsets)
            | set(joined)
            | {group for group, _ in self._consumers}
            | set(self._rebalances)
            | set(self._member_expirations)
        )
        count = _gauge("groups", "Consumer groups known (committed offsets or active members)")
        count.add_metric((), len(groups))
        consumers = _gauge(
            "consumers_active",
            f"Distinct consumers (by client id) that fetched or committed a group's offsets "
            f"in the last {CONSUMER_ACTIVE_WINDOW_S:.0f} s",
        )
        consumers.add_metric((), len({client for _, client in self._consumers}))
        labels = ("group",)
        members = _gauge(
            "group_members",
            "Members of the group (joined through heartbeats); for a group without members, "
            f"the simple consumers active in the last {CONSUMER_ACTIVE_WINDOW_S:.0f} s "
            "(by client id)",
            labels,
        )
        rebalances = _counter("rebalances", "Generations the group started", labels)
        expirations = _counter(
            "group_member_expirations", "Members that missed their session timeout", labels
        )
        per_group: dict[str, int] = {}
        for group, _ in self._consumers:
            per_group[group] = per_group.get(group, 0) + 1
        for group in sorted(groups):
            members.add_metric((group,), joined.get(group) or per_group.get(group, 0))
            rebalances.add_metric((group,), self._rebalances.get(group, 0))
            expirations.add_metric((group,), self._member_expirations.get(group, 0))
        yield from (count, consumers, members, rebalances, expirations)
        yield from _offset_metrics(state)


def _offset_metrics(state: ClusterState) -> Iterable[Metric]:
    labels = ("group", "topic", "partition")
    committed = _gauge("group_committed_offset", "The next offset the group will read", labels)
    lag = _gauge(
        "group_lag_messages",
        "Messages not yet consumed: the partition's log end offset (leader's report) minus "
        "the committed offset",
        labels,
    )
    for (group, topic, partition_id), offset in sorted(state.offsets.items()):
        group_labels = (group, topic, str(partition_id))
        committed.add_metric(group_labels, offset.offset)
        partition = state.partitions.get((topic, partition_id))
        report = None if partition is None else latest_report(state.reports, partition)
        if report is not None:
            lag.add_metric(group_labels, max(0, report.log_end_offset - offset.offset))
    return (committed, lag)


def latest_report(
    reports: Mapping[BrokerId, Mapping[PartitionKey, PartitionReport]], partition: Partition
) -> PartitionReport | None:
    """The leader's latest report of ``partition``, else any replica's (an offline
    partition still shows where it stood)."""
    candidates = [partition.leader] if partition.leader is not None else []
    candidates += [b for b in partition.replicas if b != partition.leader]
    for broker_id in candidates:
        report = reports.get(broker_id, {}).get(partition.key)
        if report is not None:
            return report
    return None


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"conveyor_coordinator_{name}", documentation, labels=list(labels))


def _counter(name: str, documentation: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"conveyor_coordinator_{name}", documentation, labels=list(labels))


def _counter_obj(name: str, documentation: str) -> Counter:
    return Counter(f"conveyor_coordinator_{name}", documentation, registry=None)
