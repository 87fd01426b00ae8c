"""The follower's next fetch leaves before its fsync; the fsync is told by a durability
report (``follower._maybe_report``), which the leader answers at once and which moves its
high watermark."""

from __future__ import annotations

from msgspec.structs import replace

from conveyor.broker import core, follower
from conveyor.broker.corestate import BrokerState, CoreConfig, with_replica
from conveyor.protocol.messages import (
    Epoch,
    Offset,
    ReplicaFetchPartition,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
    ReplicaFetchResult,
)
from conveyor.protocol.replica import (
    AnswerProduce,
    AnswerReplicaFetch,
    AppendReplicated,
    Effect,
    Flushed,
    FollowerAppended,
    LeaderAppended,
    PeerUnreachable,
    ReplicaFetchAnswered,
    ReplicaFetchArrived,
    RequestDurable,
    SendReplicaFetch,
    Tick,
)
from tests.unit.broker.test_trim import B1, B2, NOW_MS, TP, follower_state, leader


def sends(effects: list[Effect]) -> list[ReplicaFetchRequest]:
    return [e.request for e in effects if isinstance(e, SendReplicaFetch)]


def answered(state: BrokerState, request: ReplicaFetchRequest, data: bytes) -> ReplicaFetchAnswered:
    result = ReplicaFetchResult(
        topic="t", partition=0, high_watermark=Offset(100), log_end_offset=Offset(110)
    )
    return ReplicaFetchAnswered(
        leader=B1,
        request=request,
        response=ReplicaFetchResponse(partitions=[result]),
        chunks=(data,),
    )


def appended_ten() -> tuple[BrokerState, ReplicaFetchRequest]:
    """A caught-up follower (100 records, all durable) copies 10 more: the state once the
    append is done, and the fetch that left right after it."""
    state, effects = follower.pump_all(follower_state(), NOW_MS)
    [first] = sends(effects)
    state, effects = core.step(state, answered(state, first, b"ten records"), NOW_MS)
    assert [e.tp for e in effects if isinstance(e, AppendReplicated)] == [TP]
    log = replace(state.replicas[TP].log, log_end_offset=Offset(110))
    state, effects = core.step(state, FollowerAppended(tp=TP, log=log, data=b"ten records"), NOW_MS)
    assert RequestDurable(tp=TP, offset=Offset(109)) in effects
    [fetch] = sends(effects)  # at once: not after the fsync
    return state, fetch


def test_the_next_fetch_leaves_before_the_fsync_with_the_old_durable_offset() -> None:
    state, fetch = appended_ten()
    [wanted] = fetch.partitions
    assert (wanted.fetch_offset, wanted.durable_offset) == (110, 100)
    assert fetch.max_wait_ms > 0  # a long-poll: what the leader appends comes at once
    assert state.sessions[B1].sent is fetch


def test_an_fsync_while_the_fetch_waits_is_reported_once() -> None:
    state, fetch = appended_ten()
    state, effects = core.step(state, Flushed(tp=TP, durable_offset=Offset(110)), NOW_MS)
    [report] = sends(effects)
    [wanted] = report.partitions
    assert (wanted.fetch_offset, wanted.durable_offset) == (110, 110)
    # no bytes, no wait: the leader answers at once and the answer appends nothing
    assert (report.max_wait_ms, report.partition_max_bytes, report.max_bytes) == (0, 0, 0)
    assert state.sessions[B1].sent is fetch  # the long-poll is still the session's fetch
    # a flush that moves nothing, and the report's answer: nothing more to tell
    state, effects = core.step(state, Flushed(tp=TP, durable_offset=Offset(110)), NOW_MS)
    assert sends(effects) == []
    state, effects = core.step(state, answered(state, report, b""), NOW_MS)
    assert effects == []
    assert state.sessions[B1].reporting is None
    assert state.sessions[B1].sent is fetch


def test_a_reports_answer_with_bytes_is_not_appended() -> None:
    state, _ = appended_ten()
    state, effects = core.step(state, Flushed(tp=TP, durable_offset=Offset(110)), NOW_MS)
    [report] = sends(effects)
    _, effects = core.step(state, answered(state, report, b"not asked for"), NOW_MS)
    assert not any(isinstance(e, AppendReplicated) for e in effects)


def test_a_lost_report_is_not_retried_and_does_not_back_the_session_off() -> None:
    state, fetch = appended_ten()
    state, effects = core.step(state, Flushed(tp=TP, durable_offset=Offset(110)), NOW_MS)
    [report] = sends(effects)
    lost = PeerUnreachable(leader=B1, request=report, reason="reset", draw=0.5)
    state, effects = core.step(state, lost, NOW_MS)
    session = state.sessions[B1]
    assert (session.reporting, session.sent, session.failures) == (None, fetch, 0)
    assert sends(effects) == []


def test_a_report_unanswered_past_the_request_timeout_is_dropped() -> None:
    state, _ = appended_ten()
    state, _ = core.step(state, Flushed(tp=TP, durable_offset=Offset(110)), NOW_MS)
    assert state.sessions[B1].reporting is not None
    later = NOW_MS + CoreConfig(broker_id=B2).replica_request_timeout_ms
    state, _ = core.step(state, Tick(), later)
    assert state.sessions[B1].reporting is None


def test_the_leader_answers_a_report_at_once_and_it_acknowledges_the_write() -> None:
    replica = leader(isr=(B1, B2))
    state = with_replica(BrokerState(config=CoreConfig(broker_id=B1)), replica)
    write = LeaderAppended(
        tp=TP,
        log=replace(replica.log, log_end_offset=Offset(110)),
        base_offset=Offset(100),
        last_offset=Offset(109),
        ack_id=7,
        deadline_ms=NOW_MS + 5000,
    )
    state, _ = core.step(state, write, NOW_MS)
    state, _ = core.step(state, Flushed(tp=TP, durable_offset=Offset(110)), NOW_MS)
    assert state.replicas[TP].high_watermark == 100  # the follower holds nothing durably yet
    report = ReplicaFetchRequest(
        broker_id=B2,
        partitions=[
            ReplicaFetchPartition(
                topic="t",
                partition=0,
                leader_epoch=Epoch(4),
                fetch_offset=Offset(110),
                durable_offset=Offset(110),
                log_start_offset=Offset(0),
            )
        ],
        max_wait_ms=0,
        partition_max_bytes=0,
        max_bytes=0,
    )
    state, effects = core.step(state, ReplicaFetchArrived(fetch_id=9, request=report), NOW_MS)
    assert AnswerProduce(ack_id=7) in effects
    assert [e.fetch_id for e in effects if isinstance(e, AnswerReplicaFetch)] == [9]
    assert state.replicas[TP].high_watermark == 110
    assert not state.parked
