"""The "consumer" embedded protocol's bytes (subscriptions, assignments): round trips with
kafka-python's own encoder, and any bytes decode to a value or None, never an exception
(the coordinator reads what a group's leader sent)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.kafka import consumer_protocol as cp
from conveyor.protocol.kafka.kip848 import (
    ConsumerGroupDescribeRequest,
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
)

TOPICS = st.text(alphabet="abc._-", min_size=1, max_size=8)


@given(st.lists(st.tuples(TOPICS, st.integers(0, 100)), max_size=30))
def test_assignments_round_trip(pairs: list[tuple[str, int]]) -> None:
    assert cp.assigned_partitions(cp.encode_assignment(pairs)) == sorted(set(pairs))


@given(st.lists(TOPICS, min_size=1, max_size=20))
def test_subscriptions_round_trip(topics: list[str]) -> None:
    assert cp.subscribed_topics(cp.encode_subscription(topics)) == sorted(set(topics))


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_none(data: bytes) -> None:
    assert cp.subscribed_topics(data) is None or isinstance(cp.subscribed_topics(data), list)
    assert cp.assigned_partitions(data) is None or isinstance(cp.assigned_partitions(data), list)


def test_kip848_wire_types_follow_kafkas_schemas() -> None:
    """API keys, versions and flexible encoding as Kafka's JSON schemas say."""
    assert ConsumerGroupHeartbeatRequest.json["apiKey"] == 68
    assert ConsumerGroupDescribeRequest.json["apiKey"] == 69
    assert ConsumerGroupHeartbeatRequest.max_version == 1
    assert ConsumerGroupHeartbeatRequest.flexible_version_q(0)
    request = ConsumerGroupHeartbeatRequest[1](
        group_id="g",
        member_id="m",
        member_epoch=0,
        instance_id=None,
        rack_id=None,
        rebalance_timeout_ms=1000,
        subscribed_topic_names=["t"],
        subscribed_topic_regex="t.*",
        server_assignor=None,
        topic_partitions=None,
    )
    data = request.encode(version=1)
    # group_id "g" as a compact string: length + 1, then the byte
    assert bytes(data[:2]) == b"\x02g"
    decoded = ConsumerGroupHeartbeatRequest[1].decode(data, version=1)
    assert decoded.subscribed_topic_regex == "t.*" and decoded.topic_partitions is None
    response = ConsumerGroupHeartbeatResponse[1]
    encoded = response(
        throttle_time_ms=0,
        error_code=0,
        error_message=None,
        member_id="m",
        member_epoch=2,
        heartbeat_interval_ms=1000,
        assignment=None,
    ).encode(version=1)
    assert response.decode(encoded, version=1).member_epoch == 2
