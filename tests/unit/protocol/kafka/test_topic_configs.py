"""Kafka topic config names over Conveyor's TopicConfig (protocol/kafka/topic_configs.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.coordinator.state import merge_config
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.kafka import topic_configs
from conveyor.protocol.kafka.topic_configs import LONG_MAX, ConfigSource, ConfigType
from conveyor.protocol.messages import TopicConfig


def _entries(config: TopicConfig, rf: int = 3) -> dict[str, topic_configs.ConfigEntry]:
    return {e.name: e for e in topic_configs.describe_topic(config, rf)}


def test_defaults_are_answered_with_their_kafka_types_and_sources() -> None:
    entries = _entries(TopicConfig())
    assert entries["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert entries["retention.ms"].config_type is ConfigType.LONG
    assert entries["retention.ms"].source is ConfigSource.DEFAULT_CONFIG
    assert entries["unclean.leader.election.enable"].value == "false"
    assert entries["min.insync.replicas"].value == "2"  # RF 3: the effective default
    assert _entries(TopicConfig(), rf=1)["min.insync.replicas"].value == "1"
    assert (entries["flush.messages"].value, entries["flush.ms"].value) == ("1", str(LONG_MAX))
    assert not entries["cleanup.policy"].read_only and entries["cleanup.policy"].value == "delete"
    assert entries["min.cleanable.dirty.ratio"].value == "0.5"
    assert entries["min.cleanable.dirty.ratio"].config_type is ConfigType.DOUBLE
    assert entries["compression.type"].read_only
    assert not entries["retention.bytes"].read_only


def test_set_values_are_topic_configs_and_flush_maps_both_ways() -> None:
    entries = _entries(TopicConfig(retention_ms=1000, flush="interval:250"))
    assert entries["retention.ms"].source is ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert (entries["flush.messages"].value, entries["flush.ms"].value) == (str(LONG_MAX), "250")
    never = _entries(TopicConfig(flush="never"))
    assert (never["flush.messages"].value, never["flush.ms"].value) == (str(LONG_MAX),) * 2
    assert topic_configs.describe_topic(TopicConfig(), 3, ["retention.ms", "nope"])[0].name == (
        "retention.ms"
    )


@pytest.mark.parametrize(
    ("values", "fields"),
    [
        ({"retention.ms": "60000"}, {"retention_ms": 60000}),
        ({"unclean.leader.election.enable": "TRUE"}, {"unclean_leader_election": True}),
        ({"flush.messages": "1"}, {"flush": "always"}),
        ({"flush.ms": "500"}, {"flush": "interval:500"}),
        ({"flush.messages": str(LONG_MAX), "flush.ms": str(LONG_MAX)}, {"flush": "never"}),
        ({"cleanup.policy": "delete, compact"}, {"cleanup_policy": "compact,delete"}),
        ({"cleanup.policy": "compact"}, {"cleanup_policy": "compact"}),
        ({"min.cleanable.dirty.ratio": "0.1"}, {"min_cleanable_dirty_ratio": 0.1}),
        ({"delete.retention.ms": "1000"}, {"delete_retention_ms": 1000}),
        ({"compression.type": "producer"}, {}),  # the fixed value: a no-op
    ],
)
def test_changes(values: dict[str, str], fields: dict[str, object]) -> None:
    assert topic_configs.changes(values) == (fields, [])


@pytest.mark.parametrize(
    "values",
    [
        {"retention.ms": "soon"},
        {"no.such.config": "1"},
        {"cleanup.policy": "shred"},
        {"min.cleanable.dirty.ratio": "1.5"},
        {"min.cleanable.dirty.ratio": "half"},
        {"flush.messages": "100"},
        {"flush.ms": "0"},
        {"unclean.leader.election.enable": "maybe"},
        {"segment.bytes": str(2**64)},
    ],
)
def test_bad_values_are_invalid_config(values: dict[str, str]) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        topic_configs.changes(values)
    assert raised.value.code is ErrorCode.INVALID_CONFIG


def test_deletes_reset_and_replacement_resets_every_other_setting() -> None:
    assert topic_configs.changes({}, ["retention.ms", "flush.ms"]) == (
        {},
        ["retention_ms", "flush"],
    )
    assert topic_configs.changes({"retention.ms": None}) == ({}, ["retention_ms"])
    fields, reset = topic_configs.replacement({"retention.ms": "5"})
    assert fields == {"retention_ms": 5}
    assert set(reset) == {
        "retention_bytes",
        "segment_bytes",
        "max_message_bytes",
        "min_insync_replicas",
        "unclean_leader_election",
        "flush",
        "cleanup_policy",
        "delete_retention_ms",
        "min_cleanable_dirty_ratio",
    }


def test_creation_builds_a_topic_config() -> None:
    assert topic_configs.creation({}) is None
    created = topic_configs.creation({"retention.ms": "10", "flush.ms": "20"})
    assert created == TopicConfig(retention_ms=10, flush="interval:20")


@given(st.dictionaries(st.sampled_from([*topic_configs.SETTINGS, "x.y"]), st.text(max_size=25)))
def test_any_strings_give_changes_the_coordinator_accepts_or_invalid_config(
    values: dict[str, str],
) -> None:
    try:
        fields, reset = topic_configs.changes(values)
    except InvalidRequestError as exc:
        assert exc.code is ErrorCode.INVALID_CONFIG
        return
    try:  # the coordinator's own merge decides the rest, with the same error code
        merge_config(TopicConfig(), fields, reset)
    except InvalidRequestError as exc:
        assert exc.code is ErrorCode.INVALID_CONFIG


_CONFIGS = st.builds(
    TopicConfig,
    retention_ms=st.integers(-1, 2**40),
    retention_bytes=st.integers(-1, 2**40),
    flush=st.sampled_from(["always", "never", "interval:1", "interval:250"]),
    min_insync_replicas=st.none() | st.integers(1, 3),
    unclean_leader_election=st.booleans(),
    cleanup_policy=st.sampled_from(["delete", "compact", "compact,delete"]),
    min_cleanable_dirty_ratio=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
)


@given(_CONFIGS)
def test_the_clients_kafka_values_and_the_brokers_description_round_trip(
    config: TopicConfig,
) -> None:
    """What Conveyor's Kafka admin client sends for a config is what the broker turns
    back into it (CreateTopics), and what DescribeConfigs answers reads back as it."""
    sets, deletes = topic_configs.kafka_values(topic_configs.explicit_fields(config))
    assert deletes == []
    assert (topic_configs.creation(sets) or TopicConfig()) == config
    dynamic = {
        e.name: e.value
        for e in topic_configs.describe_topic(config, 3)
        if e.source is ConfigSource.DYNAMIC_TOPIC_CONFIG
    }
    assert topic_configs.from_described(dynamic) == config


def test_kafka_values_of_a_change_and_a_reset() -> None:
    sets, deletes = topic_configs.kafka_values(
        {"flush": "interval:50", "min_insync_replicas": None}, reset=["retention_ms"]
    )
    assert sets == {"flush.messages": str(LONG_MAX), "flush.ms": "50"}
    assert deletes == ["min.insync.replicas", "retention.ms"]
    assert topic_configs.changes(sets, deletes) == (
        {"flush": "interval:50"},
        ["min_insync_replicas", "retention_ms"],
    )
    with pytest.raises(InvalidRequestError) as unknown:
        topic_configs.kafka_values({"bogus": 1})
    assert unknown.value.code is ErrorCode.INVALID_CONFIG
