"""Deleting records below an offset (Kafka's DeleteRecords), pure: the leader's decision,
the followers following its log start, and when the request is done.

1. **The leader** (:func:`delete_records`) takes a request only while it leads, its log
   has not failed and its topic's cleanup policy deletes (a compact-only topic refuses
   with POLICY_VIOLATION, as Kafka). The offset, -1 for the high watermark, must lie
   between 0 and the high watermark (``rules.delete_records_offset``): consumers never
   saw what lies beyond, and it may still be truncated. The log start moves there
   (``AdvanceLogStart``, performed by the shell: a checkpoint, then whole segments
   below it deleted) and the request waits (a ``StartWaiter``) until the *low
   watermark*, the lowest log start over the in-sync replicas, reaches the offset
   (``replica.answer_start_waiters``), or its deadline (REQUEST_TIMED_OUT), or a
   leadership change (NOT_LEADER).
2. **Followers** learn the leader's log start from every fetch answer, as Kafka's
   ``FetchResponse.log_start_offset``, and move theirs up to it (never beyond their own
   log end: :func:`follow_start`); meanwhile the partition is not fetched, so the next
   fetch reports the new start, which is how the leader's low watermark moves. The
   leader answers the long-polls parked on the partition as soon as its own start moved,
   so the followers learn at once rather than after their long-poll.

Worked example (RF 3, ISR [1, 2, 3], high watermark 100, every log starting at 0):
``DeleteRecordsArrived(offset=60)`` on leader 1 -> ``AdvanceLogStart(60)`` and a waiter
(low watermark 0); the log moved: ``LogChanged(start 60)`` -> the parked fetches of 2 and
3 answered with log start 60 -> each follower ``AdvanceLogStart(60)`` -> their next fetches
report 60 -> low watermark 60 -> ``AnswerDeleteRecords(low_watermark=60)``.
"""

from __future__ import annotations

from msgspec.structs import replace

from conveyor.broker.replica import Replica, StartWaiter, answer_start_waiters
from conveyor.broker.rules import delete_records_offset
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import Offset
from conveyor.protocol.replica import (
    AdvanceLogStart,
    AnswerDeleteRecords,
    DeleteRecordsArrived,
    Effect,
    Note,
    ScheduleTick,
)

ReplicaStep = tuple[Replica, list[Effect]]


def delete_records(replica: Replica, event: DeleteRecordsArrived) -> ReplicaStep:
    """The leader takes a DeleteRecords, or refuses it at once with a typed error."""
    problem = _refusal(replica, event.offset)
    if problem is not None:
        return replica, [AnswerDeleteRecords(trim_id=event.trim_id, error=problem)]
    offset = delete_records_offset(event.offset, high_watermark=replica.high_watermark)
    effects: list[Effect] = []
    if offset > replica.log.log_start_offset:
        reason = f"records below {offset} deleted on request"
        effects.append(AdvanceLogStart(tp=replica.tp, offset=Offset(offset), reason=reason))
    waiter = StartWaiter(
        trim_id=event.trim_id,
        offset=offset,
        leader_epoch=replica.leader_epoch,
        deadline_ms=event.deadline_ms,
    )
    replica = replace(replica, start_waiters=(*replica.start_waiters, waiter))
    replica, answered = answer_start_waiters(replica)
    if not answered:
        effects.append(ScheduleTick(at_ms=event.deadline_ms))
    return replica, effects + answered


def _refusal(replica: Replica, asked: int) -> ConveyorError | None:
    if not replica.is_leader:
        return RetriableError(
            f"this broker does not lead {replica.tp}",
            code=ErrorCode.NOT_LEADER,
            leader=replica.state.leader,
            leader_epoch=replica.leader_epoch,
        )
    if replica.failure is not None:
        return replica.failure
    if not replica.state.log_config.deletes:
        return InvalidRequestError(
            f"{replica.tp}: a topic whose cleanup_policy is only compact keeps its records "
            "until compaction removes them (as Kafka, records cannot be deleted there)",
            code=ErrorCode.POLICY_VIOLATION,
        )
    try:
        delete_records_offset(asked, high_watermark=replica.high_watermark)
    except InvalidRequestError as exc:
        return exc
    return None


def follow_start(replica: Replica) -> ReplicaStep:
    """A follower moves its log start up to its leader's (as far as its own log goes)."""
    if replica.role != "follower" or replica.advancing_start or replica.log_failed:
        return replica, []
    log = replica.log
    target = min(replica.leader_log_start_offset, log.log_end_offset)
    if target <= log.log_start_offset:
        return replica, []
    reason = f"the leader's log starts at {replica.leader_log_start_offset}"
    effect = AdvanceLogStart(tp=replica.tp, offset=Offset(target), reason=reason)
    return replace(replica, advancing_start=True), [effect]


def advance_failed(replica: Replica, error: ConveyorError) -> ReplicaStep:
    """The log start could not move (nothing changed): the DeleteRecords waiting for it
    fail with the error; a follower tries again on its next fetch answer."""
    replica = replace(replica, advancing_start=False)
    note = Note(level="error", message=f"partition {replica.tp}: log start not moved: {error}")
    start = replica.log.log_start_offset
    failed = [w for w in replica.start_waiters if w.offset > start]
    if not failed:
        return replica, [note]
    left = tuple(w for w in replica.start_waiters if w not in failed)
    answers: list[Effect] = [AnswerDeleteRecords(trim_id=w.trim_id, error=error) for w in failed]
    return replace(replica, start_waiters=left), [note, *answers]
