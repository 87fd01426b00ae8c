"""Share-partition decisions: ``(state, event, now_ms) -> operations + reply``.

Pure: no clock, no I/O. Each decision builds operations, applies them to the state
(``ShareState.apply``, the same code a new leader replays) and returns them for the shell
to persist before it answers. Rules (docs/queues.md):

* **acquire**: available records (not before their not-before time) are locked for
  ``lock_duration_ms`` by a new acquisition of the member; delivery counts go up by one.
  ``unordered`` takes the oldest available records; ``key_ordered`` takes keys oldest head
  first, each key's head and the available records after it (``keyindex.py``).
* **acknowledge** (accept, release, reject) of ``first..last``: every record there must be
  held by the given acquisition (the lock token) or, without one, by the member; else the
  whole range is refused with INVALID_RECORD_STATE and nothing changes. In key-ordered
  mode an accept or reject must also follow the key's order: the key's earliest
  unfinished record must lie in the range (so a member accepts ``n`` before ``n + 1``).
* a **release** or a **lock expiry** is a failed attempt: past ``max_delivery_attempts``
  the record is dead-lettered, else available again after the delay asked for, or the
  group's retry backoff (``retry_backoff_ms * 2^(deliveries - 1)``, capped). In
  key-ordered mode the later records of the key held by the same acquisition go back too,
  without counting an attempt (their order would break otherwise).
* a **reject** dead-letters at once.

Example (unordered, lock 30 s, 5 attempts): offsets 0-9 are available; member m asks for
4 at t=0: acquisition 1 takes 0-3 (delivery count 1) until t=30,000. m accepts 0-1 and
releases 2-3: start moves to 2, 2-3 are available again; the next receive takes 2-9.
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conveyor.broker.share.state import (
    ACKED,
    ACQUIRED,
    AVAILABLE,
    AVAILABLE_RUN,
    GAP,
    ShareState,
)
from conveyor.protocol.errors import ErrorCode
from conveyor.protocol.share import (
    REASON_CHARS_MAX,
    AckRange,
    AckResult,
    AcquiredRange,
    DeadLetterEntry,
    Op,
    OpAcquire,
    OpDeadLetter,
    OpDeadLettered,
    OpProducer,
    OpRelease,
    OpSettle,
    OpSkip,
    Range,
    ShareGroupConfig,
)

ACK_SPAN_MAX = 1_000_000  # offsets in one acknowledgement range


@dataclass(frozen=True, slots=True)
class Acquired:
    acquisition: int
    deadline_ms: int
    ranges: list[AcquiredRange]

    @property
    def count(self) -> int:
        return sum(r.last_offset - r.first_offset + 1 for r in self.ranges)


def _apply(state: ShareState, ops: list[Op], op: Op) -> None:
    state.apply(op)
    ops.append(op)


def to_ranges(offsets: Sequence[int]) -> list[Range]:
    """Sorted offsets as inclusive ranges: [3, 4, 5, 9] -> [(3, 5), (9, 9)]."""
    ranges: list[Range] = []
    for _, group in itertools.groupby(enumerate(sorted(offsets)), lambda p: p[1] - p[0]):
        run = [offset for _, offset in group]
        ranges.append((run[0], run[-1]))
    return ranges


# ---- acquire -------------------------------------------------------------------------------


def acquire(
    state: ShareState, config: ShareGroupConfig, member: str, max_records: int, now_ms: int
) -> tuple[list[Op], Acquired | None]:
    """Lock up to ``max_records`` deliverable records for ``member``."""
    if max_records < 1:
        return [], None
    if state.keyindex is not None:
        base = state.base
        states = state.states
        taken = state.keyindex.take(
            max_records,
            now_ms,
            lambda offset: states[offset - base] == AVAILABLE,
            state.not_before,
        )
        ranges = to_ranges(taken)
    else:
        ranges = _available_ranges(state, max_records, now_ms)
    if not ranges:
        return [], None
    acquisition = state.next_acquisition
    deadline_ms = now_ms + config.lock_duration_ms
    ops: list[Op] = []
    _apply(state, ops, OpAcquire(acquisition, member, deadline_ms, ranges))
    acquired = [
        AcquiredRange(
            first_offset=first, last_offset=last, delivery_count=count, acquisition=acquisition
        )
        for first, last, count in _count_runs(state, ranges)
    ]
    return ops, Acquired(acquisition, deadline_ms, acquired)


def _available_ranges(state: ShareState, max_records: int, now_ms: int) -> list[Range]:
    """Unordered mode: the oldest available records, found a run at a time (C speed). The
    last range is stretched to the end of its log batch when that is available too, so a
    member gets whole stored batches (Kafka's ShareFetch does the same): the broker then
    answers the stored bytes, the client decodes no record it does not own, and a member
    asking for 10 records makes one request per stored batch, not one per 10 records.
    Measured (`conveyor bench queue`, 32 members, 10 records a receive, 5 ms of work
    each): 2,707-4,202 msg/s with the stretch, 892 when it was limited to ``max_records``
    more. The price: a member holds a whole batch under its lock, so batches should hold
    less work than the lock lasts (docs/queues.md#ordering-modes)."""
    base = state.base
    position = max(state.scan_hint, state.start) - base
    stop = state.end - base
    ranges: list[Range] = []
    wanted = max_records
    hint: int | None = None
    run_last = -1
    while wanted > 0:
        match = AVAILABLE_RUN.search(state.states, position, stop)
        if match is None:
            break
        a, b = match.start(), match.end()
        if hint is None:
            hint = base + a
        if state.not_before:
            runs = _due_runs(state, base + a, base + b, now_ms)
        else:
            runs = [(base + a, base + b - 1)]
        for first, run_last in runs:
            last = min(run_last, first + wanted - 1)
            ranges.append((first, last))
            wanted -= last - first + 1
            if wanted <= 0:
                break
        position = b
    if ranges and wanted <= 0:
        first, last = ranges[-1]
        batch_last = state.batch_last(last)
        if batch_last is not None and batch_last > last:
            ranges[-1] = (first, min(batch_last, run_last))
    state.scan_hint = hint if hint is not None else max(state.end, state.start)
    return ranges


def _due_runs(state: ShareState, lo: int, hi: int, now_ms: int) -> list[Range]:
    due = [o for o in range(lo, hi) if state.not_before.get(o, 0) <= now_ms]
    return to_ranges(due)


def _count_runs(state: ShareState, ranges: list[Range]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for first, last in ranges:
        a, b = first - state.base, last + 1 - state.base
        counts = state.counts[a:b]
        if counts.count(counts[0]) == len(counts):
            out.append((first, last, counts[0]))
            continue
        offset = first
        for count, group in itertools.groupby(counts):
            size = sum(1 for _ in group)
            out.append((offset, offset + size - 1, count))
            offset += size
    return out


# ---- acknowledge ---------------------------------------------------------------------------


def acknowledge(
    state: ShareState,
    config: ShareGroupConfig,
    member: str,
    acks: Sequence[AckRange],
    now_ms: int,
) -> tuple[list[Op], list[AckResult]]:
    """Apply ``acks`` in offset order (so a key's records are accepted in order); each
    range is done whole or refused whole."""
    ops: list[Op] = []
    results: list[AckResult] = []
    for ack in sorted(acks, key=lambda a: (a.first_offset, a.last_offset)):
        problem = _check(state, member, ack)
        if problem is not None:
            code, message = problem
            results.append(
                AckResult(
                    partition=ack.partition,
                    first_offset=ack.first_offset,
                    last_offset=ack.last_offset,
                    error=code.name,
                    message=message,
                )
            )
            continue
        held = _held(state, ack.first_offset, ack.last_offset)
        if ack.type == "accept":
            _apply(state, ops, OpSettle([(ack.first_offset, ack.last_offset)]))
        elif ack.type == "reject":
            reason = (ack.reason or "rejected")[:REASON_CHARS_MAX]
            _dead_letter(state, ops, held, reason)
        else:
            reason = (ack.reason or "released")[:REASON_CHARS_MAX]
            _fail(state, config, ops, held, now_ms=now_ms, reason=reason, delay_ms=ack.delay_ms)
        results.append(
            AckResult(
                partition=ack.partition, first_offset=ack.first_offset, last_offset=ack.last_offset
            )
        )
    return ops, results


def _held(state: ShareState, first: int, last: int) -> list[int]:
    """The acquired offsets of ``first..last``."""
    a, b = first - state.base, last + 1 - state.base
    window = state.states[a:b]
    if window.count(ACQUIRED) == len(window):
        return list(range(first, last + 1))
    return [first + i for i, s in enumerate(window) if s == ACQUIRED]


def _refuse(message: str) -> tuple[ErrorCode, str]:
    return ErrorCode.INVALID_RECORD_STATE, message


def _check(state: ShareState, member: str, ack: AckRange) -> tuple[ErrorCode, str] | None:
    first, last = ack.first_offset, ack.last_offset
    if first < 0 or last < first or last - first >= ACK_SPAN_MAX:
        return ErrorCode.INVALID_REQUEST, f"bad range {first}..{last}"
    if ack.delay_ms is not None and not 0 <= ack.delay_ms <= 24 * 3600 * 1000:
        return ErrorCode.INVALID_REQUEST, "delay_ms must be in 0..86400000"
    if first < state.start:
        return _refuse(
            f"offsets below {state.start} are settled (accepted, rejected or dead-lettered)"
        )
    if last >= min(state.hi, state.end):
        return _refuse(f"offsets from {min(state.hi, state.end)} were never delivered")
    problem = _holder_problem(state, member, ack)
    if problem is None and state.keyindex is not None and ack.type != "release":
        problem = _key_order_problem(state, first, last)
    return problem


def _holder_problem(state: ShareState, member: str, ack: AckRange) -> tuple[ErrorCode, str] | None:
    first, last = ack.first_offset, ack.last_offset
    a, b = first - state.base, last + 1 - state.base
    window = state.states[a:b]
    owners = state.owners[a:b]
    token = ack.acquisition
    if token is not None:
        if window.count(ACQUIRED) == len(window) and owners.count(token) == len(owners):
            return None
        if not _mixed_ok(window, owners, ack, lambda owner: owner == token):
            return _refuse(
                f"{first}..{last} is not held by lock {token} (lock expired, settled, or "
                "delivered again)"
            )
        return None

    def mine(owner: int) -> bool:
        held = state.acquisitions.get(owner)
        return held is not None and held.member == member

    if not _mixed_ok(window, owners, ack, mine):
        return _refuse(f"{first}..{last} is not held by member {member!r}")
    return None


def _mixed_ok(
    window: bytearray, owners: array[int], ack: AckRange, holds: Callable[[int], bool]
) -> bool:
    """Slow path: every record acquired by the holder; gaps pass; an accept of a record
    this holder already accepted passes (a retried acknowledgement)."""
    seen = False
    for state, owner in zip(window, owners, strict=True):
        if state == ACQUIRED and holds(owner):
            seen = True
        elif state == GAP or (state == ACKED and ack.type == "accept" and holds(owner)):
            continue
        else:
            return False
    return seen or ack.type == "accept"


def _key_order_problem(state: ShareState, first: int, last: int) -> tuple[ErrorCode, str] | None:
    index = state.keyindex
    assert index is not None
    for offset in range(first, last + 1):
        if state.state_of(offset) != ACQUIRED:
            continue
        head = index.head(state.key_of(offset))
        if head is not None and head < first:
            return _refuse(
                f"key order: offset {offset}'s key has an unfinished earlier record at "
                f"{head}; acknowledge that one first"
            )
    return None


# ---- failures, expiry, dead letters --------------------------------------------------------


def backoff_ms(config: ShareGroupConfig, delivery_count: int) -> int:
    if config.retry_backoff_ms <= 0:
        return 0
    exponent = min(max(delivery_count - 1, 0), 40)
    return int(min(config.retry_backoff_max_ms, config.retry_backoff_ms * 2**exponent))


def _fail(
    state: ShareState,
    config: ShareGroupConfig,
    ops: list[Op],
    offsets: list[int],
    *,
    now_ms: int,
    reason: str,
    delay_ms: int | None = None,
) -> None:
    """A failed attempt of each of ``offsets`` (all acquired): dead-letter past the
    attempt limit, else release (after the delay or the backoff)."""
    if not offsets:
        return
    cascade = _cascade(state, offsets)
    dead = [o for o in offsets if state.count_of(o) >= config.max_delivery_attempts]
    retry = [o for o in offsets if state.count_of(o) < config.max_delivery_attempts]
    if dead:
        _dead_letter(state, ops, dead, reason)
    by_time: dict[int, list[int]] = {}
    for offset in retry:
        wait = delay_ms if delay_ms is not None else backoff_ms(config, state.count_of(offset))
        by_time.setdefault(now_ms + wait if wait else 0, []).append(offset)
    for not_before_ms, group in sorted(by_time.items()):
        _apply(state, ops, OpRelease(to_ranges(group), not_before_ms))
    if cascade:
        _apply(state, ops, OpRelease(to_ranges(cascade), 0, uncount=True))


def _cascade(state: ShareState, failed: list[int]) -> list[int]:
    """Key-ordered: the later records of a failed record's key held by the same
    acquisition, which must go back with it (they are the prefix after it)."""
    index = state.keyindex
    if index is None:
        return []
    failed_set = set(failed)
    out: set[int] = set()
    for offset in failed:
        owner = state.owner_of(offset)
        queue = index.queues.get(state.key_of(offset), ())
        for later in queue:
            if later <= offset or later in failed_set:
                continue
            if state.owner_of(later) != owner:
                break
            out.add(later)
    return sorted(out)


def _dead_letter(state: ShareState, ops: list[Op], offsets: list[int], reason: str) -> None:
    if not offsets:
        return
    entries = [DeadLetterEntry(o, state.count_of(o), reason) for o in offsets]
    _apply(state, ops, OpDeadLetter(state.dead_letter_sequence, entries))


def expire(state: ShareState, config: ShareGroupConfig, now_ms: int) -> list[Op]:
    """Locks past their deadline: each of their records fails an attempt."""
    ops: list[Op] = []
    while state.deadlines and state.deadlines[0][0] <= now_ms:
        _, acquisition = heapq.heappop(state.deadlines)
        # The table is a cache of acquisitions that may hold records: dropping an entry
        # changes nothing a replay would see (its records are settled or released here).
        held = state.acquisitions.pop(acquisition, None)
        if held is None:
            continue
        offsets = [
            offset
            for first, last in held.ranges
            for offset in range(max(first, state.start), last + 1)
            if state.owner_of(offset) == acquisition
        ]
        reason = f"lock expired ({config.lock_duration_ms} ms)"
        _fail(state, config, ops, offsets, now_ms=now_ms, reason=reason)
    return ops


def dead_lettered(state: ShareState, sequence: int) -> list[Op]:
    """The dead-letter batch ``sequence`` is written: archive its records."""
    if sequence not in state.dead_letters:
        return []
    ops: list[Op] = []
    _apply(state, ops, OpDeadLettered(sequence))
    return ops


def set_producer(
    state: ShareState, producer_id: int, producer_epoch: int, partition: int
) -> list[Op]:
    ops: list[Op] = []
    _apply(state, ops, OpProducer(producer_id, producer_epoch, partition))
    return ops


def skip_to(state: ShareState, log_start_offset: int) -> list[Op]:
    """Retention removed records the share-partition had not settled: settle them."""
    if log_start_offset <= state.start:
        return []
    ops: list[Op] = []
    _apply(state, ops, OpSkip(log_start_offset))
    return ops


def window_room(state: ShareState, config: ShareGroupConfig) -> int:
    """How many more offsets may be read from the log (the bounded window)."""
    return max(0, state.start + config.window_records_max - state.end)
