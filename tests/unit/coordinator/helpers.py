"""Builders for coordinator unit tests: states reached through the real transitions."""

from __future__ import annotations

from collections.abc import Iterable

from conveyor.coordinator import state as core
from conveyor.coordinator.model import ClusterState, check_invariants
from conveyor.protocol.messages import BrokerHeartbeat, BrokerId, CreateTopicRequest

INTERVAL_MS = 1000
DEFAULTS = core.TopicDefaults()


def heartbeat(broker_id: int, url: str | None = None) -> BrokerHeartbeat:
    return BrokerHeartbeat(
        broker_id=BrokerId(broker_id), url=url or f"http://127.0.0.1:{9000 + broker_id}"
    )


def with_brokers(broker_ids: Iterable[int], now_ms: int = 0) -> ClusterState:
    state = ClusterState(cluster_id="test-cluster")
    for broker_id in broker_ids:
        state = core.handle_heartbeat(state, heartbeat(broker_id), now_ms, INTERVAL_MS).state
    check_invariants(state)
    return state


def with_topic(
    state: ClusterState,
    name: str,
    partitions: int = 8,
    replication_factor: int | None = None,
    now_ms: int = 0,
) -> ClusterState:
    request = CreateTopicRequest(
        name=name, partitions=partitions, replication_factor=replication_factor
    )
    result = core.create_topic(state, request, now_ms, DEFAULTS)
    check_invariants(result.state)
    return result.state
