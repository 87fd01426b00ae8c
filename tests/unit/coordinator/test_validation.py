from __future__ import annotations

import pytest

from conveyor.coordinator.validation import (
    validate_broker_url,
    validate_group_name,
    validate_topic_config,
)
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import TopicConfig


def test_group_names_are_kafkas_printable_ids_without_a_path_separator() -> None:
    for name in ("my-group.1", "my group", "roundrobin,range", "a:b"):
        validate_group_name(name)
    for bad in ("", ".", "..", "a/b", "a\\b", "tab\there", "x" * 250):
        with pytest.raises(InvalidRequestError) as caught:
            validate_group_name(bad)
        assert caught.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    "config",
    [
        TopicConfig(),
        TopicConfig(retention_ms=-1, retention_bytes=1 << 30, flush="interval:250"),
        TopicConfig(flush="never", segment_bytes=1024, max_message_bytes=61),
        TopicConfig(min_insync_replicas=2),
    ],
)
def test_sane_configs(config: TopicConfig) -> None:
    validate_topic_config(config, replication_factor=3)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TopicConfig(retention_ms=0), "retention_ms"),
        (TopicConfig(retention_bytes=-2), "retention_bytes"),
        (TopicConfig(segment_bytes=1023), "segment_bytes"),
        (TopicConfig(segment_bytes=2**31), "segment_bytes"),
        (TopicConfig(max_message_bytes=60), "max_message_bytes"),
        (TopicConfig(min_insync_replicas=4), "min_insync_replicas"),
        (TopicConfig(min_insync_replicas=0), "min_insync_replicas"),
        (TopicConfig(flush="sometimes"), "flush policy"),
        (TopicConfig(flush="interval:0"), "interval_ms"),
    ],
)
def test_insane_configs(config: TopicConfig, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as caught:
        validate_topic_config(config, replication_factor=3)
    assert caught.value.code is ErrorCode.INVALID_CONFIG


@pytest.mark.parametrize("url", ["", "127.0.0.1:9000", "ftp://x", "http://" + "x" * 3000])
def test_invalid_broker_urls(url: str) -> None:
    with pytest.raises(InvalidRequestError):
        validate_broker_url(url)
