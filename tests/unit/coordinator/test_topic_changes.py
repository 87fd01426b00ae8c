"""Changing an existing topic: more partitions, new settings, and validate-only creates."""

from __future__ import annotations

from collections import Counter

import pytest

from conveyor.coordinator import state as core
from conveyor.coordinator.model import PartitionRecord, TopicRecord, check_invariants
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterTopicConfigRequest,
    BrokerId,
    ConfigValue,
    CreateTopicRequest,
    TopicConfig,
)
from tests.unit.coordinator.helpers import (
    DEFAULTS,
    INTERVAL_MS,
    heartbeat,
    with_brokers,
    with_topic,
)

# ---- add partitions ------------------------------------------------------------------------


def test_add_partitions_spreads_the_new_ones() -> None:
    """The docstring's worked example: t on brokers 1 and 2, then broker 3 joins idle."""
    state = with_topic(with_brokers([1, 2]), "t", partitions=2, replication_factor=1)
    state = core.handle_heartbeat(state, heartbeat(3), 0, INTERVAL_MS).state
    result = core.add_partitions(state, "t", AddPartitionsRequest(partitions=4))
    check_invariants(result.state)
    assert [type(r) for r in result.records] == [TopicRecord, PartitionRecord, PartitionRecord]
    topic = result.state.topics["t"]
    assert topic.partition_count == 4
    new = [result.state.partitions[("t", p)] for p in (2, 3)]
    assert new[0].replicas == (BrokerId(3),)
    assert new[1].replicas in ((BrokerId(1),), (BrokerId(2),))
    for partition in new:
        assert partition.leader == partition.replicas[0]
        assert partition.isr == partition.replicas
        assert partition.leader_epoch == 0
    # the old partitions are untouched
    for p in (0, 1):
        assert result.state.partitions[("t", p)] == state.partitions[("t", p)]
    assert [p.partition for p in result.reply.partitions] == [0, 1, 2, 3]
    assert result.decisions and "partitions 2 -> 4" in result.decisions[0]


def test_added_partitions_keep_the_topics_replication_factor_and_balance() -> None:
    state = with_topic(with_brokers([1, 2, 3]), "t", partitions=3, replication_factor=2)
    result = core.add_partitions(state, "t", AddPartitionsRequest(partitions=9))
    check_invariants(result.state)
    partitions = [result.state.partitions[("t", p)] for p in range(9)]
    assert all(len(p.replicas) == 2 for p in partitions)
    leaders = Counter(p.leader for p in partitions)
    assert sorted(leaders.values()) == [3, 3, 3]


@pytest.mark.parametrize(
    ("partitions", "code"),
    [
        (3, ErrorCode.INVALID_PARTITIONS),  # the same count
        (2, ErrorCode.INVALID_PARTITIONS),  # shrinking
        (0, ErrorCode.INVALID_PARTITIONS),
        (10_001, ErrorCode.INVALID_CONFIG),  # over PARTITIONS_MAX
    ],
)
def test_bad_partition_counts_change_nothing(partitions: int, code: ErrorCode) -> None:
    state = with_topic(with_brokers([1, 2, 3]), "t", partitions=3)
    with pytest.raises(InvalidRequestError) as raised:
        core.add_partitions(state, "t", AddPartitionsRequest(partitions=partitions))
    assert raised.value.code is code
    assert state.topics["t"].partition_count == 3


def test_add_partitions_to_an_unknown_topic_or_with_too_few_brokers() -> None:
    state = with_topic(with_brokers([1, 2, 3]), "t", partitions=3, replication_factor=3)
    with pytest.raises(InvalidRequestError) as raised:
        core.add_partitions(state, "nope", AddPartitionsRequest(partitions=4))
    assert raised.value.code is ErrorCode.UNKNOWN_TOPIC
    dead = core.expire_brokers(
        core.handle_heartbeat(state, heartbeat(1), 10_000, INTERVAL_MS).state, 10_000, 5_000
    ).state
    with pytest.raises(InvalidRequestError) as raised:
        core.add_partitions(dead, "t", AddPartitionsRequest(partitions=4))
    assert raised.value.code is ErrorCode.INVALID_CONFIG  # RF 3 > 1 live broker


def test_validate_only_add_partitions_answers_without_records() -> None:
    state = with_topic(with_brokers([1, 2]), "t", partitions=2)
    result = core.add_partitions(state, "t", AddPartitionsRequest(partitions=5, validate_only=True))
    assert result.records == ()
    assert result.state is state
    assert len(result.reply.partitions) == 5


# ---- alter config --------------------------------------------------------------------------


def _alter(
    values: dict[str, ConfigValue] | None = None, reset: list[str] | None = None
) -> AlterTopicConfigRequest:
    return AlterTopicConfigRequest(set=values or {}, reset=reset or [])


def test_alter_config_changes_only_the_named_settings() -> None:
    state = with_topic(with_brokers([1, 2, 3]), "t", partitions=2)
    first = core.alter_topic_config(state, "t", _alter({"retention_ms": 60_000, "flush": "never"}))
    assert [type(r) for r in first.records] == [TopicRecord]
    config = first.state.topics["t"].config
    assert (config.retention_ms, config.flush) == (60_000, "never")
    assert first.reply.config == config
    assert first.decisions == ("topic t: config changed: ['flush', 'retention_ms']",)
    second = core.alter_topic_config(first.state, "t", _alter({"segment_bytes": 4096}, ["flush"]))
    config = second.state.topics["t"].config
    assert (config.retention_ms, config.segment_bytes, config.flush) == (60_000, 4096, "always")
    # the partitions and their epochs stay as they were
    assert second.state.partitions == state.partitions


def test_resetting_everything_gives_the_canonical_default() -> None:
    state = with_topic(with_brokers([1]), "t", partitions=1)
    changed = core.alter_topic_config(state, "t", _alter({"retention_bytes": 10_000})).state
    back = core.alter_topic_config(changed, "t", _alter(reset=["retention_bytes"]))
    assert back.state.topics["t"].config == TopicConfig()
    # canonical: the same object as a fresh default, so the JSON leaves it out
    assert back.state.topics["t"].config.retention_bytes is TopicConfig().retention_bytes


def test_an_unchanged_config_writes_nothing() -> None:
    state = with_topic(with_brokers([1]), "t", partitions=1)
    result = core.alter_topic_config(state, "t", _alter({"flush": "always"}))
    assert result.records == ()
    assert result.decisions == ()


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (_alter({"retention": 5}), "unknown topic setting"),
        (_alter(reset=["nope"]), "unknown topic setting"),
        (_alter({"retention_ms": "soon"}), "invalid topic setting"),
        (_alter({"retention_ms": True}), "invalid topic setting"),  # strict: no bool as int
        (_alter({"retention_ms": 0}), "retention_ms must be"),
        (_alter({"min_insync_replicas": 4}), "min_insync_replicas must be"),
        (_alter({"flush": "sometimes"}), "flush"),
        (_alter({"flush": "never"}, ["flush"]), "both set and reset"),
    ],
)
def test_bad_config_changes_change_nothing(
    request_: AlterTopicConfigRequest, fragment: str
) -> None:
    state = with_topic(with_brokers([1, 2, 3]), "t", partitions=1, replication_factor=3)
    with pytest.raises(InvalidRequestError) as raised:
        core.alter_topic_config(state, "t", request_)
    assert raised.value.code is ErrorCode.INVALID_CONFIG
    assert fragment in raised.value.message
    assert state.topics["t"].config == TopicConfig()


def test_validate_only_alter_config_answers_the_would_be_config() -> None:
    state = with_topic(with_brokers([1]), "t", partitions=1)
    request = AlterTopicConfigRequest(set={"retention_ms": 1000}, validate_only=True)
    result = core.alter_topic_config(state, "t", request)
    assert result.records == ()
    assert result.reply.config.retention_ms == 1000
    assert state.topics["t"].config.retention_ms == TopicConfig().retention_ms


# ---- validate-only create ------------------------------------------------------------------


def test_validate_only_create_answers_the_placement_and_creates_nothing() -> None:
    state = with_brokers([1, 2, 3])
    request = CreateTopicRequest(name="t", partitions=3, validate_only=True)
    result = core.create_topic(state, request, 0, DEFAULTS)
    assert result.records == ()
    assert "t" not in result.state.topics
    assert len(result.reply.partitions) == 3
    with pytest.raises(InvalidRequestError) as raised:
        bad = CreateTopicRequest(name="t", partitions=3, replication_factor=4, validate_only=True)
        core.create_topic(state, bad, 0, DEFAULTS)
    assert raised.value.code is ErrorCode.INVALID_CONFIG


# ---- manual replica assignments ------------------------------------------------------------


def test_create_and_grow_with_manual_assignments() -> None:
    state = with_brokers([1, 2, 3])
    request = CreateTopicRequest(name="t", partitions=2, assignments=[[3, 1], [2, 3]])
    created = core.create_topic(state, request, 0, DEFAULTS)
    check_invariants(created.state)
    assert created.state.topics["t"].replication_factor == 2  # taken from the assignments
    assert [created.state.partitions[("t", p)].replicas for p in (0, 1)] == [(3, 1), (2, 3)]
    assert created.state.partitions[("t", 0)].leader == 3
    grown = core.add_partitions(
        created.state, "t", AddPartitionsRequest(partitions=3, assignments=[[1, 2]])
    )
    check_invariants(grown.state)
    assert grown.state.partitions[("t", 2)].replicas == (1, 2)


@pytest.mark.parametrize(
    "assignments",
    [
        [[1, 2]],  # one list for two partitions
        [[1, 2], [3]],  # uneven replication factor
        [[1, 1], [2, 3]],  # a broker twice
        [[1, 9], [2, 3]],  # an unknown broker
    ],
)
def test_bad_assignments_create_nothing(assignments: list[list[int]]) -> None:
    state = with_brokers([1, 2, 3])
    request = CreateTopicRequest(name="t", partitions=2, assignments=assignments)
    with pytest.raises(InvalidRequestError) as raised:
        core.create_topic(state, request, 0, DEFAULTS)
    assert raised.value.code is ErrorCode.INVALID_CONFIG
    assert "assignments" in raised.value.details
    assert "t" not in state.topics
