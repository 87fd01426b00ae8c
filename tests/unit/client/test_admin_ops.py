"""The rules of Admin.delete_records and AsyncAdmin.delete_records (admin_ops.py): what
each leader is asked, which partitions are tried again, when the request gives up."""

from __future__ import annotations

import pytest

from conveyor.client import admin_ops as ops
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.messages import PartitionOffsets

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def _moved() -> RetriableError:
    return RetriableError("moved", code=ErrorCode.NOT_LEADER)


def test_an_offset_is_deleted_at_once_a_time_asks_the_leader_first() -> None:
    deletion = ops.RecordsDeletion({A: 7, ("t", 1): ops.Timestamp(1_000)}, timeout_ms=500)
    assert deletion.offsets_call(A) is None
    ask = deletion.offsets_call(B)
    assert ask is not None and ask.path == "/v1/topics/t/partitions/1/offsets?timestamp_ms=1000"
    assert deletion.delete_call(A, None).path.endswith("?before_offset=7&timeout_ms=500")
    offsets = PartitionOffsets(
        topic="t", partition=1, leader_epoch=0, log_start_offset=0, high_watermark=20,
        log_end_offset=20, offset_for_timestamp=12,
    )  # fmt: skip
    assert deletion.delete_call(B, offsets).path.endswith("?before_offset=12&timeout_ms=500")
    assert deletion.timeout_s == 10.5  # past the leader's own REQUEST_TIMED_OUT


def test_a_moved_leader_is_tried_again_other_errors_are_final() -> None:
    deletion = ops.RecordsDeletion({A: 1, B: 2}, timeout_ms=500)
    refused = ConveyorError("beyond", code=ErrorCode.OFFSET_OUT_OF_RANGE)
    assert deletion.settle({A: _moved(), B: refused})
    assert deletion.pending == {A: 1}
    assert 0.08 <= deletion.pause_s(0.0) <= deletion.pause_s(0.99) <= 0.12
    assert not deletion.settle({A: 4})
    with pytest.raises(ConveyorError) as raised:
        deletion.result()
    assert raised.value is refused
    assert deletion.done == {A: 4}


def test_a_leader_still_moved_at_the_last_attempt_fails_the_request() -> None:
    deletion = ops.RecordsDeletion({A: 1}, timeout_ms=500)
    for _ in range(ops.DELETE_RECORDS_ATTEMPTS - 1):
        assert deletion.settle({A: _moved()})
    assert not deletion.settle({A: _moved()})
    with pytest.raises(RetriableError):
        deletion.result()
