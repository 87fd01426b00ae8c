"""Partition's durability callbacks: a truncated write is retriable, not a failed log."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from pathlib import Path

from conveyor.broker.partition import Partition
from conveyor.broker.reconcile import ReplicaState, TopicPartition
from conveyor.protocol.errors import LogTruncatedError, StorageError
from conveyor.protocol.messages import BrokerId
from conveyor.protocol.records import encode_batch
from conveyor.storage import PartitionLog


def _batch() -> bytes:
    return encode_batch([(None, b"v")], timestamp_ms=1_700_000_000_000)


def _failed(exc: Exception) -> Future[int]:
    future: Future[int] = Future()
    future.set_exception(exc)
    return future


def test_log_truncated_keeps_the_partition_writable(tmp_path: Path) -> None:
    async def body() -> None:
        with PartitionLog.open(tmp_path / "t-0") as log_:
            state = ReplicaState(role="leader", leader_epoch=1, leader=BrokerId(1))
            partition = Partition(TopicPartition("t", 0), BrokerId(1), log_, state)
            partition._durable_done(_failed(LogTruncatedError("offset 3 was truncated")))
            assert partition.failure is None
            assert partition.append(_batch()).last_offset == 0

    asyncio.run(body())


def test_storage_error_fails_the_partition(tmp_path: Path) -> None:
    async def body() -> None:
        with PartitionLog.open(tmp_path / "t-0") as log_:
            state = ReplicaState(role="leader", leader_epoch=1, leader=BrokerId(1))
            partition = Partition(TopicPartition("t", 0), BrokerId(1), log_, state)
            partition._durable_done(_failed(StorageError("fsync failed")))
            assert isinstance(partition.failure, StorageError)

    asyncio.run(body())


# ---- the leader's view of its followers: high watermark and ISR proposals -----------------

B1, B2, B3 = BrokerId(1), BrokerId(2), BrokerId(3)


def _leader(log_: PartitionLog, isr: tuple[BrokerId, ...] = (B1, B2, B3)) -> Partition:
    state = ReplicaState(role="leader", leader_epoch=4, leader=B1, replicas=(B1, B2, B3), isr=isr)
    return Partition(TopicPartition("t", 0), B1, log_, state)


def test_the_high_watermark_waits_for_every_isr_member_durably(tmp_path: Path) -> None:
    async def body() -> None:
        with PartitionLog.open(tmp_path / "t-0") as log_:
            partition = _leader(log_)
            for _ in range(5):
                partition.append(_batch())
            log_.flush()
            partition.refresh_high_watermark()
            assert partition.high_watermark == 0  # no follower has reported
            partition.record_fetch(B2, 5, 5, now_ms=1000)
            assert partition.high_watermark == 0  # B3 still holds nothing we know of
            partition.record_fetch(B3, 5, 3, now_ms=1000)  # fetched 5, durable 3
            assert partition.high_watermark == 3
            partition.record_fetch(B3, 5, 5, now_ms=1001)
            assert partition.high_watermark == 5
            partition.record_fetch(B3, 2, 2, now_ms=1002)  # a truncated follower: never back
            assert partition.high_watermark == 5

    asyncio.run(body())


def test_a_new_leader_records_its_epoch_for_followers(tmp_path: Path) -> None:
    async def body() -> None:
        with PartitionLog.open(tmp_path / "t-0") as log_:
            partition = _leader(log_)
            partition.append(_batch())
            assert log_.end_offset_for_epoch(4) == (4, 1)

    asyncio.run(body())


def test_isr_shrinks_after_the_lag_time_and_expands_when_caught_up(tmp_path: Path) -> None:
    async def body() -> None:
        with PartitionLog.open(tmp_path / "t-0") as log_:
            partition = _leader(log_)
            start = partition.leader_since_ms
            for _ in range(3):
                partition.append(_batch())
            log_.flush()
            partition.record_fetch(B2, 3, 3, now_ms=start + 100)
            # B3 never fetched this epoch: in the ISR until the lag time has passed.
            assert partition.isr_proposal(start + 5_000, lag_time_max_ms=10_000) is None
            assert partition.isr_proposal(start + 10_001, lag_time_max_ms=10_000) == (B1, B2)
            # B2 keeps fetching a busy log, never at its end at arrival, but each time at
            # least where the end was at its previous fetch: it keeps up, and stays.
            for n in range(20):
                partition.append(_batch())
                partition.record_fetch(B2, 3 + n, 3 + n, now_ms=start + 10_000 + n)
            assert partition.isr_proposal(start + 10_500, lag_time_max_ms=10_000) == (B1, B2)
            # It stops fetching: it leaves once the lag time has passed.
            assert partition.isr_proposal(start + 20_030, lag_time_max_ms=10_000) == (B1,)
            # Out of the ISR, B3 rejoins once it holds durably at least the high watermark.
            partition.state = ReplicaState(
                role="leader", leader_epoch=4, leader=B1, replicas=(B1, B2, B3), isr=(B1, B2)
            )
            partition.record_fetch(B3, 1, 1, now_ms=start + 11_000)
            assert partition.isr_proposal(start + 11_000, lag_time_max_ms=10_000) is None
            end = log_.log_end_offset
            partition.record_fetch(B3, end, end, now_ms=start + 11_001)
            assert partition.isr_proposal(start + 11_001, lag_time_max_ms=10_000) == (B1, B2, B3)

    asyncio.run(body())


def test_a_duplicate_idempotent_batch_gets_its_first_offsets(tmp_path: Path) -> None:
    from conveyor.protocol.errors import ErrorCode, InvalidRequestError
    from conveyor.protocol.records import BatchBuilder

    def batch(sequence: int, epoch: int = 0) -> bytes:
        builder = BatchBuilder()
        builder.append(b"a")
        builder.append(b"b")
        builder.set_producer(7, epoch, sequence)
        return builder.build()

    async def body() -> None:
        with PartitionLog.open(tmp_path / "t-0") as log_:
            partition = _leader(log_, isr=(B1,))
            assert partition.append(batch(0)) == (0, 1)
            assert partition.append(batch(0)) == (0, 1)
            assert log_.log_end_offset == 2
            assert partition.append(batch(2)) == (2, 3)
            for wrong, code in ((9, ErrorCode.OUT_OF_ORDER_SEQUENCE),):
                try:
                    partition.append(batch(wrong))
                except InvalidRequestError as exc:
                    assert exc.code is code
                else:
                    raise AssertionError("a gap was accepted")
            assert partition.append(batch(0, epoch=1)) == (4, 5)
            try:
                partition.append(batch(4, epoch=0))
            except InvalidRequestError as exc:
                assert exc.code is ErrorCode.PRODUCER_FENCED
            else:
                raise AssertionError("a fenced producer was accepted")
            assert log_.log_end_offset == 6
        # Reopened, the state comes back from the log's headers.
        from conveyor.broker import producers

        with PartitionLog.open(tmp_path / "t-0") as log_:
            rebuilt = producers.rebuild(log_)
            assert rebuilt[7].producer_epoch == 1
            assert rebuilt[7].batches[-1].base_offset == 4

    asyncio.run(body())


def test_a_follower_that_stopped_fetching_never_rejoins_on_old_progress(tmp_path: Path) -> None:
    async def body() -> None:
        with PartitionLog.open(tmp_path / "t-0") as log_:
            partition = _leader(log_, isr=(B1, B2))
            start = partition.leader_since_ms
            partition.append(_batch())
            log_.flush()
            partition.record_fetch(B3, 1, 1, now_ms=start + 10)  # its last fetch, then it died
            partition.record_fetch(B2, 1, 1, now_ms=start + 10)
            assert partition.isr_proposal(start + 20, lag_time_max_ms=10_000) == (B1, B2, B3)
            assert partition.isr_proposal(start + 5_000, lag_time_max_ms=10_000) is None

    asyncio.run(body())
