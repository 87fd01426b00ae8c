"""One hosted replica as a pure state machine: role, high watermark, ISR upkeep, acks.

Every function here takes a :class:`Replica` (immutable) and returns the next one with
the effects to perform; no I/O, no clock (``now_ms`` comes in), no randomness. The broker
core (``core.py``) routes events here; leaf rules (the high watermark, the ISR rule, the
truncation point, idempotence) are in ``rules.py`` and table-tested there.

Leader side (Kafka's ``Partition``/``Replica`` state):

* each follower's progress comes from its fetches (:func:`record_fetch`): what it holds,
  what it holds durably, and Kafka's "caught up" time (a fetch that reached the log end,
  or reached what the log end was at its previous fetch);
* the **high watermark** is the minimum durable offset over the ISR members, counting a
  member being added from the moment the AlterIsr leaves (Kafka's maximal ISR), and never
  moves back while this broker leads; acks=all produces wait in ``waiters`` until it
  covers them (:func:`refresh_high_watermark` answers them);
* the **ISR** the leader wants (:func:`isr_proposal`) goes to the coordinator as an
  AlterIsr, one at a time per partition, retried after a lost answer.

Follower side: the high watermark is the leader's, up to what this replica holds. The
follower's fetch sessions, its validation against a new leader's log (KIP-101) and what
a fetch answer becomes (an append, a reset, a re-validation) are in ``follower.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Literal

from msgspec.structs import replace

from conveyor.broker.rules import (
    dedup_decision,
    high_watermark,
    isr_change_for_follower,
    low_watermark,
    record_producer_batch,
)
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    AlterIsrRequest,
    BrokerId,
    Epoch,
    Offset,
    ReplicaAssignment,
)
from conveyor.protocol.replica import (
    AnswerDeleteRecords,
    AnswerProduce,
    AssignEpoch,
    Effect,
    IsrChanged,
    LogFacts,
    Note,
    ProducerBatch,
    Producers,
    ProducerWrite,
    ReplicaState,
    ScheduleTick,
    SendAlterIsr,
    TopicPartition,
    Value,
    Wake,
)

FETCH_FRESHNESS_MS: Final = 3000  # a follower rejoins the ISR only if it fetched this recently
# After an append failed for lack of space, the log counts as failed (reported to the
# coordinator, which moves leadership away, and not fetched as a follower) until its
# filesystem has this much free again; probed at most once a second.
DISK_FREE_TO_RESUME_BYTES: Final = 16 * 1024 * 1024
DISK_CHECK_INTERVAL_MS: Final = 1000
ALTER_ISR_TIMEOUT_MS: Final = 5000  # no answer this long: as a lost answer (ask again)
ALTER_ISR_BACKOFF_MS: Final = 1000  # after a refused or lost AlterIsr
NOT_VALIDATED: Final = -2  # validated_epoch before the first check against a leader
# No answer, or one from a deposed coordinator: the AlterIsr may or may not have applied.
_ANSWER_LOST: Final = frozenset((ErrorCode.NETWORK_ERROR.name, ErrorCode.NOT_COORDINATOR.name))


class FollowerProgress(Value, frozen=True):
    """What the leader knows of one follower, from its fetches (Kafka's ``Replica``)."""

    log_end_offset: int = 0
    durable_offset: int = 0
    last_caught_up_ms: int = 0
    last_fetch_leader_end: int = 0
    last_fetch_ms: int = 0
    log_start_offset: int = -1  # as it reported it (-1: not yet, or a broker too old to)


class AckWaiter(Value, frozen=True):
    """An acks=all produce waiting for the high watermark to reach ``next_offset``."""

    ack_id: int
    next_offset: int
    leader_epoch: int
    deadline_ms: int


class StartWaiter(Value, frozen=True):
    """A DeleteRecords waiting for every in-sync replica's log to start at ``offset``."""

    trim_id: int
    offset: int
    leader_epoch: int
    deadline_ms: int


class Replica(Value, frozen=True):
    tp: TopicPartition
    broker_id: BrokerId
    state: ReplicaState
    log: LogFacts
    high_watermark: Offset = Offset(0)
    producers: Producers = {}  # noqa: RUF012 -- msgspec copies an empty default per instance
    # leader
    leader_since_ms: int = 0
    followers: Mapping[BrokerId, FollowerProgress] = {}
    # each follower's durable offset, as in ``followers`` (kept apart: the high watermark
    # reads it on every fetch and flush)
    follower_durable_offsets: Mapping[BrokerId, int] = {}
    pending_isr: tuple[BrokerId, ...] = ()  # an AlterIsr's additions, counted at once
    isr_request: AlterIsrRequest | None = None  # sent and not answered yet
    isr_sent_ms: int = 0
    isr_blocked_until_ms: int = 0  # no new AlterIsr before (backoff after a failure)
    isr_resend: bool = False  # the answer was lost: send the same request again
    waiters: tuple[AckWaiter, ...] = ()
    start_waiters: tuple[StartWaiter, ...] = ()
    # follower
    leader_high_watermark: int = 0
    leader_log_end_offset: int = 0
    leader_log_start_offset: int = 0
    advancing_start: bool = False  # an AdvanceLogStart in flight: not fetched meanwhile
    validated_epoch: int = NOT_VALIDATED  # the epoch checked against its leader (KIP-101)
    truncating_for: int = NOT_VALIDATED  # a truncation in flight, for this epoch
    # health
    failure: ConveyorError | None = None  # an fsync failed: read-only until a restart
    disk_full: bool = False
    disk_checked_ms: int = 0

    @property
    def role(self) -> Literal["leader", "follower"]:
        return self.state.role

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch

    @property
    def is_leader(self) -> bool:
        return self.state.role == "leader"

    @property
    def log_failed(self) -> bool:
        """The log cannot take writes: an fsync failed, or the disk was full and has not
        had ``DISK_FREE_TO_RESUME_BYTES`` free since (Kafka's offline replica)."""
        return self.failure is not None or self.disk_full

    @property
    def low_watermark(self) -> int:
        """The lowest log start offset over the in-sync replicas (the leader's own log
        start, and each follower's as its last fetch reported it)."""
        return low_watermark(
            leader=self.broker_id,
            leader_log_start=self.log.log_start_offset,
            follower_log_starts={b: p.log_start_offset for b, p in self.followers.items()},
            isr=self.state.isr or (self.broker_id,),
        )


Step = tuple[Replica, list[Effect]]


def new_replica(  # noqa: PLR0917 -- an Opened event's fields, in its order
    tp: TopicPartition,
    broker_id: BrokerId,
    state: ReplicaState,
    log: LogFacts,
    producers: Producers,
    now_ms: int,
) -> Step:
    replica = Replica(tp=tp, broker_id=broker_id, state=state, log=log, producers=producers)
    effects: list[Effect] = []
    if state.role == "leader":
        replica, effects = _became_leader(replica, now_ms)
    replica, more = refresh_high_watermark(replica)
    return replica, effects + more


# ---- role and assignment --------------------------------------------------------------------


def apply_state(replica: Replica, state: ReplicaState, now_ms: int) -> Step:
    """Take a new role, epoch or replica set (from reconciliation or an AlterIsr answer)."""
    current = replica.state
    new_leadership = state.leader_epoch != current.leader_epoch or state.role != current.role
    changes: dict[str, object] = {"state": state}
    if new_leadership or state.partition_epoch > current.partition_epoch:
        changes["pending_isr"] = ()  # the coordinator moved past any ISR change in flight
    if new_leadership:
        changes["followers"] = {}  # a new epoch: the followers report again
        changes["follower_durable_offsets"] = {}
        # A follower's high watermark is its leader's (up to its own log end); until the
        # new leader answers, it keeps the one it had.
        changes["leader_high_watermark"] = replica.high_watermark
        changes["leader_log_start_offset"] = 0
    replica = replace(replica, **changes)
    effects: list[Effect] = []
    if new_leadership:
        replica, effects = _fail_waiters(replica, _leadership_moved)
        if state.role == "leader":
            replica, more = _became_leader(replica, now_ms)
            effects += more
    replica, more = refresh_high_watermark(replica)
    return replica, [*effects, *more, Wake(tp=replica.tp)]


def _became_leader(replica: Replica, now_ms: int) -> Step:
    replica = replace(replica, leader_since_ms=now_ms, isr_request=None, isr_resend=False)
    epoch = replica.state.leader_epoch
    if epoch < 0 or replica.log_failed:
        return replica, []
    if epoch > replica.log.latest_epoch:
        replica = replace(replica, log=replace(replica.log, latest_epoch=epoch))
    return replica, [AssignEpoch(tp=replica.tp, epoch=epoch)]


def replicating_isr(replica: Replica) -> tuple[BrokerId, ...]:
    """The ISR members whose durable offsets bound the high watermark: Kafka's "maximal
    ISR", the confirmed ISR plus any member being added. A shrink counts only once the
    coordinator confirmed it; an addition counts from the moment it is asked for, so no
    write is acknowledged without a replica that may lead from then on."""
    isr = replica.state.isr or (replica.broker_id,)
    if replica.pending_isr:
        return tuple(dict.fromkeys((*isr, *replica.pending_isr)))
    return isr


# ---- the high watermark and the acks waiting for it -----------------------------------------


def refresh_high_watermark(replica: Replica) -> Step:
    """Recompute the high watermark; answer the acks it now covers; wake consumers."""
    log = replica.log
    if replica.role == "leader":
        new = high_watermark(
            leader=replica.broker_id,
            leader_durable_offset=log.durable_offset,
            follower_durable_offsets=replica.follower_durable_offsets,
            isr=replicating_isr(replica),
            previous=replica.high_watermark,
            log_end_offset=log.log_end_offset,
        )
    else:
        new = min(replica.leader_high_watermark, log.log_end_offset)
    if new == replica.high_watermark:
        return answer_start_waiters(replica)
    replica = replace(replica, high_watermark=Offset(new))
    effects: list[Effect] = [Wake(tp=replica.tp)]
    if replica.waiters:
        done = [w for w in replica.waiters if w.next_offset <= new]
        if done:
            replica = replace(replica, waiters=tuple(w for w in replica.waiters if w not in done))
            error = _too_few_replicas(replica)
            effects += [AnswerProduce(ack_id=w.ack_id, error=error) for w in done]
    replica, more = answer_start_waiters(replica)
    return replica, effects + more


def answer_start_waiters(replica: Replica) -> Step:
    """Answer the DeleteRecords whose offset every in-sync replica's log start reached."""
    if not replica.start_waiters or not replica.is_leader:
        return replica, []
    low = replica.low_watermark
    done = [w for w in replica.start_waiters if w.offset <= low]
    if not done:
        return replica, []
    left = tuple(w for w in replica.start_waiters if w not in done)
    answers: list[Effect] = [
        AnswerDeleteRecords(trim_id=w.trim_id, low_watermark=low) for w in done
    ]
    return replace(replica, start_waiters=left), answers


def reset_high_watermark(replica: Replica) -> Step:
    """After a truncation or reset: the log may now end below the old value."""
    capped = min(replica.high_watermark, replica.log.log_end_offset)
    replica = replace(replica, high_watermark=Offset(capped))
    replica, effects = refresh_high_watermark(replica)
    return replica, [*effects, Wake(tp=replica.tp)]


def _too_few_replicas(replica: Replica) -> ConveyorError | None:
    """The error of acks=all writes the high watermark now covers: None while the ISR
    they reached holds min_insync_replicas. Else (the ISR shrank while they waited, e.g.
    the coordinator dropped a dead follower) they are in the log but on fewer copies than
    acks=all promises: Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND, not a success."""
    if replica.role != "leader":
        return None
    isr = replicating_isr(replica)
    minimum = replica.state.min_insync_replicas
    if len(isr) >= minimum:
        return None
    return RetriableError(
        f"{replica.tp}: written, but the ISR {list(isr)} shrank below min_insync_replicas "
        f"{minimum} before the write was acknowledged (a retry may write it again unless "
        "the producer is idempotent)",
        code=ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        isr=list(isr),
        min_insync_replicas=minimum,
    )


def add_waiter(replica: Replica, waiter: AckWaiter) -> Step:
    if replica.high_watermark >= waiter.next_offset:
        return replica, [AnswerProduce(ack_id=waiter.ack_id, error=_too_few_replicas(replica))]
    replica = replace(replica, waiters=(*replica.waiters, waiter))
    return replica, [ScheduleTick(at_ms=waiter.deadline_ms)]


def expire_waiters(replica: Replica, now_ms: int) -> Step:
    """Produce and DeleteRecords waits past their deadline. A DeleteRecords times out only
    once the leader's own log start moved (its AdvanceLogStart is a local file operation
    that always ends, in LogChanged or AdvanceFailed): as in Kafka, where the leader
    deletes before the wait begins, only the wait for the followers is bounded by the
    request's timeout, so ``timeout_ms=0`` on a leader alone in its ISR succeeds."""
    expired = [w for w in replica.waiters if w.deadline_ms <= now_ms]
    start = replica.log.log_start_offset
    trims = [w for w in replica.start_waiters if w.deadline_ms <= now_ms and w.offset <= start]
    if not expired and not trims:
        return replica, []
    replica = replace(
        replica,
        waiters=tuple(w for w in replica.waiters if w not in expired),
        start_waiters=tuple(w for w in replica.start_waiters if w not in trims),
    )
    effects: list[Effect] = [
        AnswerProduce(ack_id=w.ack_id, error=_timed_out(replica, w)) for w in expired
    ]
    low = replica.low_watermark
    for trim in trims:
        error = RetriableError(
            f"{replica.tp}: records below {trim.offset} deleted on the leader, but not yet on "
            f"every in-sync replica (lowest log start {low})",
            code=ErrorCode.REQUEST_TIMED_OUT,
            low_watermark=low,
        )
        effects.append(AnswerDeleteRecords(trim_id=trim.trim_id, error=error))
    return replica, effects


def _timed_out(replica: Replica, waiter: AckWaiter) -> ConveyorError:
    return RetriableError(
        f"{replica.tp}: offset {waiter.next_offset - 1} written but not acknowledged in time "
        f"(high watermark {replica.high_watermark})",
        code=ErrorCode.REQUEST_TIMED_OUT,
        high_watermark=replica.high_watermark,
    )


def _leadership_moved(replica: Replica, waiter: AckWaiter) -> ConveyorError:
    return RetriableError(
        f"{replica.tp}: leadership moved before offset {waiter.next_offset - 1} was "
        "acknowledged; it may or may not survive",
        code=ErrorCode.NOT_LEADER,
        outcome_unknown=True,
    )


def _fail_waiters(replica: Replica, error: Callable[[Replica, AckWaiter], ConveyorError]) -> Step:
    """Answer every waiter with the error ``error`` makes for it (DeleteRecords waiters
    learn NOT_LEADER: they wait for this leader's followers)."""
    if not replica.waiters and not replica.start_waiters:
        return replica, []
    effects: list[Effect] = [
        AnswerProduce(ack_id=w.ack_id, error=error(replica, w)) for w in replica.waiters
    ]
    moved = RetriableError(
        f"{replica.tp}: leadership moved before every replica deleted the records",
        code=ErrorCode.NOT_LEADER,
    )
    effects += [AnswerDeleteRecords(trim_id=w.trim_id, error=moved) for w in replica.start_waiters]
    return replace(replica, waiters=(), start_waiters=()), effects


def fail_all_waiters(replica: Replica) -> Step:
    """The replica goes away (deleted): its produces learn NOT_LEADER."""
    return _fail_waiters(replica, _leadership_moved)


# ---- leader: appends, flushes, followers' progress ------------------------------------------


def check_produce(replica: Replica, acks: str, write: ProducerWrite | None) -> ProducerBatch | None:
    """Before a leader appends: raises the typed error that refuses the write (a failed
    log, too small an ISR for acks=all, an idempotence violation), or returns the batch a
    retry duplicates (answered with its original offsets, not written again)."""
    if replica.failure is not None:
        raise replica.failure
    state = replica.state
    if acks == "all" and len(state.isr) < state.min_insync_replicas:
        raise RetriableError(
            f"{replica.tp}: ISR {list(state.isr)} is smaller than min_insync_replicas "
            f"{state.min_insync_replicas}; nothing was written",
            code=ErrorCode.NOT_ENOUGH_REPLICAS,
            isr=list(state.isr),
            min_insync_replicas=state.min_insync_replicas,
        )
    if write is None:
        return None
    entry = replica.producers.get(write.producer_id)
    decision = dedup_decision(
        entry,
        producer_epoch=write.producer_epoch,
        first_sequence=write.first_sequence,
        last_sequence=write.last_sequence,
    )
    if decision.action == "duplicate":
        return decision.batch
    if decision.action == "reject":
        code = decision.error or ErrorCode.OUT_OF_ORDER_SEQUENCE
        last = entry.batches[-1].last_sequence if entry and entry.batches else -1
        raise InvalidRequestError(
            f"{replica.tp}: producer {write.producer_id} epoch {write.producer_epoch} "
            f"sequence {write.first_sequence}: {code.default_message}",
            code=code,
            producer_id=write.producer_id,
            last_sequence=last,
        )
    return None


def observe_write(producers: Producers, write: ProducerWrite, base: int, last: int) -> Producers:
    """The producers' state after a batch of ``write`` landed at ``base``..``last``."""
    batch = ProducerBatch(
        first_sequence=write.first_sequence,
        last_sequence=write.last_sequence,
        base_offset=Offset(base),
        last_offset=Offset(last),
    )
    entry = record_producer_batch(
        producers.get(write.producer_id), producer_epoch=write.producer_epoch, batch=batch
    )
    return {**producers, write.producer_id: entry}


def record_fetch(  # noqa: PLR0917 -- a fetched partition's fields, in its order
    replica: Replica,
    follower: BrokerId,
    fetch_offset: int,
    durable_offset: int,
    now_ms: int,
    log_start_offset: int | None = None,
) -> Step:
    """A follower fetched from ``fetch_offset``: it holds everything below it, and
    ``durable_offset`` of it durably; its log starts at ``log_start_offset``. Advances the
    high watermark (and answers the DeleteRecords its log start completes)."""
    progress = replica.followers.get(follower)
    if progress is None:
        progress = FollowerProgress(last_caught_up_ms=replica.leader_since_ms)
    leader_end = replica.log.log_end_offset
    caught_up_ms = progress.last_caught_up_ms
    if fetch_offset >= leader_end:
        caught_up_ms = now_ms
    elif fetch_offset >= progress.last_fetch_leader_end:
        caught_up_ms = max(caught_up_ms, progress.last_fetch_ms)
    durable = min(durable_offset, fetch_offset)
    moved = progress.durable_offset != durable
    progress = FollowerProgress(
        log_end_offset=fetch_offset,
        durable_offset=durable,
        last_caught_up_ms=caught_up_ms,
        last_fetch_leader_end=leader_end,
        last_fetch_ms=now_ms,
        log_start_offset=-1 if log_start_offset is None else log_start_offset,
    )
    replica = replace(
        replica,
        followers={**replica.followers, follower: progress},
        follower_durable_offsets={**replica.follower_durable_offsets, follower: durable},
    )
    if not moved:
        # What it holds durably did not change: nor can the high watermark. Its log start
        # may have: a DeleteRecords may be done.
        return answer_start_waiters(replica)
    return refresh_high_watermark(replica)


def isr_proposal(
    replica: Replica, now_ms: int, lag_time_max_ms: int
) -> tuple[BrokerId, ...] | None:
    """The ISR this leader should ask the coordinator for, None when it is right.

    A member that has not caught up within ``lag_time_max_ms`` leaves; a replica that
    holds durably at least the high watermark (or everything) joins, so a new member
    never lacks an acknowledged write."""
    if not replica.is_leader:
        return None
    state = replica.state
    isr = list(state.isr)
    if replica.broker_id not in isr:
        isr.insert(0, replica.broker_id)
    leader_end = replica.log.log_end_offset
    for peer in state.replicas:
        if peer == replica.broker_id:
            continue
        progress = replica.followers.get(peer)
        in_isr = peer in isr
        if progress is None:
            # Never fetched in this epoch: it leaves after the lag time, joins never.
            if in_isr and now_ms - replica.leader_since_ms > lag_time_max_ms:
                isr.remove(peer)
            continue
        if not in_isr and now_ms - progress.last_fetch_ms > FETCH_FRESHNESS_MS:
            # Its progress is old news (a broker that died after its last fetch): only a
            # follower fetching now may rejoin.
            continue
        change = isr_change_for_follower(
            in_isr=in_isr,
            follower_log_end=progress.log_end_offset if in_isr else progress.durable_offset,
            leader_log_end=leader_end,
            high_watermark=replica.high_watermark,
            last_caught_up_ms=progress.last_caught_up_ms,
            now_ms=now_ms,
            lag_time_max_ms=lag_time_max_ms,
        )
        if change == "shrink":
            isr.remove(peer)
        elif change == "expand":
            isr.append(peer)
    wanted = tuple(isr)
    return None if set(wanted) == set(state.isr) else wanted


def maybe_alter_isr(replica: Replica, now_ms: int, lag_time_max_ms: int) -> Step:
    """Send the ISR this leader wants, one request at a time; resend a lost one."""
    if not replica.is_leader or now_ms < replica.isr_blocked_until_ms:
        return replica, []
    if replica.isr_request is not None:
        if replica.isr_resend or now_ms - replica.isr_sent_ms >= ALTER_ISR_TIMEOUT_MS:
            if replica.isr_request.partition_epoch != replica.state.partition_epoch:
                return replace(replica, isr_request=None, isr_resend=False), []
            # Applied or not? Only the coordinator knows: ask again (the same request is
            # idempotent) while the pending member keeps counting for the high watermark.
            return _send_isr(replica, replica.isr_request, now_ms)
        return replica, []
    wanted = isr_proposal(replica, now_ms, lag_time_max_ms)
    if wanted is None:
        return replica, []
    state = replica.state
    request = AlterIsrRequest(
        broker_id=replica.broker_id,
        topic=replica.tp.topic,
        partition=replica.tp.partition,
        leader_epoch=Epoch(state.leader_epoch),
        partition_epoch=state.partition_epoch,
        isr=list(wanted),
    )
    # Pending until the coordinator's answer (or, if that is lost, a newer partition
    # epoch in a heartbeat) says what the ISR is: an added member may already count there.
    pending = tuple(dict.fromkeys((*replica.pending_isr, *wanted)))
    return _send_isr(replace(replica, pending_isr=pending), request, now_ms)


def _send_isr(replica: Replica, request: AlterIsrRequest, now_ms: int) -> Step:
    replica = replace(replica, isr_request=request, isr_sent_ms=now_ms, isr_resend=False)
    return replica, [
        SendAlterIsr(tp=replica.tp, request=request),
        ScheduleTick(at_ms=now_ms + ALTER_ISR_TIMEOUT_MS),
    ]


def isr_answered(
    replica: Replica,
    request: AlterIsrRequest,
    assignment: ReplicaAssignment | None,
    error_code: str | None,
    now_ms: int,
) -> Step:
    """The coordinator answered our AlterIsr (or the answer was lost: NETWORK_ERROR)."""
    if replica.isr_request is not request:
        return replica, []  # an answer to a request we no longer wait for
    if error_code is not None:
        return _isr_refused(replica, request, error_code, now_ms)
    replica = replace(replica, isr_request=None, isr_resend=False)
    if assignment is None or assignment.leader_epoch != replica.leader_epoch:
        return refresh_high_watermark(replica)
    before = replica.state.isr
    state = replace(
        replica.state, isr=tuple(assignment.isr), partition_epoch=assignment.partition_epoch
    )
    replica, effects = apply_state(replica, state, now_ms)
    changed = IsrChanged(
        tp=replica.tp, before=before, after=state.isr, partition_epoch=state.partition_epoch
    )
    return replica, [changed, *effects]


def _isr_refused(replica: Replica, request: AlterIsrRequest, error_code: str, now_ms: int) -> Step:
    blocked = now_ms + ALTER_ISR_BACKOFF_MS
    note = Note(
        level="info",
        message=f"partition {replica.tp}: alter isr to {request.isr} failed: {error_code}",
    )
    if (
        error_code in _ANSWER_LOST
        and replica.is_leader
        and replica.state.partition_epoch == request.partition_epoch
    ):
        replica = replace(replica, isr_resend=True, isr_blocked_until_ms=blocked)
        return replica, [note, ScheduleTick(at_ms=blocked)]
    pending = replica.pending_isr
    if error_code != ErrorCode.STALE_EPOCH.name:
        pending = ()  # refused: the ISR did not change
    # STALE_EPOCH: the state moved on; the next heartbeat brings it (and clears the pending
    # change). Back off either way so a confused coordinator is not hammered.
    replica = replace(
        replica,
        isr_request=None,
        isr_resend=False,
        isr_blocked_until_ms=blocked,
        pending_isr=pending,
    )
    replica, effects = refresh_high_watermark(replica)
    return replica, [note, *effects, ScheduleTick(at_ms=blocked)]


# ---- storage facts --------------------------------------------------------------------------


def appended(replica: Replica, log: LogFacts) -> Step:
    """The log end moved (an append as leader or follower)."""
    replica = replace(
        replica, log=replace(log, durable_offset=min(log.durable_offset, log.log_end_offset))
    )
    return refresh_high_watermark(replica)


def flushed(replica: Replica, durable_offset: int) -> Step:
    durable = Offset(min(durable_offset, replica.log.log_end_offset))
    if durable == replica.log.durable_offset:
        return replica, []
    return refresh_high_watermark(
        replace(replica, log=replace(replica.log, durable_offset=durable))
    )


def disk_full(replica: Replica, now_ms: int) -> Step:
    effects: list[Effect] = []
    if not replica.disk_full:
        message = f"partition {replica.tp}: no space left to append; reporting the log failed"
        effects.append(Note(level="error", message=message))
    return replace(replica, disk_full=True, disk_checked_ms=now_ms), effects


def disk_space(replica: Replica, free_bytes: int) -> Step:
    if not replica.disk_full or free_bytes < DISK_FREE_TO_RESUME_BYTES:
        return replica, []
    note = Note(
        level="info",
        message=f"partition {replica.tp}: disk space is back; the log takes writes again",
    )
    return replace(replica, disk_full=False), [note]


def log_failed(replica: Replica, error: ConveyorError) -> Step:
    effects: list[Effect] = []
    if replica.failure is None:
        effects.append(
            Note(
                level="error",
                message=f"partition {replica.tp}: log failed, no longer writable: {error}",
            )
        )
    replica, more = _fail_waiters(replace(replica, failure=error), lambda _r, _w: error)
    return replica, [*effects, *more, Wake(tp=replica.tp)]


def log_changed(replica: Replica, log: LogFacts, producers: Producers | None) -> Step:
    """A truncation, reset, reconfiguration or retention finished; a truncation completes the
    epoch's validation."""
    changes: dict[str, object] = {"log": log, "advancing_start": False}
    if producers is not None:
        changes["producers"] = producers
    if replica.truncating_for != NOT_VALIDATED:
        changes["validated_epoch"] = replica.truncating_for
        changes["truncating_for"] = NOT_VALIDATED
    return reset_high_watermark(replace(replica, **changes))
