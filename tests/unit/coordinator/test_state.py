from __future__ import annotations

from collections import Counter

import pytest

from conveyor.coordinator import state as core
from conveyor.coordinator.model import (
    BrokerRecord,
    BrokerSeen,
    ClusterState,
    GroupRemoved,
    OffsetRecord,
    PartitionRecord,
    TopicRecord,
    TopicRemoved,
    check_invariants,
)
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    BrokerHeartbeat,
    BrokerId,
    CreateTopicRequest,
    OffsetCommitRequest,
    PartitionOffset,
    PartitionReport,
    TopicConfig,
)
from tests.unit.coordinator.helpers import (
    DEFAULTS,
    INTERVAL_MS,
    heartbeat,
    with_brokers,
    with_topic,
)

# ---- heartbeats ----------------------------------------------------------------------------


def test_first_heartbeat_registers_durably() -> None:
    result = core.handle_heartbeat(
        ClusterState(cluster_id="c"), heartbeat(1), now_ms=5, heartbeat_interval_ms=INTERVAL_MS
    )
    assert [type(r) for r in result.records] == [BrokerRecord, BrokerSeen]
    assert [type(r) for r in result.durable_records] == [BrokerRecord]
    broker = result.state.brokers[BrokerId(1)]
    assert (broker.url, broker.alive, broker.last_heartbeat_ms) == (
        "http://127.0.0.1:9001",
        True,
        5,
    )
    assert result.decisions == ("broker 1 registered at http://127.0.0.1:9001 with capacity 1",)
    assert result.reply.cluster_id == "c"
    assert result.reply.heartbeat_interval_ms == INTERVAL_MS


def test_a_repeated_heartbeat_is_soft_state_only() -> None:
    state = with_brokers([1])
    result = core.handle_heartbeat(state, heartbeat(1), 700, INTERVAL_MS)
    assert result.durable_records == []
    assert result.state.brokers[BrokerId(1)].last_heartbeat_ms == 700
    assert state.brokers[BrokerId(1)].last_heartbeat_ms == 0  # the old snapshot is untouched


def test_reregistering_with_a_new_url_updates_it() -> None:
    state = with_brokers([1])
    result = core.handle_heartbeat(state, heartbeat(1, "http://10.0.0.9:9100"), 10, INTERVAL_MS)
    assert result.state.brokers[BrokerId(1)].url == "http://10.0.0.9:9100"
    assert "changed its url" in result.decisions[0]
    assert len(result.durable_records) == 1


def test_heartbeat_reply_carries_this_brokers_assignments_configs_and_all_brokers() -> None:
    state = with_topic(with_brokers([1, 2, 3]), "orders", partitions=6, replication_factor=2)
    reply = core.handle_heartbeat(state, heartbeat(2), 1, INTERVAL_MS).reply
    assert reply.assignments
    assert all(BrokerId(2) in a.replicas for a in reply.assignments)
    expected = [p for p in state.partitions.values() if BrokerId(2) in p.replicas]
    assert len(reply.assignments) == len(expected) == 4
    assert set(reply.topic_configs) == {"orders"}
    assert [b.broker_id for b in reply.brokers] == [1, 2, 3]


def test_reports_are_kept_for_describe_and_unknown_partitions_are_dropped() -> None:
    state = with_topic(with_brokers([1]), "orders", partitions=2)
    reports = [
        PartitionReport(
            topic="orders",
            partition=1,
            leader_epoch=0,
            log_start_offset=3,
            log_end_offset=10,
            high_watermark=9,
        ),
        PartitionReport(
            topic="gone",
            partition=0,
            leader_epoch=0,
            log_start_offset=0,
            log_end_offset=1,
            high_watermark=1,
        ),
    ]
    hb = BrokerHeartbeat(broker_id=BrokerId(1), url="http://127.0.0.1:9001", partitions=reports)
    state = core.handle_heartbeat(state, hb, 1, INTERVAL_MS).state
    assert list(state.reports[BrokerId(1)]) == [("orders", 1)]
    described = core.describe_topic(state, "orders").partitions
    assert (described[1].log_start_offset, described[1].log_end_offset) == (3, 10)
    assert described[1].high_watermark == 9
    assert described[0].log_end_offset is None


@pytest.mark.parametrize(
    "hb",
    [
        BrokerHeartbeat(broker_id=BrokerId(-1), url="http://x"),
        BrokerHeartbeat(broker_id=BrokerId(1), url="x:1"),
        BrokerHeartbeat(broker_id=BrokerId(1), url="http://x", capacity=-1),
    ],
)
def test_invalid_heartbeats_are_rejected(hb: BrokerHeartbeat) -> None:
    with pytest.raises(InvalidRequestError):
        core.handle_heartbeat(ClusterState(cluster_id="c"), hb, 0, INTERVAL_MS)


# ---- expiry and return ---------------------------------------------------------------------


def test_expiry_declares_silent_brokers_dead_and_takes_their_partitions_offline() -> None:
    state = with_brokers([1, 2], now_ms=0)
    state = with_topic(state, "orders", partitions=4, replication_factor=1)
    state = core.handle_heartbeat(state, heartbeat(1), 5000, INTERVAL_MS).state
    assert core.expire_brokers(state, 6000, 6000).records == ()  # not yet: exactly the timeout
    result = core.expire_brokers(state, 6012, 6000)
    check_invariants(result.state)
    assert not result.state.brokers[BrokerId(2)].alive
    assert result.state.brokers[BrokerId(1)].alive
    assert result.decisions[0] == (
        "broker 2 declared dead: no heartbeat for 6012 ms (session timeout 6000 ms)"
    )
    for key, before in state.partitions.items():
        after = result.state.partitions[key]
        if before.leader == 2:
            assert (after.leader, after.leader_epoch, after.isr) == (None, 1, (2,))
            assert after.partition_epoch == 1
        else:
            assert after == before
    status = core.cluster_status(result.state)
    assert status.offline_partitions == 2
    described = core.describe_topic(result.state, "orders").partitions
    assert [p.leader_url for p in described if p.leader is None] == [None, None]


def test_a_dead_broker_that_returns_leads_its_partitions_again_with_a_new_epoch() -> None:
    state = with_topic(with_brokers([1]), "orders", partitions=3)
    state = core.expire_brokers(state, 10_000, 6000).state
    result = core.handle_heartbeat(state, heartbeat(1), 11_000, INTERVAL_MS)
    check_invariants(result.state)
    assert all(p.leader == 1 and p.leader_epoch == 2 for p in result.state.partitions.values())
    assert "alive again after 11000 ms" in result.decisions[0]
    assert {a.leader_epoch for a in result.reply.assignments} == {2}
    assert sum(isinstance(r, PartitionRecord) for r in result.durable_records) == 3


def test_grace_restarts_every_live_session() -> None:
    state = core.grant_grace(with_brokers([1, 2], now_ms=0), 50_000).state
    assert core.expire_brokers(state, 55_000, 6000).records == ()


# ---- topics --------------------------------------------------------------------------------


def test_create_topic_places_evenly_with_leaders_at_epoch_zero() -> None:
    state = with_brokers([1, 2, 3])
    request = CreateTopicRequest(name="orders", partitions=8, replication_factor=2)
    result = core.create_topic(state, request, 42, DEFAULTS)
    check_invariants(result.state)
    assert [type(r) for r in result.records] == [TopicRecord] + [PartitionRecord] * 8
    leaders = Counter(p.leader for p in result.reply.partitions)
    assert sorted(leaders.values()) == [2, 3, 3]
    for info in result.reply.partitions:
        assert info.leader == info.replicas[0]
        assert info.isr == info.replicas
        assert info.leader_epoch == 0
        assert info.leader_url == f"http://127.0.0.1:{9000 + info.replicas[0]}"
    assert result.state.topics["orders"].created_ms == 42


def test_defaults_apply_when_the_request_leaves_settings_out() -> None:
    state = with_brokers([1, 2])
    defaults = core.TopicDefaults(
        partitions=8, replication_factor=2, config=TopicConfig(flush="never")
    )
    result = core.create_topic(state, CreateTopicRequest(name="t", partitions=3), 0, defaults)
    assert result.reply.replication_factor == 2
    assert result.reply.config.flush == "never"


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (CreateTopicRequest(name="bad name"), ErrorCode.INVALID_TOPIC),
        (CreateTopicRequest(name=".."), ErrorCode.INVALID_TOPIC),
        (CreateTopicRequest(name="orders"), ErrorCode.TOPIC_ALREADY_EXISTS),
        (CreateTopicRequest(name="t", partitions=0), ErrorCode.INVALID_CONFIG),
        (CreateTopicRequest(name="t", partitions=10_001), ErrorCode.INVALID_CONFIG),
        (CreateTopicRequest(name="t", replication_factor=3), ErrorCode.INVALID_CONFIG),
        (CreateTopicRequest(name="t", replication_factor=0), ErrorCode.INVALID_CONFIG),
        (
            CreateTopicRequest(name="t", config=TopicConfig(flush="maybe")),
            ErrorCode.INVALID_CONFIG,
        ),
    ],
)
def test_create_topic_errors_change_nothing(request_: CreateTopicRequest, code: ErrorCode) -> None:
    state = with_topic(with_brokers([1, 2]), "orders")
    with pytest.raises(InvalidRequestError) as caught:
        core.create_topic(state, request_, 0, DEFAULTS)
    assert caught.value.code is code
    assert list(state.topics) == ["orders"]


def test_a_second_topic_takes_existing_leader_load_into_account() -> None:
    state = with_topic(with_brokers([1, 2, 3]), "a", partitions=4)
    state = with_topic(state, "b", partitions=2)
    leaders = Counter(p.leader for p in state.partitions.values())
    assert sorted(leaders.values()) == [2, 2, 2]


def test_auto_create_makes_only_the_missing_topics_with_defaults() -> None:
    state = with_topic(with_brokers([1]), "known", partitions=2)
    result = core.auto_create_topics(state, ["known", "fresh"], 0, DEFAULTS)
    assert result.state.topics["fresh"].partition_count == 8
    assert result.state.topics["known"].partition_count == 2
    assert result.decisions[0].startswith("auto-create: created topic fresh")


def test_auto_create_without_enough_brokers_is_retriable() -> None:
    with pytest.raises(RetriableError) as caught:
        core.auto_create_topics(ClusterState(cluster_id="c"), ["t"], 0, DEFAULTS)
    assert caught.value.code is ErrorCode.LEADER_NOT_AVAILABLE


def test_delete_topic_removes_partitions_offsets_and_assignments() -> None:
    state = with_topic(with_topic(with_brokers([1]), "gone", partitions=2), "kept", partitions=1)
    commit = OffsetCommitRequest(
        offsets=[
            PartitionOffset(topic="gone", partition=0, offset=5),
            PartitionOffset(topic="kept", partition=0, offset=7),
        ]
    )
    state = core.commit_offsets(state, "g", commit, 0).state
    result = core.delete_topic(state, "gone")
    check_invariants(result.state)
    assert result.records == (TopicRemoved("gone"),)
    assert list(result.state.topics) == ["kept"]
    assert [c.topic for c in result.state.offsets.values()] == ["kept"]
    reply = core.heartbeat_response(result.state, BrokerId(1), INTERVAL_MS)
    assert {a.topic for a in reply.assignments} == {"kept"}
    assert "dropped 1 committed offset(s)" in result.decisions[0]
    with pytest.raises(InvalidRequestError) as caught:
        core.delete_topic(result.state, "gone")
    assert caught.value.code is ErrorCode.UNKNOWN_TOPIC


def test_delete_group_drops_only_its_offsets() -> None:
    state = with_topic(with_brokers([1]), "t", partitions=2)
    commit = OffsetCommitRequest(offsets=[PartitionOffset(topic="t", partition=1, offset=3)])
    state = core.commit_offsets(state, "gone", commit, 0).state
    state = core.commit_offsets(state, "kept", commit, 0).state
    result = core.delete_group(state, "gone")
    assert result.records == (GroupRemoved("gone"),)
    assert [key[0] for key in result.state.offsets] == ["kept"]
    assert "dropped 1 committed offset(s)" in result.decisions[0]
    with pytest.raises(InvalidRequestError) as caught:
        core.delete_group(result.state, "gone")
    assert caught.value.code is ErrorCode.UNKNOWN_GROUP
    with pytest.raises(InvalidRequestError):
        core.delete_group(state, "no way")


# ---- metadata ------------------------------------------------------------------------------


def test_metadata_of_all_or_named_topics() -> None:
    state = with_topic(with_topic(with_brokers([1]), "b", partitions=1), "a", partitions=1)
    assert [t.name for t in core.metadata(state, None).topics] == ["a", "b"]
    assert [t.name for t in core.metadata(state, ["b", "b"]).topics] == ["b"]
    with pytest.raises(InvalidRequestError) as caught:
        core.metadata(state, ["a", "nope"])
    assert caught.value.code is ErrorCode.UNKNOWN_TOPIC
    assert caught.value.details == {"topics": ["nope"]}
    with pytest.raises(InvalidRequestError) as caught:
        core.metadata(state, ["no way"])
    assert caught.value.code is ErrorCode.INVALID_TOPIC


# ---- committed offsets ---------------------------------------------------------------------


def test_commit_and_fetch_offsets() -> None:
    state = with_topic(with_topic(with_brokers([1]), "t", partitions=2), "u", partitions=1)
    commit = OffsetCommitRequest(
        offsets=[
            PartitionOffset(topic="t", partition=1, offset=10, metadata="m", leader_epoch=2),
            PartitionOffset(topic="u", partition=0, offset=0),
        ]
    )
    result = core.commit_offsets(state, "g1", commit, 99)
    assert [o.leader_epoch for o in result.reply.offsets] == [2, -1]
    assert [type(r) for r in result.durable_records] == [OffsetRecord, OffsetRecord]
    assert [(o.topic, o.partition, o.offset) for o in result.reply.offsets] == [
        ("t", 1, 10),
        ("u", 0, 0),
    ]
    state = result.state
    assert state.offsets[("g1", "t", 1)].committed_ms == 99
    assert [o.topic for o in core.fetch_offsets(state, "g1", "u").offsets] == ["u"]
    assert core.fetch_offsets(state, "other", None).offsets == []


@pytest.mark.parametrize(
    ("group", "offset", "generation", "code"),
    [
        ("g", PartitionOffset(topic="t", partition=0, offset=-1), -1, ErrorCode.INVALID_REQUEST),
        ("g", PartitionOffset(topic="t", partition=2, offset=0), -1, ErrorCode.UNKNOWN_PARTITION),
        ("g", PartitionOffset(topic="t", partition=-1, offset=0), -1, ErrorCode.UNKNOWN_PARTITION),
        ("g", PartitionOffset(topic="x", partition=0, offset=0), -1, ErrorCode.UNKNOWN_TOPIC),
        ("g", PartitionOffset(topic="x y", partition=0, offset=0), -1, ErrorCode.INVALID_TOPIC),
        ("a/b", PartitionOffset(topic="t", partition=0, offset=0), -1, ErrorCode.INVALID_REQUEST),
        (
            "g",
            PartitionOffset(topic="t", partition=0, offset=0, leader_epoch=-2),
            -1,
            ErrorCode.INVALID_REQUEST,
        ),
        (
            "g",
            PartitionOffset(topic="t", partition=0, offset=0, leader_epoch=2**31),
            -1,
            ErrorCode.INVALID_REQUEST,
        ),
    ],
)
def test_bad_commits_change_nothing(
    group: str, offset: PartitionOffset, generation: int, code: ErrorCode
) -> None:
    state = with_topic(with_brokers([1]), "t", partitions=2)
    good = PartitionOffset(topic="t", partition=0, offset=1)
    request = OffsetCommitRequest(offsets=[good, offset], generation=generation)
    with pytest.raises(InvalidRequestError) as caught:
        core.commit_offsets(state, group, request, 0)
    assert caught.value.code is code
    assert not state.offsets
