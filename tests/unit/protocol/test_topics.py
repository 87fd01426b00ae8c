"""Topic rules both the coordinator and the brokers apply (protocol/topics.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.coordinator.validation import validate_topic_config
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import TopicConfig
from conveyor.protocol.topics import FlushPolicy, min_insync_replicas, validate_topic_name
from conveyor.storage import LogConfig


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "orders",
        "Orders.v2",
        "Orders.v2_x-1",
        "a_b-c.d",
        "0",
        "..a",
        "x" * 249,
        "-",
        "_",
        "...",
    ],
)
def test_valid_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "x" * 250, "a b", "a/b", "ü", "ä", "a:b", "a,b", "a\n", "a%20", "../x"],
)
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_topic_name(name)
    assert caught.value.code is ErrorCode.INVALID_TOPIC


@pytest.mark.parametrize(
    ("configured", "rf", "expected"),
    [(None, 1, 1), (None, 2, 1), (None, 3, 2), (None, 5, 2), (3, 3, 3)],
)
def test_min_insync_replicas(configured: int | None, rf: int, expected: int) -> None:
    assert min_insync_replicas(configured, rf) == expected


@given(
    retention_ms=st.one_of(st.just(-1), st.integers(-5, 10**12)),
    retention_bytes=st.one_of(st.just(-1), st.integers(-5, 10**12)),
    segment_bytes=st.integers(0, 2**32),
    max_message_bytes=st.integers(0, 2**31),
    flush=st.sampled_from(["always", "never", "interval", "interval:0", "interval:5", "x"]),
)
def test_every_config_the_coordinator_accepts_opens_on_a_broker(
    retention_ms: int, retention_bytes: int, segment_bytes: int, max_message_bytes: int, flush: str
) -> None:
    """The coordinator checks the storage limits itself (no storage import); a config it
    accepts must always make a LogConfig a broker can open."""
    config = TopicConfig(
        retention_ms=retention_ms,
        retention_bytes=retention_bytes,
        segment_bytes=segment_bytes,
        max_message_bytes=max_message_bytes,
        flush=flush,
    )
    try:
        validate_topic_config(config, replication_factor=3)
    except InvalidRequestError:
        return
    LogConfig(
        segment_bytes_max=segment_bytes,
        batch_bytes_max=max_message_bytes,
        retention_bytes=retention_bytes,
        retention_ms=retention_ms,
        flush=FlushPolicy.parse(flush),
    )
