"""The durability and read contract every partition log keeps: the real ``PartitionLog``
on disk and the simulation's ``MemoryLog`` (tests/sim/memlog.py) pass the same cases, so
what the simulation proves about the broker core holds with the real storage."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from conveyor.protocol.errors import ConveyorError, CorruptBatchError, ErrorCode
from conveyor.protocol.records import decode_batches, encode_batch
from conveyor.storage import PartitionLog
from tests.sim.memlog import MemoryLog


class Log(Protocol):
    log_start_offset: int
    log_end_offset: int
    durable_offset: int
    latest_epoch: int

    def append(self, batches: bytes, *, leader_epoch: int = 0) -> Any: ...
    def append_replicated(self, data: bytes) -> Any: ...
    def read(self, offset: int, max_bytes: int, *, upper_offset: int | None = None) -> bytes: ...
    def truncate_to(self, offset: int) -> None: ...
    def reset_to(self, offset: int) -> None: ...
    def advance_start(self, offset: int) -> int: ...
    def assign_epoch(self, epoch: int) -> None: ...
    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]: ...
    def flush(self) -> int: ...


def batch(*values: bytes) -> bytes:
    return encode_batch([(None, v) for v in values], timestamp_ms=1_700_000_000_000)


def values(data: bytes) -> list[tuple[int, bytes | None]]:
    return [(r.offset, r.value) for r in decode_batches(data)]


@pytest.fixture(params=["disk", "memory"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Log]]:
    opened: list[PartitionLog] = []

    def factory() -> Log:
        if request.param == "memory":
            return MemoryLog()
        log = PartitionLog.open(tmp_path / f"t-{len(opened)}")
        opened.append(log)
        return log  # type: ignore[return-value]

    yield factory
    for log in opened:
        log.close()


def test_appends_get_consecutive_offsets_and_read_back_whole(make: Callable[[], Log]) -> None:
    log = make()
    log.append(batch(b"a", b"b"), leader_epoch=1)
    log.append(batch(b"c"), leader_epoch=1)
    assert (log.log_start_offset, log.log_end_offset) == (0, 3)
    assert values(log.read(0, 1 << 20)) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert values(log.read(1, 1)) == [(0, b"a"), (1, b"b")]  # the batch holding 1, whole
    assert log.read(3, 1 << 20) == b""  # nothing yet at the log end


def test_reads_stop_below_the_upper_offset_and_refuse_out_of_range(make: Callable[[], Log]) -> None:
    log = make()
    log.append(batch(b"a"))
    log.append(batch(b"b"))
    assert values(log.read(0, 1 << 20, upper_offset=1)) == [(0, b"a")]
    assert log.read(0, 1 << 20, upper_offset=0) == b""
    with pytest.raises(ConveyorError) as caught:
        log.read(5, 100)
    assert caught.value.code is ErrorCode.OFFSET_OUT_OF_RANGE


def test_a_bad_batch_writes_nothing(make: Callable[[], Log]) -> None:
    log = make()
    corrupt = bytearray(batch(b"x"))
    corrupt[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError):
        log.append(batch(b"ok") + bytes(corrupt))
    assert log.log_end_offset == 0


def test_replicated_batches_are_copied_byte_for_byte_and_contiguously(
    make: Callable[[], Log],
) -> None:
    leader, follower = make(), make()
    leader.append(batch(b"a"), leader_epoch=3)
    leader.append(batch(b"b", b"c"), leader_epoch=4)
    follower.append_replicated(leader.read(0, 1 << 20))
    assert follower.read(0, 1 << 20) == leader.read(0, 1 << 20)
    assert follower.end_offset_for_epoch(3) == leader.end_offset_for_epoch(3) == (3, 1)
    with pytest.raises(ConveyorError) as caught:
        follower.append_replicated(leader.read(1, 1 << 20))  # not at the follower's end
    assert caught.value.code is ErrorCode.OFFSET_OUT_OF_RANGE


def test_truncation_removes_whole_batches_and_the_epochs_beyond(make: Callable[[], Log]) -> None:
    log = make()
    log.append(batch(b"a"), leader_epoch=1)
    log.append(batch(b"b", b"c"), leader_epoch=2)
    log.append(batch(b"d"), leader_epoch=3)
    log.truncate_to(3)
    assert log.log_end_offset == 3 and log.latest_epoch == 2
    assert log.end_offset_for_epoch(5) == (2, 3)
    log.truncate_to(2)  # inside a batch: the batch holding offset 2 goes
    assert log.log_end_offset == 1 and log.latest_epoch == 1
    log.reset_to(10)
    assert (log.log_start_offset, log.log_end_offset, log.latest_epoch) == (10, 10, -1)
    log.append(batch(b"e"))
    assert values(log.read(10, 100)) == [(10, b"e")]


def test_a_new_leader_records_where_its_epoch_starts(make: Callable[[], Log]) -> None:
    log = make()
    log.append(batch(b"a"), leader_epoch=1)
    log.assign_epoch(4)
    assert log.end_offset_for_epoch(1) == (1, 1)
    assert log.end_offset_for_epoch(4) == (4, 1)
    assert log.end_offset_for_epoch(0) == (-1, -1)


def test_flush_makes_everything_written_durable(make: Callable[[], Log]) -> None:
    log = make()
    log.append(batch(b"a"))
    log.append(batch(b"b"))
    assert log.flush() == log.durable_offset == 2
    log.truncate_to(1)
    assert log.durable_offset <= 1


def test_a_crash_keeps_what_was_durable_and_a_prefix_of_the_rest(tmp_path: Path) -> None:
    """Both logs after a power loss: the durable part always survives, the rest maybe in
    part, never with a hole (the disk log is reopened without a clean close)."""
    memory = MemoryLog()
    with PartitionLog.open(tmp_path / "t-0") as disk:
        for log in (memory, disk):
            log.append(batch(b"a"))
            log.flush()
            log.append(batch(b"b"))
            log.append(batch(b"c"))
        crashed = PartitionLog.open(tmp_path / "t-0")  # as a restart after a crash would
        try:
            memory.crash(random.Random(1))
            for log in (memory, crashed):
                assert log.log_end_offset >= 1
                kept = values(log.read(0, 1 << 20))
                assert kept == [(0, b"a"), (1, b"b"), (2, b"c")][: len(kept)]
                assert log.durable_offset == log.log_end_offset
        finally:
            crashed.close()


def test_deleting_records_moves_the_start_inside_a_batch(make: Callable[[], Log]) -> None:
    log = make()
    log.append(batch(b"a", b"b", b"c"))
    log.append(batch(b"d", b"e"))
    assert log.advance_start(1) == 1
    assert log.advance_start(0) == 1  # never back
    assert log.log_start_offset == 1
    with pytest.raises(ConveyorError) as caught:
        log.read(0, 1 << 20)
    assert caught.value.code is ErrorCode.OFFSET_OUT_OF_RANGE
    # the batch holding the start is returned whole
    assert values(log.read(1, 1 << 20)) == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d"), (4, b"e")]
    with pytest.raises(ConveyorError):
        log.advance_start(6)
    assert log.advance_start(5) == 5
    assert (log.log_start_offset, log.log_end_offset) == (5, 5)
    assert log.append(batch(b"f")) == (5, 5)


def test_a_follower_restarted_inside_a_batch_takes_it_whole(make: Callable[[], Log]) -> None:
    leader, follower = make(), make()
    leader.append(batch(b"a", b"b", b"c"))
    leader.advance_start(2)
    follower.reset_to(2)
    follower.append_replicated(leader.read(2, 1 << 20))
    assert (follower.log_start_offset, follower.log_end_offset) == (2, 3)
    assert follower.read(2, 1 << 20) == leader.read(2, 1 << 20)


def test_truncating_at_the_batch_holding_the_start_restarts_at_the_start(
    make: Callable[[], Log],
) -> None:
    log = make()
    log.append(batch(b"a", b"b", b"c"))
    log.append(batch(b"d"))
    log.advance_start(1)
    log.truncate_to(2)
    assert (log.log_start_offset, log.log_end_offset) == (1, 1)
    log.append(batch(b"x"))
    log.truncate_to(0)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
