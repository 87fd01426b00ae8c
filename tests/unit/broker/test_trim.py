"""Deleting records through the broker core (broker/trim.py): the leader's decision and its
typed refusals, the low watermark over the ISR, followers following the leader's log
start, and the operation on a real BrokerService with its logs on disk."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from msgspec.structs import replace

from conveyor.broker import core, follower, trim
from conveyor.broker.corestate import BrokerState, CoreConfig, with_replica
from conveyor.broker.replica import Replica, appended, flushed, new_replica, record_fetch
from conveyor.broker.rules import delete_records_offset, low_watermark
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, StorageError
from conveyor.protocol.messages import (
    BrokerId,
    Epoch,
    Offset,
    ReplicaFetchPartition,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
    ReplicaFetchResult,
    TopicConfig,
)
from conveyor.protocol.records import encode_batch
from conveyor.protocol.replica import (
    AdvanceFailed,
    AdvanceLogStart,
    AnswerDeleteRecords,
    AnswerReplicaFetch,
    DeleteRecordsArrived,
    Effect,
    LogChanged,
    LogFacts,
    ReplicaFetchAnswered,
    ReplicaFetchArrived,
    ReplicaState,
    SendReplicaFetch,
    Tick,
    TopicPartition,
)
from conveyor.protocol.topics import LogConfig
from tests.unit.broker.conftest import FakeNetwork, brokers, heartbeat_answer

Run = Callable[[Callable[[], Awaitable[None]]], None]
TP = TopicPartition("t", 0)
B1, B2, B3 = BrokerId(1), BrokerId(2), BrokerId(3)
NOW_MS = 1_000_000


def leader(end: int = 100, isr: tuple[BrokerId, ...] = (B1, B2, B3), **config: object) -> Replica:
    """Leader B1 with everything up to ``end`` durable on every ISR member (starts at 0)."""
    state = ReplicaState(
        role="leader",
        leader_epoch=4,
        leader=B1,
        replicas=(B1, B2, B3),
        isr=isr,
        log_config=LogConfig(**config),  # type: ignore[arg-type]
    )
    replica, _ = new_replica(TP, B1, state, LogFacts(), {}, NOW_MS)
    replica, _ = appended(replica, replace(replica.log, log_end_offset=Offset(end)))
    replica, _ = flushed(replica, end)
    for member in isr[1:]:
        replica, _ = record_fetch(replica, member, end, end, NOW_MS, 0)
    assert replica.high_watermark == end
    return replica


def ask(offset: int, trim_id: int = 7) -> DeleteRecordsArrived:
    return DeleteRecordsArrived(tp=TP, offset=offset, trim_id=trim_id, deadline_ms=NOW_MS + 5000)


def answers(effects: list[Effect]) -> list[AnswerDeleteRecords]:
    return [e for e in effects if isinstance(e, AnswerDeleteRecords)]


def moved_to(replica: Replica, start: int) -> Replica:
    """The shell performed AdvanceLogStart on the leader (its LogChanged)."""
    replica, _ = replica_step(
        replica, LogChanged(tp=TP, log=replace(replica.log, log_start_offset=Offset(start)))
    )
    return replica


def replica_step(replica: Replica, event: LogChanged) -> tuple[Replica, list[Effect]]:
    state = with_replica(BrokerState(config=CoreConfig(broker_id=replica.broker_id)), replica)
    state, effects = core.step(state, event, NOW_MS)
    return state.replicas[TP], effects


# ---- the leader's decision -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "code"),
    [
        (101, ErrorCode.OFFSET_OUT_OF_RANGE),  # beyond the high watermark (100)
        (-2, ErrorCode.OFFSET_OUT_OF_RANGE),
    ],
)
def test_offsets_beyond_the_high_watermark_are_refused(asked: int, code: ErrorCode) -> None:
    replica, effects = trim.delete_records(leader(), ask(asked))
    [answer] = answers(effects)
    assert answer.error is not None and answer.error.code is code
    assert not any(isinstance(e, AdvanceLogStart) for e in effects)
    assert replica.start_waiters == ()


def test_a_follower_and_a_compact_only_topic_refuse() -> None:
    follower = replace(leader(), state=replace(leader().state, role="follower", leader=B2))
    [answer] = answers(trim.delete_records(follower, ask(10))[1])
    assert answer.error is not None and answer.error.code is ErrorCode.NOT_LEADER
    compact = leader(cleanup_policy="compact")
    [answer] = answers(trim.delete_records(compact, ask(10))[1])
    assert answer.error is not None and answer.error.code is ErrorCode.POLICY_VIOLATION
    both = leader(cleanup_policy="compact,delete")
    assert not answers(trim.delete_records(both, ask(10))[1])


def test_the_answer_waits_for_every_isr_member_to_move_its_start() -> None:
    replica, effects = trim.delete_records(leader(), ask(-1))  # -1: the high watermark
    assert (
        AdvanceLogStart(tp=TP, offset=Offset(100), reason="records below 100 deleted on request")
        in effects
    )
    assert not answers(effects)
    replica = moved_to(replica, 100)
    assert replica.low_watermark == 0  # the followers still report 0
    replica, effects = record_fetch(replica, B2, 100, 100, NOW_MS, 100)
    assert not answers(effects)
    replica, effects = record_fetch(replica, B3, 100, 100, NOW_MS, 100)
    assert answers(effects) == [AnswerDeleteRecords(trim_id=7, low_watermark=100)]
    assert replica.start_waiters == ()


def test_an_offset_below_the_start_moves_nothing_and_answers_the_low_watermark() -> None:
    replica = leader(isr=(B1,))
    replica, effects = trim.delete_records(replica, ask(40))
    replica = moved_to(replica, 40)
    replica, effects = trim.delete_records(replica, ask(10, trim_id=8))
    assert not any(isinstance(e, AdvanceLogStart) for e in effects)
    assert answers(effects) == [AnswerDeleteRecords(trim_id=8, low_watermark=40)]


def test_a_member_that_never_reported_its_start_holds_the_answer() -> None:
    replica = leader()
    replica = replace(replica, followers={})
    assert replica.low_watermark == -1
    assert low_watermark(leader=B1, leader_log_start=5, follower_log_starts={B2: 9}, isr=[B1]) == 5


def test_a_zero_timeout_waits_for_the_leaders_own_move() -> None:
    """librdkafka's 0081 sends timeout_ms=0 to single-replica partitions: the leader's own
    deletion is part of the request, only the followers' is bounded by the timeout."""
    now_ask = DeleteRecordsArrived(tp=TP, offset=30, trim_id=5, deadline_ms=NOW_MS)
    replica, effects = trim.delete_records(leader(isr=(B1,)), now_ask)
    state = with_replica(BrokerState(config=CoreConfig(broker_id=B1)), replica)
    state, effects = core.step(state, Tick(), NOW_MS + 1)  # the deadline passes first
    assert not answers(effects)
    replica, effects = replica_step(state.replicas[TP], _start_at(state.replicas[TP], 30))
    assert answers(effects) == [AnswerDeleteRecords(trim_id=5, low_watermark=30)]
    # with followers still behind, the same request times out as soon as the leader moved
    replica, _ = trim.delete_records(leader(), now_ask)
    replica, effects = replica_step(replica, _start_at(replica, 30))
    [answer] = answers(effects)
    assert answer.error is not None and answer.error.code is ErrorCode.REQUEST_TIMED_OUT


def _start_at(replica: Replica, start: int) -> LogChanged:
    return LogChanged(tp=TP, log=replace(replica.log, log_start_offset=Offset(start)))


def test_waiters_time_out_and_fail_when_leadership_moves() -> None:
    replica, _ = trim.delete_records(leader(), ask(50))
    replica = moved_to(replica, 50)
    state = with_replica(BrokerState(config=CoreConfig(broker_id=B1)), replica)
    state, effects = core.step(state, Tick(), NOW_MS + 5000)
    [answer] = answers(effects)
    assert answer.error is not None and answer.error.code is ErrorCode.REQUEST_TIMED_OUT
    replica, _ = trim.delete_records(state.replicas[TP], ask(60, trim_id=9))
    failed, effects = trim.advance_failed(replica, StorageError("disk gone"))
    [answer] = answers(effects)
    assert isinstance(answer.error, StorageError) and failed.start_waiters == ()


def test_delete_records_offset_rule() -> None:
    assert delete_records_offset(-1, high_watermark=70) == 70
    assert delete_records_offset(0, high_watermark=0) == 0
    with pytest.raises(InvalidRequestError):
        delete_records_offset(71, high_watermark=70)


# ---- the follower ------------------------------------------------------------------------------


def follower_state(start: int = 0, end: int = 100) -> BrokerState:
    state = ReplicaState(
        role="follower", leader_epoch=4, leader=B1, replicas=(B1, B2), isr=(B1, B2)
    )
    log = LogFacts(
        log_start_offset=Offset(start),
        log_end_offset=Offset(end),
        durable_offset=Offset(end),
        latest_epoch=4,
    )
    replica, _ = new_replica(TP, B2, state, log, {}, NOW_MS)
    replica = replace(replica, validated_epoch=4)
    return with_replica(BrokerState(config=CoreConfig(broker_id=B2)), replica)


def fetch_answer(
    state: BrokerState, leader_start: int, end: int = 100
) -> tuple[BrokerState, list[Effect]]:
    """The leader answers the fetch in flight (sent first if none is)."""
    session = state.sessions.get(B1)
    if session is None or session.sent is None:
        state, _ = follower.pump_all(state, NOW_MS)
        session = state.sessions[B1]
    assert isinstance(session.sent, ReplicaFetchRequest)
    send = SendReplicaFetch(leader=B1, request=session.sent)
    result = ReplicaFetchResult(
        topic="t",
        partition=0,
        high_watermark=end,
        log_start_offset=leader_start,
        log_end_offset=end,
    )
    event = ReplicaFetchAnswered(
        leader=B1,
        request=send.request,
        response=ReplicaFetchResponse(partitions=[result]),
        chunks=(b"",),
    )
    return core.step(state, event, NOW_MS)


def test_a_follower_moves_its_start_to_the_leaders_and_reports_it() -> None:
    state, effects = fetch_answer(follower_state(), leader_start=60)
    assert (
        AdvanceLogStart(tp=TP, offset=Offset(60), reason="the leader's log starts at 60") in effects
    )
    assert not any(isinstance(e, SendReplicaFetch) for e in effects)  # not fetched meanwhile
    replica = state.replicas[TP]
    done = LogChanged(tp=TP, log=replace(replica.log, log_start_offset=Offset(60)))
    state, effects = core.step(state, done, NOW_MS)
    [send] = [e for e in effects if isinstance(e, SendReplicaFetch)]
    assert send.request.partitions[0].log_start_offset == 60
    state, effects = fetch_answer(state, leader_start=60)  # nothing more to move
    assert not any(isinstance(e, AdvanceLogStart) for e in effects)


def test_a_follower_never_moves_its_start_beyond_its_log_end() -> None:
    _, effects = fetch_answer(follower_state(end=40), leader_start=60, end=40)
    assert [e.offset for e in effects if isinstance(e, AdvanceLogStart)] == [40]


def test_a_failed_move_lets_the_follower_fetch_again() -> None:
    state, _ = fetch_answer(follower_state(), leader_start=60)
    state, effects = core.step(state, AdvanceFailed(tp=TP, error=StorageError("no")), NOW_MS)
    assert any(isinstance(e, SendReplicaFetch) for e in effects)
    assert state.replicas[TP].advancing_start is False


def test_the_leader_answers_parked_fetches_once_its_start_moved() -> None:
    replica = leader(isr=(B1, B2))
    state = with_replica(BrokerState(config=CoreConfig(broker_id=B1)), replica)
    wanted = ReplicaFetchPartition(
        topic="t",
        partition=0,
        leader_epoch=Epoch(4),
        fetch_offset=100,
        durable_offset=100,
        log_start_offset=0,
    )
    request = ReplicaFetchRequest(broker_id=B2, partitions=[wanted], max_wait_ms=500)
    state, effects = core.step(state, ReplicaFetchArrived(fetch_id=3, request=request), NOW_MS)
    assert not any(isinstance(e, AnswerReplicaFetch) for e in effects)  # parked
    state, effects = core.step(state, ask(80), NOW_MS)
    state, effects = core.step(
        state,
        LogChanged(tp=TP, log=replace(state.replicas[TP].log, log_start_offset=Offset(80))),
        NOW_MS,
    )
    assert [e.fetch_id for e in effects if isinstance(e, AnswerReplicaFetch)] == [3]


# ---- the operation on a BrokerService ----------------------------------------------------------


def _batch(count: int) -> bytes:
    return encode_batch([(None, b"v%d" % i) for i in range(count)], timestamp_ms=1_700_000_000_000)


def test_delete_records_on_a_broker(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            for _ in range(4):
                await broker.produce("t", 0, _batch(5))
            answer = await broker.delete_records("t", 0, 7)
            assert answer.low_watermark == 7
            assert (await broker.offsets("t", 0)).log_start_offset == 7
            result = await broker.fetch("t", 0, 7)
            broker.fetch_memory.release(len(result.batches))
            assert result.log_start_offset == 7
            with pytest.raises(ConveyorError) as caught:
                await broker.fetch("t", 0, 6)
            assert caught.value.code is ErrorCode.OFFSET_OUT_OF_RANGE
            with pytest.raises(ConveyorError) as caught:
                await broker.delete_records("t", 0, 21)
            assert caught.value.code is ErrorCode.OFFSET_OUT_OF_RANGE
            assert (await broker.delete_records("t", 0, -1)).low_watermark == 20
            assert broker.replicas.logs[TP].log_start_offset == 20

    run(body)


def test_delete_records_refuses_a_compact_only_topic(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            config = TopicConfig(cleanup_policy="compact")
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1], config=config))
            with pytest.raises(ConveyorError) as caught:
                await broker.delete_records("t", 0, 0)
            assert caught.value.code is ErrorCode.POLICY_VIOLATION

    run(body)
