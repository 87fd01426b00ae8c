"""A partition's transactions from its log (issue 21): open and aborted transactions, the
last stable offset, and the same index rebuilt from the log after reopening."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.batch import CRC_START, TRANSACTIONAL_BIT, crc32c
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.records import BatchBuilder
from conveyor.protocol.txn import ABORT, COMMIT, marker_batch, marker_type
from conveyor.storage import PartitionLog
from conveyor.storage.txnindex import AbortedTxn


def _txn_batch(producer_id: int, count: int = 2) -> bytes:
    builder = BatchBuilder(producer_id=producer_id, producer_epoch=0, base_sequence=0)
    for i in range(count):
        builder.append(b"v%d" % i, timestamp_ms=1)
    batch = bytearray(builder.build())
    batch[22] |= TRANSACTIONAL_BIT  # attributes' low byte, then the CRC again
    batch[17:21] = crc32c(memoryview(batch)[CRC_START:]).to_bytes(4, "big")
    return bytes(batch)


def test_open_commit_abort_and_the_last_stable_offset(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "p")
    try:
        log.append(_txn_batch(1))  # offsets 0-1, producer 1 opens
        log.append(_txn_batch(2))  # 2-3, producer 2 opens
        assert log.last_stable_offset(4) == 0
        log.append(marker_batch(1, 0, True, 0, 1), allow_control=True)  # 4: 1 commits
        assert log.last_stable_offset(5) == 2
        log.append(marker_batch(2, 0, False, 0, 1), allow_control=True)  # 5: 2 aborts
        assert log.last_stable_offset(6) == 6
        assert log.last_stable_offset(3) == 3  # never above the high watermark
        assert log.aborted_in(0, 6) == [AbortedTxn(2, 2, 5, 6)]
        assert log.aborted_in(6, 10) == []
        log.append(_txn_batch(1))  # 6-7: producer 1's next transaction
    finally:
        log.close()
    reopened = PartitionLog.open(tmp_path / "p")
    try:
        assert reopened.aborted_in(0, 8) == [AbortedTxn(2, 2, 5, 6)]
        assert reopened.last_stable_offset(8) == 6
        reopened.truncate_to(5)  # the abort marker is gone: producer 2 is open again
        assert reopened.aborted_in(0, 8) == []
        assert reopened.last_stable_offset(5) == 2
    finally:
        reopened.close()


def test_clients_cannot_write_markers(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "p")
    try:
        with pytest.raises(InvalidRequestError) as refused:
            log.append(marker_batch(1, 0, True, 0, 1))
        assert refused.value.code is ErrorCode.INVALID_RECORD
        assert log.log_end_offset == 0
    finally:
        log.close()


def test_marker_type_round_trips() -> None:
    assert marker_type(marker_batch(3, 1, True, 7, 1)) == COMMIT
    assert marker_type(marker_batch(3, 1, False, 7, 1)) == ABORT


@given(st.binary(max_size=120))
def test_marker_type_never_raises_on_garbage(data: bytes) -> None:
    assert marker_type(data) in (None, ABORT, COMMIT)
