"""The follower's side of replication, pure: one fetch session per leader broker.

Each session copies every partition this broker follows from that leader:

1. **Validate first** (KIP-101/279): a partition at an epoch not validated yet is sent in
   an OffsetsForLeaderEpoch request (``SendEpochEnd``): where does our latest epoch end
   in the leader's log? Any suffix beyond it is truncated (``replica.epoch_end_result``)
   before anything new is appended, so writes of a dead leader that were never
   acknowledged disappear. A partition whose log holds no epoch is validated at once.
2. **Fetch**: one long-poll (``SendReplicaFetch``) carries each validated partition's log
   end and durable offset; the answer's batches become appends (``AppendReplicated``), each
   followed by a durability request. A caught-up session waits for those fsyncs before
   the next fetch (that fetch is what tells the leader the data is safe here, so the high
   watermark moves one round trip after the fsync); a session that is behind fetches again
   at once.

A failed request backs the session off (exponential, jittered with the draw the shell put
in the event). Level-triggered: every round reads the partitions' current roles, so a
reconcile that changes a leader is picked up without any signal, and a session whose
leader no longer leads anything ends.
"""

from __future__ import annotations

from msgspec.structs import replace

from conveyor.broker import producers as producer_state
from conveyor.broker.corestate import (
    DURABLE_WAIT_MS,
    FETCH_BACKOFF_BASE_MS,
    FETCH_BACKOFF_MAX_MS,
    BrokerState,
    FetchSession,
    with_replica,
    with_session,
    without_session,
)
from conveyor.broker.replica import (
    NOT_VALIDATED,
    Replica,
    appended,
    refresh_high_watermark,
)
from conveyor.broker.rules import truncation_offset
from conveyor.broker.trim import follow_start
from conveyor.protocol.backoff import BELOW, backoff_ms
from conveyor.protocol.errors import ErrorCode
from conveyor.protocol.messages import (
    BrokerId,
    Epoch,
    EpochEndPartition,
    EpochEndRequest,
    EpochEndResult,
    ErrorBody,
    Offset,
    ReplicaFetchPartition,
    ReplicaFetchRequest,
    ReplicaFetchResult,
)
from conveyor.protocol.replica import (
    AppendReplicated,
    Effect,
    EpochEndAnswered,
    FollowerAppended,
    Note,
    PeerUnreachable,
    ReplicaFetchAnswered,
    RequestDurable,
    ResetTo,
    ScheduleTick,
    SendEpochEnd,
    SendReplicaFetch,
    TopicPartition,
    TruncateTo,
)

Step = tuple[BrokerState, list[Effect]]
ReplicaStep = tuple[Replica, list[Effect]]


def following(state: BrokerState, leader: BrokerId) -> list[Replica]:
    """The replicas this broker copies from ``leader`` now (not a failed log: it would
    refuse the appends; it rejoins once its disk has room again)."""
    return [
        r
        for r in state.replicas.values()
        if r.role == "follower"
        and r.state.leader == leader
        and r.leader_epoch >= 0
        and not r.log_failed
    ]


def leaders(state: BrokerState) -> set[BrokerId]:
    me = state.broker_id
    return {
        r.state.leader
        for r in state.replicas.values()
        if r.role == "follower" and r.state.leader is not None and r.state.leader != me
    }


def pump_all(state: BrokerState, now_ms: int) -> Step:
    """Start a session for every leader this broker follows, send what idle sessions
    should send, end the sessions of leaders followed no more."""
    effects: list[Effect] = []
    for leader in sorted(leaders(state) | set(state.sessions)):
        state, more = pump(state, leader, now_ms)
        effects += more
    return state, effects


def pump(state: BrokerState, leader: BrokerId, now_ms: int) -> Step:
    """The next request of ``leader``'s session, when it is idle."""
    session = state.sessions.get(leader) or FetchSession(leader=leader)
    if state.stopping or session.busy:
        return state, []
    if now_ms < session.resume_at_ms:
        return with_session(state, session), [ScheduleTick(at_ms=session.resume_at_ms)]
    if session.resume_at_ms and not session.durable_wait:
        # the backoff is over: a deadline left in the past would have the next tick asked
        # for at once, again and again, while a truncation keeps the session waiting
        # (simulation, seed 10025: a busy loop)
        session = replace(session, resume_at_ms=0)
    partitions = following(state, leader)
    if not partitions:
        return without_session(state, leader), []
    asking: list[Replica] = []
    for replica in partitions:
        if replica.validated_epoch == replica.leader_epoch or replica.truncating_for >= 0:
            continue
        if replica.log.latest_epoch < 0:
            # Nothing this log holds was written under any epoch: nothing to cut.
            state = with_replica(state, replace(replica, validated_epoch=replica.leader_epoch))
        else:
            asking.append(replica)
    if asking:
        return _send_epoch_end(state, session, asking, now_ms)
    ready = [
        state.replicas[r.tp]
        for r in partitions
        if state.replicas[r.tp].validated_epoch == r.leader_epoch
        and r.truncating_for < 0
        and not r.advancing_start  # its next fetch reports the new log start
    ]
    if not ready:
        # truncations or log start moves in flight: they pump again when done
        return with_session(state, session), []
    return _send_fetch(state, session, ready, now_ms)


def _send_epoch_end(
    state: BrokerState, session: FetchSession, asking: list[Replica], now_ms: int
) -> Step:
    request = EpochEndRequest(
        broker_id=state.broker_id,
        partitions=[
            EpochEndPartition(
                topic=r.tp.topic,
                partition=r.tp.partition,
                current_leader_epoch=Epoch(r.leader_epoch),
                epoch=r.log.latest_epoch,
            )
            for r in asking
        ],
    )
    session = replace(session, sent=request, sent_ms=now_ms)
    return with_session(state, session), [
        SendEpochEnd(leader=session.leader, request=request),
        ScheduleTick(at_ms=now_ms + state.config.replica_request_timeout_ms),
    ]


def _send_fetch(
    state: BrokerState, session: FetchSession, ready: list[Replica], now_ms: int
) -> Step:
    config = state.config
    request = ReplicaFetchRequest(
        broker_id=state.broker_id,
        partitions=[
            ReplicaFetchPartition(
                topic=r.tp.topic,
                partition=r.tp.partition,
                leader_epoch=Epoch(r.leader_epoch),
                fetch_offset=r.log.log_end_offset,
                durable_offset=r.log.durable_offset,
                log_start_offset=r.log.log_start_offset,
            )
            for r in ready
        ],
        max_wait_ms=config.replica_fetch_max_wait_ms,
        partition_max_bytes=config.replica_fetch_partition_max_bytes,
        max_bytes=config.replica_fetch_max_bytes,
    )
    session = replace(session, sent=request, sent_ms=now_ms)
    return with_session(state, session), [
        SendReplicaFetch(leader=session.leader, request=request),
        ScheduleTick(at_ms=now_ms + config.replica_fetch_timeout_ms),
    ]


# ---- answers ----------------------------------------------------------------------------------


def on_epoch_end(state: BrokerState, event: EpochEndAnswered, now_ms: int) -> Step:
    session = state.sessions.get(event.leader)
    if session is None or session.sent is not event.request:
        return state, []  # an answer to a request this session no longer waits for
    results = event.response.partitions
    asked = event.request.partitions
    if len(results) != len(asked) or len(event.own_end_offsets) != len(asked):
        return _failed(state, session, "epoch-end answer does not match the request", 0.5, now_ms)
    state = with_session(state, replace(session, sent=None))
    effects: list[Effect] = []
    for wanted, result, own_end in zip(asked, results, event.own_end_offsets, strict=True):
        replica = state.replicas.get(TopicPartition(wanted.topic, wanted.partition))
        if replica is None:
            continue
        replica, more = epoch_end_result(replica, wanted.current_leader_epoch, result, own_end)
        state = with_replica(state, replica)
        effects += more
    state, more = pump(state, event.leader, now_ms)
    return state, effects + more


def on_fetch_answer(state: BrokerState, event: ReplicaFetchAnswered, now_ms: int) -> Step:
    session = state.sessions.get(event.leader)
    if session is None or session.sent is not event.request:
        return state, []
    asked = event.request.partitions
    results = event.response.partitions
    if len(results) != len(asked) or len(event.chunks) != len(asked):
        return _failed(
            state, session, "replica fetch answer does not match the request", event.draw, now_ms
        )
    effects: list[Effect] = []
    applying: set[TopicPartition] = set()
    answered: set[TopicPartition] = set()
    progressed = False
    for wanted, result, chunk in zip(asked, results, event.chunks, strict=True):
        tp = TopicPartition(wanted.topic, wanted.partition)
        replica = state.replicas.get(tp)
        if (
            replica is None
            or replica.role != "follower"
            or replica.leader_epoch != wanted.leader_epoch
        ):
            continue
        replica, more, ok = fetch_result(replica, wanted.fetch_offset, result, chunk)
        state = with_replica(state, replica)
        effects += more
        progressed = progressed or ok
        if ok:
            answered.add(tp)
        if any(isinstance(e, AppendReplicated) for e in more):
            applying.add(tp)
    session = replace(
        session,
        sent=None,
        applying=frozenset(applying),
        appended=frozenset(),
        answered=frozenset(answered),
        progressed=progressed,
        draw=event.draw,
    )
    state = with_session(state, session)
    if applying:
        return state, effects  # the appends report back; the round ends after the last
    state, more = _finish_round(state, session, now_ms)
    return state, effects + more


def on_appended(state: BrokerState, event: FollowerAppended, now_ms: int) -> Step:
    """A replicated append was performed: producers' state, high watermark, the round."""
    replica = state.replicas.get(event.tp)
    if replica is None:
        return state, []
    producers = producer_state.observed(replica.producers, event.data)
    replica, effects = appended(replace(replica, producers=producers), event.log)
    replica, more = follow_start(replica)
    effects += more
    state = with_replica(state, replica)
    state, more = append_done(state, event.tp, ok=True, now_ms=now_ms)
    return state, effects + more


def append_done(state: BrokerState, tp: TopicPartition, *, ok: bool, now_ms: int) -> Step:
    """One append of an answer was performed (or refused); the last one ends the round."""
    replica = state.replicas.get(tp)
    leader = replica.state.leader if replica is not None else None
    session = state.sessions.get(leader) if leader is not None else None
    if session is None or tp not in session.applying:
        return state, []
    session = replace(
        session,
        applying=session.applying - {tp},
        appended=session.appended | {tp} if ok else session.appended,
    )
    state = with_session(state, session)
    if session.applying:
        return state, []
    return _finish_round(state, session, now_ms)


def _finish_round(state: BrokerState, session: FetchSession, now_ms: int) -> Step:
    if not session.progressed:
        return _failed(state, session, None, session.draw, now_ms)
    effects: list[Effect] = []
    durable_wait: dict[TopicPartition, int] = {}
    for tp in sorted(session.appended):
        replica = state.replicas.get(tp)
        if replica is None or replica.log.log_end_offset <= replica.log.log_start_offset:
            continue
        end = replica.log.log_end_offset
        # Durability of every append (a group-commit fsync in the background, so the
        # durable offset this replica reports keeps moving under sustained load).
        effects.append(RequestDurable(tp=tp, offset=Offset(end - 1)))
        if replica.log.durable_offset < end:
            durable_wait[tp] = end
    behind = any(
        r.log.log_end_offset < r.leader_log_end_offset
        for tp in session.answered
        if (r := state.replicas.get(tp)) is not None
    )
    session = replace(session, failures=0, appended=frozenset(), answered=frozenset())
    if durable_wait and not behind:
        # Caught up: the next fetch reports the durable offset that moves the high
        # watermark, so wait for the fsync first. Behind (catching up), fetch on at once.
        deadline = now_ms + DURABLE_WAIT_MS
        session = replace(session, durable_wait=durable_wait, resume_at_ms=deadline)
        return with_session(state, session), [*effects, ScheduleTick(at_ms=deadline)]
    state, more = pump(
        with_session(state, replace(session, resume_at_ms=0)), session.leader, now_ms
    )
    return state, effects + more


def on_durable(state: BrokerState, tp: TopicPartition, now_ms: int) -> Step:
    """A flush (or a failure) of ``tp``: a session waiting for it may fetch again."""
    replica = state.replicas.get(tp)
    if replica is None or replica.state.leader is None:
        return state, []
    session = state.sessions.get(replica.state.leader)
    if session is None or tp not in session.durable_wait:
        return state, []
    wanted = session.durable_wait[tp]
    if replica.log.durable_offset < wanted and not replica.log_failed:
        return state, []
    remaining = {k: v for k, v in session.durable_wait.items() if k != tp}
    session = replace(
        session, durable_wait=remaining, resume_at_ms=0 if not remaining else session.resume_at_ms
    )
    state = with_session(state, session)
    if remaining:
        return state, []
    return pump(state, session.leader, now_ms)


def on_unreachable(state: BrokerState, event: PeerUnreachable, now_ms: int) -> Step:
    session = state.sessions.get(event.leader)
    if session is None or session.sent is not event.request:
        return state, []
    return _failed(state, session, event.reason, event.draw, now_ms)


def _failed(
    state: BrokerState, session: FetchSession, reason: str | None, draw: float, now_ms: int
) -> Step:
    failures = session.failures + 1
    delay_ms = backoff_ms(
        failures - 1,
        base_ms=FETCH_BACKOFF_BASE_MS,
        max_ms=FETCH_BACKOFF_MAX_MS,
        draw=draw,
        jitter=BELOW,
    )
    resume = now_ms + max(1, delay_ms)
    session = replace(
        session,
        sent=None,
        applying=frozenset(),
        appended=frozenset(),
        answered=frozenset(),
        failures=failures,
        resume_at_ms=resume,
    )
    effects: list[Effect] = [ScheduleTick(at_ms=resume)]
    if reason is not None:
        again = "" if failures == 1 else f" again ({failures} in a row)"
        message = f"replica fetch from broker {session.leader} failed{again}: {reason}"
        effects.insert(0, Note(level="warning" if failures == 1 else "debug", message=message))
    return with_session(state, session), effects


def tick(state: BrokerState, now_ms: int) -> Step:
    """Deadlines: requests unanswered too long (lost), durable waits and backoffs over."""
    effects: list[Effect] = []
    for leader, session in sorted(state.sessions.items()):
        if session.sent is not None:
            timeout_ms = (
                state.config.replica_request_timeout_ms
                if isinstance(session.sent, EpochEndRequest)
                else state.config.replica_fetch_timeout_ms
            )
            if now_ms - session.sent_ms >= timeout_ms:
                state, more = _failed(state, session, "no answer in time", session.draw, now_ms)
                effects += more
            continue
        if session.durable_wait and now_ms >= session.resume_at_ms:
            state = with_session(state, replace(session, durable_wait={}, resume_at_ms=0))
        state, more = pump(state, leader, now_ms)
        effects += more
    return state, effects


def invalidate(replica: Replica) -> Replica:
    """Check the epoch against the leader again before fetching (a refused append)."""
    return replace(replica, validated_epoch=NOT_VALIDATED)


# ---- one partition: validation against the leader, a fetch answer ---------------------------


def epoch_end_result(
    replica: Replica, asked_epoch: int, result: EpochEndResult, own_end_offset: int
) -> ReplicaStep:
    """Where our log and the leader's part (KIP-101/279): truncate any suffix it lacks."""
    if result.error is not None:
        note = Note(
            level="debug", message=f"partition {replica.tp}: epoch end: {result.error.message}"
        )
        return replica, [note]
    if replica.role != "follower" or replica.leader_epoch != asked_epoch:
        return replica, []  # the role changed meanwhile: check again next round
    log = replica.log
    cut: int
    if result.epoch < 0:
        # The leader knows no epoch this old: keep what consumers may have seen (the high
        # watermark), as Kafka does, and copy the rest again.
        cut = min(replica.high_watermark, log.log_end_offset)
    else:
        cut = truncation_offset(
            leader_end_offset_for_epoch=result.end_offset,
            follower_end_offset_for_epoch=own_end_offset,
            follower_log_end=log.log_end_offset,
        )
    if cut >= log.log_end_offset:
        return replace(replica, validated_epoch=asked_epoch), []
    reason = (
        f"truncating to {cut} (log end {log.log_end_offset}): the leader's epoch "
        f"{result.epoch} ends there"
    )
    effect = TruncateTo(tp=replica.tp, offset=Offset(cut), reason=reason)
    return replace(replica, truncating_for=asked_epoch), [effect]


def fetch_result(
    replica: Replica, asked_offset: int, result: ReplicaFetchResult, chunk: bytes | memoryview
) -> tuple[Replica, list[Effect], bool]:
    """One partition of a leader's fetch answer; True when it answered without error."""
    if result.error is not None:
        return (*_fetch_error(replica, asked_offset, result, result.error), False)
    replica = replace(
        replica,
        leader_high_watermark=result.high_watermark,
        leader_log_end_offset=result.log_end_offset,
        leader_log_start_offset=result.log_start_offset,
    )
    if chunk:  # the log start follows once the append is done (``on_appended``)
        return replica, [AppendReplicated(tp=replica.tp, data=chunk)], True
    replica, effects = refresh_high_watermark(replica)
    replica, more = follow_start(replica)
    return replica, effects + more, True


def _fetch_error(
    replica: Replica, asked_offset: int, result: ReplicaFetchResult, error: ErrorBody
) -> ReplicaStep:
    if error.code != ErrorCode.OFFSET_OUT_OF_RANGE.name:
        return replica, [
            Note(level="debug", message=f"partition {replica.tp}: replica fetch error {error.code}")
        ]
    if asked_offset < result.log_start_offset:
        # The leader deleted what we would fetch next (retention): start over there.
        start = result.log_start_offset
        reason = f"the leader starts at {start}, beyond our {asked_offset}: restarting there"
        return replace(replica, producers={}), [
            ResetTo(tp=replica.tp, offset=Offset(start), reason=reason)
        ]
    return replace(replica, validated_epoch=NOT_VALIDATED), []  # diverged: check again
