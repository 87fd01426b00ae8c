from __future__ import annotations

import base64

import pytest

from conveyor.broker.routing import group_by_partition, partitions_for, unkeyed_count
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import JsonRecord
from conveyor.protocol.partitioner import partition_for_key


def test_keys_map_like_kafka() -> None:
    records = [JsonRecord(key=f"key-{i}", value="v") for i in range(20)]
    got = partitions_for(records, 8, 0)
    assert got == [partition_for_key(f"key-{i}".encode(), 8) for i in range(20)]
    assert len(set(got)) > 1


def test_base64_key_is_hashed_as_its_bytes() -> None:
    raw = b"\xff\x00key"
    record = JsonRecord(key=base64.b64encode(raw).decode(), key_encoding="base64", value="v")
    assert partitions_for([record], 8, 0) == [partition_for_key(raw, 8)]


def test_unkeyed_round_robin_from_the_counter() -> None:
    records = [JsonRecord(value="a"), JsonRecord(key="k", value="b"), JsonRecord(value="c")]
    got = partitions_for(records, 4, 3)
    assert got[0] == 3
    assert got[2] == 0
    assert unkeyed_count(records) == 2


def test_explicit_partition_and_range() -> None:
    assert partitions_for([JsonRecord(value="a", partition=2)], 4, 0) == [2]
    with pytest.raises(InvalidRequestError) as caught:
        partitions_for([JsonRecord(value="a", partition=4)], 4, 0)
    assert caught.value.code is ErrorCode.UNKNOWN_PARTITION


def test_bad_base64_key() -> None:
    with pytest.raises(InvalidRequestError):
        partitions_for([JsonRecord(key="not base64!", key_encoding="base64")], 4, 0)


def test_group_keeps_request_order() -> None:
    assert group_by_partition([1, 0, 1, 2, 0]) == {1: [0, 2], 0: [1, 4], 2: [3]}
