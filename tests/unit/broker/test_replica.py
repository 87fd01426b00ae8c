"""One replica's rules (broker/replica.py): the high watermark, ISR proposals, epochs,
idempotence; and how the shell treats a failed flush (a truncated write is retriable, not a
failed log)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path

from msgspec.structs import replace

from conveyor.broker.replica import (
    Replica,
    appended,
    flushed,
    isr_proposal,
    new_replica,
    record_fetch,
)
from conveyor.broker.replicas import rebuild_producers
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, LogTruncatedError, StorageError
from conveyor.protocol.messages import BrokerId, Offset
from conveyor.protocol.records import BatchBuilder, encode_batch
from conveyor.protocol.replica import AssignEpoch, LogFacts, ReplicaState, TopicPartition
from conveyor.storage import PartitionLog
from tests.unit.broker.conftest import FakeNetwork, brokers, heartbeat_answer

Run = Callable[[Callable[[], Awaitable[None]]], None]
TP = TopicPartition("t", 0)


def _batch() -> bytes:
    return encode_batch([(None, b"v")], timestamp_ms=1_700_000_000_000)


def _failed(exc: Exception) -> Future[int]:
    future: Future[int] = Future()
    future.set_exception(exc)
    return future


def test_log_truncated_keeps_the_partition_writable(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            log_ = broker.replicas.logs[TP]
            broker.driver._durable_done(TP, log_, _failed(LogTruncatedError("offset 3 gone")))
            assert broker.driver.state.replicas[TP].failure is None
            assert (await broker.produce("t", 0, _batch(), acks="1")).last_offset == 0

    run(body)


def test_storage_error_fails_the_partition(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            log_ = broker.replicas.logs[TP]
            broker.driver._durable_done(TP, log_, _failed(StorageError("fsync failed")))
            assert isinstance(broker.driver.state.replicas[TP].failure, StorageError)

    run(body)


# ---- the leader's view of its followers: high watermark and ISR proposals -----------------

B1, B2, B3 = BrokerId(1), BrokerId(2), BrokerId(3)
START_MS = 1_000_000


def _leader(isr: tuple[BrokerId, ...] = (B1, B2, B3), end: int = 0) -> Replica:
    state = ReplicaState(role="leader", leader_epoch=4, leader=B1, replicas=(B1, B2, B3), isr=isr)
    replica, _ = new_replica(TP, B1, state, LogFacts(), {}, START_MS)
    return _written(replica, end) if end else replica


def _written(replica: Replica, end: int, durable: int | None = None) -> Replica:
    """The leader appended up to ``end`` and flushed up to ``durable`` (default: all)."""
    facts = replace(replica.log, log_end_offset=Offset(end))
    replica, _ = appended(replica, facts)
    replica, _ = flushed(replica, end if durable is None else durable)
    return replica


def _fetch(replica: Replica, broker: BrokerId, offset: int, durable: int, now_ms: int) -> Replica:
    replica, _ = record_fetch(replica, broker, offset, durable, now_ms)
    return replica


def test_the_high_watermark_waits_for_every_isr_member_durably() -> None:
    partition = _written(_leader(), 5)
    assert partition.high_watermark == 0  # no follower has reported
    partition = _fetch(partition, B2, 5, 5, now_ms=1000)
    assert partition.high_watermark == 0  # B3 still holds nothing we know of
    partition = _fetch(partition, B3, 5, 3, now_ms=1000)  # fetched 5, durable 3
    assert partition.high_watermark == 3
    partition = _fetch(partition, B3, 5, 5, now_ms=1001)
    assert partition.high_watermark == 5
    partition = _fetch(partition, B3, 2, 2, now_ms=1002)  # a truncated follower: never back
    assert partition.high_watermark == 5


def test_a_new_leader_records_its_epoch_for_followers(tmp_path: Path) -> None:
    state = ReplicaState(role="leader", leader_epoch=4, leader=B1, replicas=(B1,), isr=(B1,))
    _, effects = new_replica(TP, B1, state, LogFacts(), {}, START_MS)
    assert AssignEpoch(tp=TP, epoch=4) in effects
    with PartitionLog.open(tmp_path / "t-0") as log_:
        for effect in effects:  # as the shell performs it, before the first append
            if isinstance(effect, AssignEpoch):
                log_.assign_epoch(effect.epoch)
        log_.append(_batch(), leader_epoch=4)
        assert log_.end_offset_for_epoch(4) == (4, 1)


def test_isr_shrinks_after_the_lag_time_and_expands_when_caught_up() -> None:
    partition = _written(_leader(), 3)
    start = partition.leader_since_ms
    partition = _fetch(partition, B2, 3, 3, now_ms=start + 100)
    # B3 never fetched this epoch: in the ISR until the lag time has passed.
    assert isr_proposal(partition, start + 5_000, lag_time_max_ms=10_000) is None
    assert isr_proposal(partition, start + 10_001, lag_time_max_ms=10_000) == (B1, B2)
    # B2 keeps fetching a busy log, never at its end at arrival, but each time at
    # least where the end was at its previous fetch: it keeps up, and stays.
    for n in range(20):
        partition = _written(partition, partition.log.log_end_offset + 1)
        partition = _fetch(partition, B2, 3 + n, 3 + n, now_ms=start + 10_000 + n)
    assert isr_proposal(partition, start + 10_500, lag_time_max_ms=10_000) == (B1, B2)
    # It stops fetching: it leaves once the lag time has passed.
    assert isr_proposal(partition, start + 20_030, lag_time_max_ms=10_000) == (B1,)
    # Out of the ISR, B3 rejoins once it holds durably at least the high watermark.
    partition = replace(
        partition,
        state=ReplicaState(
            role="leader", leader_epoch=4, leader=B1, replicas=(B1, B2, B3), isr=(B1, B2)
        ),
    )
    partition = _fetch(partition, B3, 1, 1, now_ms=start + 11_000)
    assert isr_proposal(partition, start + 11_000, lag_time_max_ms=10_000) is None
    end = partition.log.log_end_offset
    partition = _fetch(partition, B3, end, end, now_ms=start + 11_001)
    assert isr_proposal(partition, start + 11_001, lag_time_max_ms=10_000) == (B1, B2, B3)


def test_a_duplicate_idempotent_batch_gets_its_first_offsets(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    def batch(sequence: int, epoch: int = 0) -> bytes:
        builder = BatchBuilder()
        builder.append(b"a")
        builder.append(b"b")
        builder.set_producer(7, epoch, sequence)
        return builder.build()

    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            log_ = broker.replicas.logs[TP]

            async def append(data: bytes) -> tuple[int, int]:
                answer = await broker.produce("t", 0, data, acks="1")
                return answer.base_offset, answer.last_offset

            assert await append(batch(0)) == (0, 1)
            assert await append(batch(0)) == (0, 1)
            assert log_.log_end_offset == 2
            assert await append(batch(2)) == (2, 3)
            for wrong, code in ((9, ErrorCode.OUT_OF_ORDER_SEQUENCE),):
                try:
                    await append(batch(wrong))
                except InvalidRequestError as exc:
                    assert exc.code is code
                else:
                    raise AssertionError("a gap was accepted")
            assert await append(batch(0, epoch=1)) == (4, 5)
            try:
                await append(batch(4, epoch=0))
            except InvalidRequestError as exc:
                assert exc.code is ErrorCode.PRODUCER_FENCED
            else:
                raise AssertionError("a fenced producer was accepted")
            assert log_.log_end_offset == 6
        # Reopened, the state comes back from the log's headers.
        with PartitionLog.open(tmp_path / "broker-1" / "t-0") as log_:
            rebuilt = rebuild_producers(log_)
            assert rebuilt[7].producer_epoch == 1
            assert rebuilt[7].batches[-1].base_offset == 4

    run(body)


def test_a_follower_that_stopped_fetching_never_rejoins_on_old_progress() -> None:
    partition = _written(_leader(isr=(B1, B2)), 1)
    start = partition.leader_since_ms
    partition = _fetch(partition, B3, 1, 1, now_ms=start + 10)  # its last fetch, then it died
    partition = _fetch(partition, B2, 1, 1, now_ms=start + 10)
    assert isr_proposal(partition, start + 20, lag_time_max_ms=10_000) == (B1, B2, B3)
    assert isr_proposal(partition, start + 5_000, lag_time_max_ms=10_000) is None
