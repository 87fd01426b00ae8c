"""The broker core: ``step(state, event, now_ms) -> (state, effects)``. Pure.

Everything a broker decides about its replicas happens here, as etcd-raft's state machine:
no I/O, no clock, no randomness (a backoff's jitter comes in the event); the shell
(``driver.py``) performs the effects, in order, and feeds what happens back as events,
and the simulation (``tests/sim``) does the same with a simulated disk and network. Events
and effects are typed values in ``protocol/replica.py``.

Routing: per-replica events go to ``replica.py``; the follower's fetch sessions are in
``follower.py``, the leader's side of follower fetches (fencing, progress, long-polls
parked until data arrives) in ``leader.py``; this module holds what concerns the whole
broker: applying the coordinator's assignments (through the pure ``reconcile``), the
periodic checks (ISR upkeep, disk probes, acks that timed out, the next deadline) and the
read-only queries the produce, fetch and heartbeat paths make.

Worked example (a produce with acks=all on a leader with one follower, ISR [1, 2]):
``LeaderAppended(orders-0, last_offset=9, ack_id=7)`` -> effects ``RequestDurable(9)``
(the fsync) and the follower's parked fetch answered (``AnswerReplicaFetch``); the fsync
completes: ``Flushed(10)`` -> the high watermark stays (the follower holds nothing of it
yet); the follower fetches again from 10 with durable offset 10:
``ReplicaFetchArrived`` -> progress recorded, high watermark 10 -> ``AnswerProduce(7)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from msgspec.structs import replace

from conveyor.broker import follower, leader, trim
from conveyor.broker.corestate import (
    ISR_CHECK_INTERVAL_MS,
    BrokerState,
    CoreConfig,
    with_replica,
    without_replica,
)
from conveyor.broker.reconcile import (
    BecomeFollower,
    BecomeLeader,
    Delete,
    Open,
    Reconfigure,
    Skip,
    UpdateReplicas,
    reconcile,
)
from conveyor.broker.replica import (
    DISK_CHECK_INTERVAL_MS,
    AckWaiter,
    Replica,
    add_waiter,
    appended,
    apply_state,
    disk_full,
    disk_space,
    expire_waiters,
    fail_all_waiters,
    flushed,
    isr_answered,
    log_changed,
    log_failed,
    maybe_alter_isr,
    new_replica,
    observe_write,
)
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.messages import PartitionReport
from conveyor.protocol.replica import (
    AdvanceFailed,
    AlterIsrAnswered,
    AnswerDeleteRecords,
    AnswerProduce,
    AppendFailed,
    DeleteLog,
    DeleteRecordsArrived,
    DiskSpace,
    Effect,
    EpochEndAnswered,
    Event,
    Flushed,
    FollowerAppended,
    HeartbeatAnswered,
    LeaderAppended,
    LogChanged,
    LogFailed,
    Note,
    Opened,
    OpenFailed,
    OpenLog,
    PeerUnreachable,
    ProbeDisk,
    ReconfigureLog,
    ReplicaFetchAnswered,
    ReplicaFetchArrived,
    RequestDurable,
    RetryArrived,
    ScheduleTick,
    ShuttingDown,
    Tick,
    TopicPartition,
    Wake,
)

Step = tuple[BrokerState, list[Effect]]

__all__ = [
    "BrokerState",
    "CoreConfig",
    "Step",
    "check_client_epoch",
    "error_body",
    "fencing_problem",
    "new_state",
    "reports",
    "step",
]

fencing_problem = leader.fencing_problem
error_body = leader.error_body


def new_state(config: CoreConfig) -> BrokerState:
    return BrokerState(config=config)


def step(state: BrokerState, event: Event, now_ms: int) -> Step:
    """The state after ``event`` and the effects to perform, in order."""
    handler: Callable[[BrokerState, Any, int], Step] = _HANDLERS[type(event)]
    return handler(state, event, now_ms)


# ---- the replica's own storage facts ---------------------------------------------------------


def _put(state: BrokerState, result: tuple[Replica, list[Effect]]) -> Step:
    replica, effects = result
    return with_replica(state, replica), effects


def _on_leader_appended(state: BrokerState, event: LeaderAppended, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, []
    if event.producer is not None:
        producers = observe_write(
            replica.producers, event.producer, event.base_offset, event.last_offset
        )
        replica = replace(replica, producers=producers, disk_full=False)
    elif replica.disk_full:
        replica = replace(replica, disk_full=False)
    replica, effects = appended(replica, event.log)
    effects.append(RequestDurable(tp=event.tp, offset=event.last_offset))
    if event.ack_id is not None:
        waiter = AckWaiter(
            ack_id=event.ack_id,
            next_offset=event.last_offset + 1,
            leader_epoch=replica.leader_epoch,
            deadline_ms=event.deadline_ms,
        )
        replica, more = add_waiter(replica, waiter)
        effects += more
    state = with_replica(state, replica)
    state, more = leader.answer_parked(state, event.tp)
    return state, effects + more


def _on_retry(state: BrokerState, event: RetryArrived, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, [AnswerProduce(ack_id=event.ack_id, error=_not_hosted(event.tp))]
    waiter = AckWaiter(
        ack_id=event.ack_id,
        next_offset=event.last_offset + 1,
        leader_epoch=replica.leader_epoch,
        deadline_ms=event.deadline_ms,
    )
    return _put(state, add_waiter(replica, waiter))


def _on_delete_records(state: BrokerState, event: DeleteRecordsArrived, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, [AnswerDeleteRecords(trim_id=event.trim_id, error=_not_hosted(event.tp))]
    return _put(state, trim.delete_records(replica, event))


def _on_advance_failed(state: BrokerState, event: AdvanceFailed, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, []
    state, effects = _put(state, trim.advance_failed(replica, event.error))
    if replica.role == "follower" and replica.state.leader is not None:
        state, more = follower.pump(state, replica.state.leader, now_ms)
        effects += more
    return state, effects


def _not_hosted(tp: TopicPartition) -> ConveyorError:
    return RetriableError(f"{tp} is not hosted here any more", code=ErrorCode.NOT_LEADER)


def _on_follower_appended(state: BrokerState, event: FollowerAppended, now_ms: int) -> Step:
    return follower.on_appended(state, event, now_ms)


def _on_append_failed(state: BrokerState, event: AppendFailed, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, []
    effects: list[Effect] = []
    if event.disk_full:
        replica, effects = disk_full(replica, now_ms)
    if replica.role == "follower":
        message = f"partition {event.tp}: replicated append refused: {event.error}"
        effects.append(Note(level="warning", message=message))
        replica = follower.invalidate(replica)
    state = with_replica(state, replica)
    state, more = follower.append_done(state, event.tp, ok=False, now_ms=now_ms)
    return state, effects + more


def _on_flushed(state: BrokerState, event: Flushed, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, []
    state, effects = _put(state, flushed(replica, event.durable_offset))
    if replica.role == "follower":
        state, more = follower.on_durable(state, event.tp, now_ms)
        effects += more
    return state, effects


def _on_log_failed(state: BrokerState, event: LogFailed, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, []
    state, effects = _put(state, log_failed(replica, event.error))
    state, more = follower.on_durable(state, event.tp, now_ms)
    state, parked = leader.answer_parked(state, event.tp)
    return state, effects + more + parked


def _on_log_changed(state: BrokerState, event: LogChanged, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, []
    if event.log_config is not None:
        config = event.log_config
        replica = replace(replica, state=replace(replica.state, log_config=config))
    moved = event.log.log_start_offset > replica.log.log_start_offset
    state, effects = _put(state, log_changed(replica, event.log, event.producers))
    if replica.state.leader is not None and replica.role == "follower":
        state, more = follower.pump(state, replica.state.leader, now_ms)
        effects += more
    elif replica.is_leader and moved:
        # Records were deleted: the followers' long-polls learn the new log start now.
        state, more = leader.answer_parked(state, event.tp)
        effects += more
        # DeleteRecords past their deadline were waiting for this move (expire_waiters)
        state, more = _put(state, expire_waiters(state.replicas[event.tp], now_ms))
        effects += more
    return state, effects


def _on_disk_space(state: BrokerState, event: DiskSpace, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, []
    state, effects = _put(state, disk_space(replica, event.free_bytes))
    state, more = follower.pump_all(state, now_ms)
    return state, effects + more


def _on_isr_answered(state: BrokerState, event: AlterIsrAnswered, now_ms: int) -> Step:
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, []
    result = isr_answered(replica, event.request, event.assignment, event.error_code, now_ms)
    state, effects = _put(state, result)
    state, more = leader.answer_parked(state, event.tp)
    return state, effects + more


# ---- the coordinator's assignments -----------------------------------------------------------


def _on_heartbeat(state: BrokerState, event: HeartbeatAnswered, now_ms: int) -> Step:
    """Reconcile toward the coordinator's desired state (``reconcile.py``), then let the
    fetch sessions follow whatever leaders changed."""
    response = event.response
    hosted = {tp: r.state for tp, r in state.replicas.items()}
    hosted.update(state.opening)
    actions = reconcile(
        state.broker_id,
        hosted,
        response.assignments,
        response.topic_configs,
        state.config.flush_override,
    )
    effects: list[Effect] = []
    for action in actions:
        if action.tp in state.opening:
            continue  # still opening: the next heartbeat reconciles it
        state, more = _apply_action(state, action, now_ms)
        effects += more
    state, more = follower.pump_all(state, now_ms)
    return state, effects + more


def _apply_action(state: BrokerState, action: Any, now_ms: int) -> Step:
    tp = action.tp
    match action:
        case Open(tp, wanted, reason):
            opening = {**state.opening, tp: wanted}
            return replace(state, opening=opening), [OpenLog(tp=tp, state=wanted, reason=reason)]
        case Reconfigure(tp, config, reason):
            replica = state.replicas[tp]
            replica = replace(replica, state=replace(replica.state, log_config=config))
            effect = ReconfigureLog(tp=tp, log_config=config, reason=reason)
            return with_replica(state, replica), [effect]
        case (
            BecomeLeader(tp, wanted, reason)
            | BecomeFollower(tp, wanted, reason)
            | UpdateReplicas(tp, wanted, reason)
        ):
            replica = state.replicas[tp]
            wanted = replace(wanted, log_config=replica.state.log_config)
            state, effects = _put(state, apply_state(replica, wanted, now_ms))
            state, parked = leader.answer_parked(state, tp)
            return state, [
                Note(level="info", message=f"partition {tp}: {reason}"),
                *effects,
                *parked,
            ]
        case Delete(tp, reason):
            replica, effects = fail_all_waiters(state.replicas[tp])
            state, parked = leader.answer_parked(without_replica(state, tp), tp)
            return state, [*effects, Wake(tp=tp), *parked, DeleteLog(tp=tp, reason=reason)]
        case Skip(tp, reason):
            return state, [
                Note(level="warning", message=f"partition {tp}: not reconciled: {reason}")
            ]
    raise AssertionError(f"unknown reconcile action {action!r}")


def _on_opened(state: BrokerState, event: Opened, now_ms: int) -> Step:
    opening = dict(state.opening)
    opening.pop(event.tp, None)
    state = replace(state, opening=opening)
    result = new_replica(event.tp, state.broker_id, event.state, event.log, event.producers, now_ms)
    state, effects = _put(state, result)
    state, more = follower.pump_all(state, now_ms)
    return state, effects + more


def _on_open_failed(state: BrokerState, event: OpenFailed, now_ms: int) -> Step:
    opening = dict(state.opening)
    opening.pop(event.tp, None)
    return replace(state, opening=opening), []


# ---- time ------------------------------------------------------------------------------------


def _on_tick(state: BrokerState, event: Tick, now_ms: int) -> Step:
    state, effects = leader.expire_parked(state, now_ms)
    state, more = _check_replicas(state, now_ms)
    effects += more
    state, more = follower.tick(state, now_ms)
    # Every tick asks for the next one (a shell keeps one timer, for the earliest tick
    # asked for, so a deadline asked for earlier may have been superseded).
    return state, [*effects, *more, ScheduleTick(at_ms=_next_deadline(state))]


def _next_deadline(state: BrokerState) -> int:
    """The earliest moment something is due: the periodic checks, a parked long-poll, a
    session's backoff, durable wait or request timeout."""
    due = state.next_isr_check_ms
    for parked in state.parked.values():
        due = min(due, parked.deadline_ms)
    for session in state.sessions.values():
        if session.sent is not None:
            due = min(due, session.sent_ms + state.config.replica_fetch_timeout_ms)
        elif session.resume_at_ms:
            due = min(due, session.resume_at_ms)
    return due


def _check_replicas(state: BrokerState, now_ms: int) -> Step:
    """Acks past their deadline (each tick); ISR upkeep and disk probes (every 500 ms)."""
    periodic = now_ms >= state.next_isr_check_ms
    effects: list[Effect] = []
    lag_ms = state.config.replica_lag_time_max_ms
    for tp, current in sorted(state.replicas.items()):
        replica = current
        if replica.waiters or replica.start_waiters:
            replica, more = expire_waiters(replica, now_ms)
            effects += more
        if replica.isr_request is not None or periodic:
            replica, more = maybe_alter_isr(replica, now_ms, lag_ms)
            effects += more
        if (
            periodic
            and replica.disk_full
            and now_ms - replica.disk_checked_ms >= DISK_CHECK_INTERVAL_MS
        ):
            replica = replace(replica, disk_checked_ms=now_ms)
            effects.append(ProbeDisk(tp=tp))
        if replica is not current:
            state = with_replica(state, replica)
    if periodic:
        state = replace(state, next_isr_check_ms=now_ms + ISR_CHECK_INTERVAL_MS)
    return state, effects


def _on_shutting_down(state: BrokerState, event: ShuttingDown, now_ms: int) -> Step:
    effects: list[Effect] = [leader.answer(state, p) for p in state.parked.values()]
    effects += [Wake(tp=tp) for tp in sorted(state.replicas)]
    return replace(state, parked={}, stopping=True), effects


# ---- queries (read-only) ---------------------------------------------------------------------


def check_client_epoch(replica: Replica, leader_epoch: int | None) -> None:
    """Fencing by the epoch a client says it knows (optional for clients)."""
    if leader_epoch is None or leader_epoch == replica.leader_epoch:
        return
    if leader_epoch < replica.leader_epoch:
        raise RetriableError(
            f"leader epoch {leader_epoch} is stale: {replica.tp} is at "
            f"{replica.leader_epoch}; refresh metadata",
            code=ErrorCode.STALE_EPOCH,
            leader_epoch=replica.leader_epoch,
        )
    raise RetriableError(
        f"this broker has not learnt epoch {leader_epoch} of {replica.tp} yet "
        f"(it is at {replica.leader_epoch})",
        code=ErrorCode.LEADER_NOT_AVAILABLE,
        leader_epoch=replica.leader_epoch,
    )


def reports(state: BrokerState) -> list[PartitionReport]:
    """What the heartbeat tells the coordinator about each hosted replica."""
    out = []
    for tp in sorted(state.replicas):
        replica = state.replicas[tp]
        log = replica.log
        out.append(
            PartitionReport(
                topic=tp.topic,
                partition=tp.partition,
                leader_epoch=replica.state.leader_epoch,
                log_start_offset=log.log_start_offset,
                log_end_offset=log.log_end_offset,
                high_watermark=replica.high_watermark,
                durable_offset=log.durable_offset,
                log_failed=replica.log_failed,
            )
        )
    return out


_HANDLERS: Final[dict[type, Callable[[BrokerState, Any, int], Step]]] = {
    Tick: _on_tick,
    HeartbeatAnswered: _on_heartbeat,
    Opened: _on_opened,
    OpenFailed: _on_open_failed,
    LogChanged: _on_log_changed,
    LeaderAppended: _on_leader_appended,
    RetryArrived: _on_retry,
    FollowerAppended: _on_follower_appended,
    AppendFailed: _on_append_failed,
    Flushed: _on_flushed,
    LogFailed: _on_log_failed,
    DiskSpace: _on_disk_space,
    AlterIsrAnswered: _on_isr_answered,
    ReplicaFetchArrived: leader.on_replica_fetch,
    ReplicaFetchAnswered: follower.on_fetch_answer,
    EpochEndAnswered: follower.on_epoch_end,
    PeerUnreachable: follower.on_unreachable,
    DeleteRecordsArrived: _on_delete_records,
    AdvanceFailed: _on_advance_failed,
    ShuttingDown: _on_shutting_down,
}
