"""The leader's side of follower fetches, pure: fencing, progress, long-polls.

A follower's fetch (``ReplicaFetchArrived``) is fenced per partition (only the leader, at
the follower's epoch, for a broker among the replicas), records each follower's progress
(``replica.record_fetch``: the high watermark may move, the ISR may grow), then is
answered at once when there is something to send, or *parked* (a long-poll) until an
append, a change of role, or its deadline. The answer (``AnswerReplicaFetch``) names, per
partition, where to read from or why not; the shell reads and sends the bytes.
"""

from __future__ import annotations

from msgspec.structs import replace

from conveyor.broker.corestate import (
    REPLICA_FETCH_WAIT_MS_CAP,
    BrokerState,
    ParkedFetch,
    with_replica,
)
from conveyor.broker.replica import maybe_alter_isr, record_fetch
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.messages import ErrorBody, Offset, ReplicaFetchPartition
from conveyor.protocol.replica import (
    AnswerReplicaFetch,
    Effect,
    ReplicaFetchArrived,
    ReplicaRead,
    ScheduleTick,
    TopicPartition,
)
from conveyor.protocol.topics import validate_topic_name

Step = tuple[BrokerState, list[Effect]]


def fencing_problem(
    state: BrokerState, follower_id: int, tp: TopicPartition, epoch: int
) -> ConveyorError | None:
    """Why ``follower_id`` may not fetch ``tp`` at ``epoch`` from this broker (None: it
    may). An older epoch than the leader's: STALE_EPOCH (it follows a leader that is
    gone); a newer one: this broker was deposed and has not heard yet, so it serves
    nothing (LEADER_NOT_AVAILABLE); a broker outside the replicas: not yet."""
    try:
        validate_topic_name(tp.topic)
    except ConveyorError as exc:
        return exc
    replica = state.replicas.get(tp)
    if replica is None or not replica.is_leader:
        return RetriableError(
            f"broker {state.broker_id} does not lead {tp}", code=ErrorCode.NOT_LEADER
        )
    if epoch < replica.leader_epoch:
        return RetriableError(
            f"{tp}: follower {follower_id} follows epoch {epoch}, the leader is at "
            f"{replica.leader_epoch}",
            code=ErrorCode.STALE_EPOCH,
            leader_epoch=replica.leader_epoch,
        )
    if epoch > replica.leader_epoch:
        return RetriableError(
            f"{tp}: follower {follower_id} knows epoch {epoch}, newer than this leader's "
            f"{replica.leader_epoch}: this broker was deposed",
            code=ErrorCode.LEADER_NOT_AVAILABLE,
            leader_epoch=replica.leader_epoch,
        )
    if follower_id not in replica.state.replicas:
        return RetriableError(
            f"{tp}: broker {follower_id} is not a replica {list(replica.state.replicas)} (yet)",
            code=ErrorCode.LEADER_NOT_AVAILABLE,
        )
    return None


def error_body(exc: ConveyorError) -> ErrorBody:
    return ErrorBody(
        code=exc.code.name, message=exc.message, retriable=exc.retriable, details=exc.details
    )


def on_replica_fetch(state: BrokerState, event: ReplicaFetchArrived, now_ms: int) -> Step:
    """Record each partition's progress (the high watermark may move, the ISR may grow),
    then answer at once when there is something to send, or park the long-poll."""
    request = event.request
    problems: list[ErrorBody | None] = []
    effects: list[Effect] = []
    lag_ms = state.config.replica_lag_time_max_ms
    for wanted in request.partitions:
        tp = TopicPartition(wanted.topic, wanted.partition)
        problem = fencing_problem(state, request.broker_id, tp, wanted.leader_epoch)
        problems.append(None if problem is None else error_body(problem))
        if problem is not None:
            continue
        replica = state.replicas[tp]
        if wanted.fetch_offset <= replica.log.log_end_offset:
            # Beyond it the follower diverged: the read answers out of range.
            replica, more = record_fetch(
                replica,
                request.broker_id,
                wanted.fetch_offset,
                wanted.durable_offset,
                now_ms,
                wanted.log_start_offset,
            )
            effects += more
        if request.broker_id not in replica.state.isr:
            # It may rejoin now (a shrink waits for the periodic check: it is about time
            # passing, which a fetch does not change).
            replica, more = maybe_alter_isr(replica, now_ms, lag_ms)
            effects += more
        state = with_replica(state, replica)
    wait_ms = min(max(request.max_wait_ms, 0), REPLICA_FETCH_WAIT_MS_CAP)
    parked = ParkedFetch(
        fetch_id=event.fetch_id,
        request=request,
        problems=tuple(problems),
        deadline_ms=now_ms + wait_ms,
    )
    if state.stopping or wait_ms <= 0 or answerable(state, parked):
        return state, [*effects, answer(state, parked)]
    state = replace(state, parked={**state.parked, event.fetch_id: parked})
    return state, [*effects, ScheduleTick(at_ms=parked.deadline_ms)]


def answerable(state: BrokerState, parked: ParkedFetch) -> bool:
    """Something to send: data (or an offset out of range) in a partition still led."""
    served = False
    for wanted, problem in zip(parked.request.partitions, parked.problems, strict=True):
        if problem is not None:
            continue
        replica = state.replicas.get(TopicPartition(wanted.topic, wanted.partition))
        if replica is None or not replica.is_leader:
            return True  # leadership moved: say so
        served = True
        if wanted.fetch_offset != replica.log.log_end_offset:
            return True
    return not served


def answer(state: BrokerState, parked: ParkedFetch) -> AnswerReplicaFetch:
    reads: list[ReplicaRead | ErrorBody] = []
    for wanted, problem in zip(parked.request.partitions, parked.problems, strict=True):
        if problem is not None:
            reads.append(problem)
            continue
        reads.append(read_plan(state, wanted))
    return AnswerReplicaFetch(fetch_id=parked.fetch_id, reads=tuple(reads))


def read_plan(state: BrokerState, wanted: ReplicaFetchPartition) -> ReplicaRead | ErrorBody:
    replica = state.replicas.get(TopicPartition(wanted.topic, wanted.partition))
    if replica is None or not replica.is_leader or replica.leader_epoch != wanted.leader_epoch:
        return error_body(RetriableError("leadership moved", code=ErrorCode.NOT_LEADER))
    return ReplicaRead(
        topic=wanted.topic,
        partition=wanted.partition,
        fetch_offset=Offset(wanted.fetch_offset),
        high_watermark=replica.high_watermark,
    )


def answer_parked(state: BrokerState, tp: TopicPartition) -> Step:
    """Answer the parked long-polls that ask for ``tp`` (its log end or its role moved)."""
    if not state.parked:
        return state, []
    due = [
        p
        for p in state.parked.values()
        if any(w.topic == tp.topic and w.partition == tp.partition for w in p.request.partitions)
    ]
    if not due:
        return state, []
    remaining = {k: v for k, v in state.parked.items() if v not in due}
    return replace(state, parked=remaining), [answer(state, p) for p in due]


def expire_parked(state: BrokerState, now_ms: int) -> Step:
    """Answer the long-polls whose wait is over (with what there is: nothing)."""
    due = [p for p in state.parked.values() if p.deadline_ms <= now_ms]
    if not due:
        return state, []
    remaining = {k: v for k, v in state.parked.items() if v not in due}
    return replace(state, parked=remaining), [answer(state, p) for p in due]
