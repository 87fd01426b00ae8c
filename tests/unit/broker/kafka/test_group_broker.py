"""FindCoordinator's choice of broker for a group: stable, spread, the same on every
broker that knows the same live brokers (ListGroups lists each group on one broker)."""

from __future__ import annotations

from collections import Counter

from conveyor.broker.kafka.groups import group_broker
from conveyor.broker.kafka.metadata import KafkaNode

NODES = [KafkaNode(i, "127.0.0.1", 9000 + i) for i in (3, 1, 2)]


def test_one_broker_per_group_whatever_the_order_brokers_are_known_in() -> None:
    for group in ("a", "orders", "g-1"):
        chosen = group_broker(group, NODES)
        assert chosen is not None
        assert chosen == group_broker(group, list(reversed(NODES)))


def test_groups_spread_over_the_brokers_and_none_without_brokers() -> None:
    owners = Counter(group_broker(f"group-{i}", NODES).node_id for i in range(300))  # type: ignore[union-attr]
    assert set(owners) == {1, 2, 3} and min(owners.values()) > 60
    assert group_broker("g", []) is None
