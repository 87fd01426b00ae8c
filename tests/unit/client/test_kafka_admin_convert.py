"""Kafka admin answers as Conveyor's admin result types (client/kafka_admin_convert.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conveyor.client.kafka_admin_convert import (
    check,
    cluster_status,
    group_description,
    group_state,
    group_summary,
    group_topics,
)
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.kafka import consumer_protocol
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.messages import (
    BrokerId,
    Metadata,
    PartitionInfo,
    TopicConfig,
    TopicDescription,
)


def _member(member_id: str, topics: list[str], assigned: list[tuple[str, int]]) -> object:
    return SimpleNamespace(
        member_id=member_id,
        group_instance_id=None,
        client_id="c",
        client_host="/127.0.0.1",
        member_metadata=consumer_protocol.encode_subscription(topics),
        member_assignment=consumer_protocol.encode_assignment(assigned),
    )


def _group(state: str, members: list[object], assignor: str = "range") -> object:
    return SimpleNamespace(group_id="g", group_state=state, members=members, protocol_data=assignor)


def test_a_description_has_one_row_per_partition_with_lag_from_the_high_watermark() -> None:
    described = _group("Stable", [_member("m1", ["t"], [("t", 0)])])
    committed = {TopicPartition("t", 0): 3}
    assert group_topics(described, committed) == ["t"]
    high = {TopicPartition("t", 0): 10, TopicPartition("t", 1): 4}
    out = group_description(described, committed, high)
    rows = [
        (p.partition, p.member_id, p.committed_offset, p.high_watermark, p.lag)
        for p in out.partitions
    ]
    assert rows == [(0, "m1", 3, 10, 7), (1, None, None, 4, 4)]
    assert out.lag == 11 and out.state == "stable" and out.protocol == "classic"
    assert out.members[0].topics == ["t"] and out.members[0].host == "127.0.0.1"
    summary = group_summary(out)
    assert (summary.members, summary.lag, summary.topics) == (1, 11, ["t"])


def test_conveyor_groups_and_states() -> None:
    mine = group_description(_group("Reconciling", [], consumer_protocol.CONVEYOR_ASSIGNOR), {}, {})
    assert mine.protocol == "conveyor" and mine.state == "rebalancing"
    assert [group_state(s) for s in ("Empty", "Dead", "Stable", "PreparingRebalance")] == [
        "empty",
        "empty",
        "stable",
        "rebalancing",
    ]


def test_cluster_status_counts_leaders_replicas_offline_and_under_replicated() -> None:
    def part(n: int, leader: int | None, replicas: list[int], isr: list[int]) -> PartitionInfo:
        return PartitionInfo(
            partition=n,
            leader=None if leader is None else BrokerId(leader),
            leader_epoch=0,
            replicas=[BrokerId(r) for r in replicas],
            isr=[BrokerId(r) for r in isr],
        )

    topic = TopicDescription(
        name="t",
        partitions=[part(0, 1, [1, 2], [1, 2]), part(1, 2, [2, 1], [2]), part(2, None, [1], [])],
        replication_factor=2,
        config=TopicConfig(),
    )
    brokers = [SimpleNamespace(broker_id=b, host="h", port=9000 + b) for b in (2, 1)]
    status = cluster_status("c", brokers, Metadata(cluster_id="c", brokers=[], topics=[topic]))
    assert [
        (b.broker_id, b.leader_count, b.replica_count, b.kafka_address) for b in status.brokers
    ] == [
        (1, 1, 3, "h:9001"),
        (2, 1, 2, "h:9002"),
    ]
    assert (status.topics, status.partitions) == (1, 3)
    assert (status.offline_partitions, status.under_replicated_partitions) == (1, 2)


def test_check_raises_the_typed_error() -> None:
    check(KafkaError.NONE, "fine")
    with pytest.raises(InvalidRequestError) as exists:
        check(KafkaError.TOPIC_ALREADY_EXISTS, "create topic 't'", "already there")
    assert exists.value.code is ErrorCode.TOPIC_ALREADY_EXISTS
    assert "already there" in exists.value.message
    with pytest.raises(InvalidRequestError) as factor:
        check(KafkaError.INVALID_REPLICATION_FACTOR, "create topic 't'")
    assert factor.value.code is ErrorCode.INVALID_CONFIG
