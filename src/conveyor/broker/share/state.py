"""One share-partition's state, and ``apply``: the one way it changes (live and on replay).

Pure: no clock, no I/O. Kafka's controller shape: a decision (``decide.py``) never edits
the state by hand; it builds operations (``protocol.share.Op``), applies them here and
returns them, and the shell persists them in ``__share_state``. A new leader replays the
same operations through the same :meth:`ShareState.apply`, so the live path and the
recovery path are one code path (``tests/unit/broker/share`` replays every decision's
operations onto a copy and compares).

The state is mutated in place: a window of 10,000 records held in immutable tuples would
be copied on every acknowledgement, which is most of the cost at 100,000 records/s.

Layout: offsets ``[base, base + len(states))`` have one byte of state, one byte of delivery
count and the acquisition holding them (0: none) in three arrays indexed by
``offset - base``; slices of them change at C speed (``bytes.translate``, slice
assignment), so a batch of 1,000 records costs a few operations, not 1,000. ``start`` (the
share start offset) is the first offset not settled; ``end`` is where the records read
from the log end (their metadata: which offsets exist, keys, not-before times). Offsets
between ``end`` and the arrays' end were touched by replayed operations before the log
was read again after a leader change; they are deliverable once ``extend`` has read them.

States: ``AVAILABLE`` (deliverable, possibly after ``not_before``), ``ACQUIRED`` (locked by
an acquisition until its deadline), ``ACKED`` (accepted), ``ARCHIVED`` (given up: rejected
or dead-lettered), ``DEAD`` (being written to the dead-letter topic), ``GAP`` (no record
at this offset: compacted away, or a control batch). Settled = ACKED, ARCHIVED, GAP.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import re
from array import array
from dataclasses import dataclass
from typing import Final

from conveyor.broker.share.keyindex import KeyIndex
from conveyor.protocol.errors import ErrorCode, FatalError
from conveyor.protocol.share import (
    DeadLetterEntry,
    Op,
    OpAcquire,
    OpDeadLetter,
    OpDeadLettered,
    OpProducer,
    OpRelease,
    OpSettle,
    OpSkip,
    PendingDeadLetter,
    Range,
    ShareMode,
    StateAcquisition,
    StateDelta,
    StateRun,
    StateSnapshot,
)

AVAILABLE: Final = 0
ACQUIRED: Final = 1
ACKED: Final = 2
ARCHIVED: Final = 3
DEAD: Final = 4
GAP: Final = 5
STATE_NAMES: Final = ("available", "acquired", "acked", "archived", "dead", "gap")
SETTLED: Final = frozenset((ACKED, ARCHIVED, GAP))
_SETTLED_RUN: Final = re.compile(rb"[\x02\x03\x05]*")
AVAILABLE_RUN: Final = re.compile(rb"\x00+")
_COUNT_UP: Final = bytes(min(i + 1, 255) for i in range(256))
_COUNT_DOWN: Final = bytes(max(i - 1, 0) for i in range(256))


def _table(mapping: dict[int, int]) -> bytes:
    return bytes(mapping.get(i, i) for i in range(256))


_ACCEPT: Final = _table({AVAILABLE: ACKED, ACQUIRED: ACKED})
_ARCHIVE: Final = _table({AVAILABLE: ARCHIVED, ACQUIRED: ARCHIVED, DEAD: ARCHIVED})
_RELEASE: Final = _table({ACQUIRED: AVAILABLE})
_COMPACT_MIN: Final = 4096  # drop the settled head of the arrays past this many offsets


@dataclass(slots=True)
class Acquisition:
    acquisition: int
    member: str
    deadline_ms: int
    ranges: list[Range]


@dataclass(frozen=True, slots=True)
class Span:
    """What the log holds at ``first..last`` (from ``window.scan``): the offsets with a
    record (None: all of them), their key ids (key-ordered mode only, aligned with the
    offsets) and not-before times from their headers."""

    first: int
    last: int
    offsets: list[int] | None = None
    keys: list[int] | None = None
    not_before: tuple[tuple[int, int], ...] = ()


class ShareState:
    """See the module docstring. ``seq`` is the last persisted delta's number."""

    def __init__(self, mode: ShareMode, start_offset: int) -> None:
        self.mode: ShareMode = mode
        self.start = start_offset
        self.base = start_offset
        self.end = start_offset
        self.states = bytearray()
        self.counts = bytearray()
        self.owners = array("q")
        self.keys: list[int] = []  # key-ordered: key id per offset (valid below end)
        self.keyindex: KeyIndex | None = KeyIndex() if mode == "key_ordered" else None
        self.not_before: dict[int, int] = {}
        self.wake_heap: list[int] = []  # not-before times still ahead (timers)
        self.acquisitions: dict[int, Acquisition] = {}
        self.deadlines: list[tuple[int, int]] = []  # (deadline_ms, acquisition)
        self.next_acquisition = 1
        self.seq = 0
        self.dead_letters: dict[int, list[DeadLetterEntry]] = {}
        self.dead_letter_sequence = 0
        self.producer: OpProducer | None = None
        self.scan_hint = start_offset  # unordered: nothing available below this
        self.batch_lasts: list[int] = []  # last offsets of the log's batches in the window

    # ---- geometry ------------------------------------------------------------------------

    @property
    def hi(self) -> int:
        """One past the last offset the arrays hold."""
        return self.base + len(self.states)

    def state_of(self, offset: int) -> int:
        if offset < self.start:
            return ACKED  # settled, whichever way
        if offset >= self.hi:
            return AVAILABLE
        return self.states[offset - self.base]

    def owner_of(self, offset: int) -> int:
        if not self.start <= offset < self.hi:
            return 0
        index = offset - self.base
        return self.owners[index] if self.states[index] == ACQUIRED else 0

    def count_of(self, offset: int) -> int:
        if not self.start <= offset < self.hi:
            return 0
        return self.counts[offset - self.base]

    def key_of(self, offset: int) -> int:
        return self.keys[offset - self.base]

    def _grow(self, to_offset: int) -> None:
        more = to_offset - self.hi
        if more > 0:
            self.states.extend(bytes(more))
            self.counts.extend(bytes(more))
            self.owners.extend(array("q", bytes(8 * more)))
            if self.keyindex is not None:
                self.keys.extend(itertools.repeat(0, more))

    def _slice(self, first: int, last: int) -> tuple[int, int]:
        """Array indexes of ``first..last`` clipped to the unsettled part (grown to it)."""
        self._grow(last + 1)
        return max(first, self.start) - self.base, last + 1 - self.base

    # ---- apply ---------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        match op:
            case OpAcquire():
                self._acquire(op)
            case OpSettle(ranges=ranges, archived=archived):
                for first, last in ranges:
                    self._settle(first, last, _ARCHIVE if archived else _ACCEPT)
                self._advance()
            case OpRelease():
                self._release(op)
            case OpDeadLetter(sequence=sequence, entries=entries):
                self._dead_letter(sequence, entries)
            case OpDeadLettered(sequence=sequence):
                for entry in self.dead_letters.pop(sequence, []):
                    self._settle(entry.offset, entry.offset, _ARCHIVE)
                self._advance()
            case OpProducer():
                self.producer = op
            case OpSkip(offset=offset):
                self._skip(offset)

    def _acquire(self, op: OpAcquire) -> None:
        acquisition = op.acquisition
        for first, last in op.ranges:
            a, b = self._slice(first, last)
            if a >= b:
                continue
            n = b - a
            self.states[a:b] = bytes((ACQUIRED,)) * n
            self.counts[a:b] = self.counts[a:b].translate(_COUNT_UP)
            self.owners[a:b] = array("q", (acquisition,)) * n
        self.acquisitions[acquisition] = Acquisition(
            acquisition, op.member, op.deadline_ms, list(op.ranges)
        )
        heapq.heappush(self.deadlines, (op.deadline_ms, acquisition))
        self.next_acquisition = max(self.next_acquisition, acquisition + 1)

    def _settle(self, first: int, last: int, table: bytes) -> None:
        a, b = self._slice(first, last)
        if a >= b:
            return
        index = self.keyindex
        if index is not None:
            for i in range(a, b):
                if self.states[i] in (AVAILABLE, ACQUIRED) and self.base + i < self.end:
                    index.settle(self.base + i, self.keys[i])
        self.states[a:b] = self.states[a:b].translate(table)

    def _release(self, op: OpRelease) -> None:
        for first, last in op.ranges:
            a, b = self._slice(first, last)
            if a >= b:
                continue
            self.states[a:b] = self.states[a:b].translate(_RELEASE)
            if op.uncount:
                self.counts[a:b] = self.counts[a:b].translate(_COUNT_DOWN)
            if op.not_before_ms:
                for offset in range(self.base + a, self.base + b):
                    self.not_before[offset] = op.not_before_ms
                heapq.heappush(self.wake_heap, op.not_before_ms)
            self.scan_hint = min(self.scan_hint, self.base + a)
            index = self.keyindex
            if index is not None:
                for i in range(a, b):
                    if self.base + i < self.end:
                        index.wake(self.base + i, self.keys[i])

    def _dead_letter(self, sequence: int, entries: list[DeadLetterEntry]) -> None:
        index = self.keyindex
        for entry in entries:
            a, b = self._slice(entry.offset, entry.offset)
            if a >= b:
                continue
            # Given up: it no longer holds its key's order back (docs/queues.md), though
            # the start offset waits until the dead-letter write is done.
            if index is not None and entry.offset < self.end:
                index.settle(entry.offset, self.keys[a])
            self.states[a] = DEAD
        self.dead_letters[sequence] = list(entries)
        self.dead_letter_sequence = max(self.dead_letter_sequence, sequence + len(entries))

    def _skip(self, offset: int) -> None:
        if offset <= self.start:
            return
        if offset >= self.hi:
            self._reset_arrays(offset)
        else:
            a = self.start - self.base
            self.states[a : offset - self.base] = bytes((GAP,)) * (offset - self.start)
        if self.keyindex is not None:
            self.keyindex.drop_below(offset)
        # Pending dead letters keep their removed records (written with a null value,
        # deadletter.py): a batch must still span the sequence numbers it was given, or
        # the dead-letter topic refuses the next one for good (OUT_OF_ORDER_SEQUENCE).
        self.end = max(self.end, offset)
        self._advance()

    def _reset_arrays(self, offset: int) -> None:
        self.states = bytearray()
        self.counts = bytearray()
        self.owners = array("q")
        self.keys = []
        self.base = self.start = offset
        self.scan_hint = max(self.scan_hint, offset)

    def _advance(self) -> None:
        """Move ``start`` past the settled prefix; drop the arrays' settled head."""
        match = _SETTLED_RUN.match(self.states, self.start - self.base)
        assert match is not None  # a '*' pattern always matches
        self.start = self.base + match.end()
        self.end = max(self.end, self.start)
        self.scan_hint = max(self.scan_hint, self.start)
        drop = self.start - self.base
        if drop >= _COMPACT_MIN and 2 * drop >= len(self.states):
            del self.states[:drop]
            del self.counts[:drop]
            del self.owners[:drop]
            if self.keyindex is not None:
                del self.keys[:drop]
            self.base = self.start
            del self.batch_lasts[: bisect.bisect_left(self.batch_lasts, self.start)]
            if self.not_before:
                self.not_before = {o: t for o, t in self.not_before.items() if o >= self.start}

    # ---- the log's records ---------------------------------------------------------------

    def extend(self, span: Span) -> None:
        """Records read from the log at ``span.first..span.last`` (in order, from ``end``)."""
        if span.last < self.end:
            return
        first = max(span.first, self.end)
        self._grow(span.last + 1)
        if first > self.end:  # nothing in the log there (a removed control batch)
            self._mark_gaps(self.end, first, ())
        offsets = span.offsets
        if offsets is not None:
            self._mark_gaps(first, span.last + 1, offsets)
        for offset, not_before_ms in span.not_before:
            if offset >= first and not_before_ms > self.not_before.get(offset, 0):
                self.not_before[offset] = not_before_ms
                heapq.heappush(self.wake_heap, not_before_ms)
        index = self.keyindex
        if index is not None and span.keys is not None:
            present = offsets if offsets is not None else range(span.first, span.last + 1)
            for offset, key in zip(present, span.keys, strict=True):
                if offset < first or offset < self.start:
                    continue
                i = offset - self.base
                self.keys[i] = key
                if self.states[i] in (AVAILABLE, ACQUIRED):
                    index.add(offset, key)
        if not self.batch_lasts or span.last > self.batch_lasts[-1]:
            self.batch_lasts.append(span.last)
        self.end = span.last + 1
        self._advance()

    def batch_last(self, offset: int) -> int | None:
        """The last offset of the log batch holding ``offset`` (None: not known)."""
        i = bisect.bisect_left(self.batch_lasts, offset)
        return self.batch_lasts[i] if i < len(self.batch_lasts) else None

    def _mark_gaps(self, lo: int, hi: int, present: list[int] | tuple[()]) -> None:
        have = set(present)
        for offset in range(max(lo, self.start), hi):
            i = offset - self.base
            if offset not in have and self.states[i] == AVAILABLE:
                self.states[i] = GAP

    # ---- snapshots -----------------------------------------------------------------------

    def snapshot(self, epoch: int) -> StateSnapshot:
        """The whole state as one record (its ``seq``: the last delta it includes)."""
        runs: list[StateRun] = []
        a = self.start - self.base
        offset = self.start
        cells = zip(self.states[a:], self.counts[a:], self.owners[a:], strict=True)
        # an owner matters while a record is held, and once accepted (a retried accept)
        canonical = ((s, c, o if s in (ACQUIRED, ACKED) else 0) for s, c, o in cells)
        for (state, count, owner), group in itertools.groupby(canonical):
            size = sum(1 for _ in group)
            if state in (ACQUIRED, ACKED, ARCHIVED, DEAD) or count:
                runs.append(StateRun(offset, offset + size - 1, state, count, owner))
            offset += size
        live = {run.acquisition for run in runs if run.state == ACQUIRED}
        return StateSnapshot(
            seq=self.seq,
            epoch=epoch,
            start_offset=self.start,
            next_acquisition=self.next_acquisition,
            runs=runs,
            acquisitions=[
                StateAcquisition(a.acquisition, a.member, a.deadline_ms)
                for a in self.acquisitions.values()
                if a.acquisition in live
            ],
            not_before=sorted((o, t) for o, t in self.not_before.items() if o >= self.start),
            dead_letters=[PendingDeadLetter(s, e) for s, e in sorted(self.dead_letters.items())],
            producer=self.producer,
            dead_letter_sequence=self.dead_letter_sequence,
        )

    @classmethod
    def from_snapshot(cls, mode: ShareMode, snapshot: StateSnapshot) -> ShareState:
        state = cls(mode, snapshot.start_offset)
        state.seq = snapshot.seq
        state.next_acquisition = snapshot.next_acquisition
        for run in snapshot.runs:
            a, b = state._slice(run.first, run.last)
            n = b - a
            state.states[a:b] = bytes((run.state,)) * n
            state.counts[a:b] = bytes((run.delivery_count,)) * n
            state.owners[a:b] = array("q", (run.acquisition,)) * n
        ranges: dict[int, list[Range]] = {}
        for run in snapshot.runs:
            if run.state == ACQUIRED:
                ranges.setdefault(run.acquisition, []).append((run.first, run.last))
        for held in snapshot.acquisitions:
            state.acquisitions[held.acquisition] = Acquisition(
                held.acquisition, held.member, held.deadline_ms, ranges.get(held.acquisition, [])
            )
            heapq.heappush(state.deadlines, (held.deadline_ms, held.acquisition))
        for offset, not_before_ms in snapshot.not_before:
            state.not_before[offset] = not_before_ms
            heapq.heappush(state.wake_heap, not_before_ms)
        state.scan_hint = state.start
        for pending in snapshot.dead_letters:
            state._dead_letter(pending.sequence, pending.entries)
        state.dead_letter_sequence = snapshot.dead_letter_sequence
        state.producer = snapshot.producer
        state._advance()
        return state

    # ---- views ---------------------------------------------------------------------------

    def counts_by_state(self) -> dict[str, int]:
        """Records per state from ``start`` to ``end`` (the window)."""
        window = self.states[self.start - self.base : self.end - self.base]
        return {name: window.count(code) for code, name in enumerate(STATE_NAMES)}

    def next_timer_ms(self) -> int | None:
        """The earliest time something changes by itself: a lock deadline, a not-before."""
        while self.deadlines and self.deadlines[0][1] not in self.acquisitions:
            heapq.heappop(self.deadlines)
        times = [self.deadlines[0][0]] if self.deadlines else []
        if self.wake_heap:
            times.append(self.wake_heap[0])
        if self.keyindex is not None and (wake := self.keyindex.next_wake_ms()) is not None:
            times.append(wake)
        return min(times) if times else None

    def pop_wakes(self, now_ms: int) -> bool:
        """Whether a not-before time has passed since the last call (records became
        deliverable: receivers waiting should look again)."""
        woke = False
        while self.wake_heap and self.wake_heap[0] <= now_ms:
            heapq.heappop(self.wake_heap)
            woke = True
        index = self.keyindex
        if index is not None and (wake := index.next_wake_ms()) is not None and wake <= now_ms:
            woke = True
        return woke

    def live_acquisitions(self) -> set[int]:
        """Acquisitions holding at least one record (a scan of the window: for views)."""
        a = self.start - self.base
        held = itertools.compress(self.owners[a:], (s == ACQUIRED for s in self.states[a:]))
        return set(held)

    def oldest_acquired_deadline_ms(self) -> int | None:
        live = self.live_acquisitions()
        deadlines = [a.deadline_ms for a in self.acquisitions.values() if a.acquisition in live]
        return min(deadlines) if deadlines else None


def invariant_problems(state: ShareState) -> list[str]:
    """Rules no sequence of operations may break (tests run it after every decision)."""
    problems: list[str] = []
    if not state.base <= state.start <= state.end:
        problems.append(f"base {state.base} <= start {state.start} <= end {state.end} broken")
    if state.start < state.hi and state.states[state.start - state.base] in SETTLED:
        problems.append(f"start {state.start} is settled: it should have advanced")
    a = state.start - state.base
    dead = {e.offset for entries in state.dead_letters.values() for e in entries}
    for i in range(a, len(state.states)):
        offset = state.base + i
        code = state.states[i]
        if code == ACQUIRED:
            if state.owners[i] not in state.acquisitions:
                problems.append(f"offset {offset} held by unknown acquisition {state.owners[i]}")
            if state.counts[i] < 1:
                problems.append(f"offset {offset} acquired with delivery count 0")
        if code == DEAD and offset not in dead:
            problems.append(f"offset {offset} is dead-lettering in no batch")
    problems += _numbering_problems(state)
    index = state.keyindex
    if index is not None:
        for key in index.queues:
            if not index.in_flight_prefix_ok(key, state.owner_of):
                problems.append(f"key {key}: records in flight are not one acquisition's prefix")
    return problems[:10]


def _numbering_problems(state: ShareState) -> list[str]:
    """Pending dead-letter batches (written oldest first) are numbered one sequence number
    a record, each where the one before ends, up to ``dead_letter_sequence``: a batch
    that lost a record would leave a gap the dead-letter topic never accepts."""
    problems = []
    sequence = None
    for first, entries in sorted(state.dead_letters.items()):
        if sequence is not None and first != sequence:
            problems.append(f"dead-letter batch {first} follows sequence {sequence - 1}")
        sequence = first + len(entries)
    if sequence is not None and sequence != state.dead_letter_sequence:
        problems.append(f"dead letters end at {sequence}, numbered to {state.dead_letter_sequence}")
    return problems


def replay(mode: ShareMode, records: list[StateSnapshot | StateDelta]) -> ShareState | None:
    """The state from the latest snapshot and the deltas after it (a store read's answer,
    in log order); None when there is no snapshot (a new share-partition). A delta out of
    sequence means lost records: the store is damaged, so this fails loudly."""
    last = max((i for i, r in enumerate(records) if isinstance(r, StateSnapshot)), default=None)
    if last is None:
        if records:
            raise FatalError("share state has deltas but no snapshot", code=ErrorCode.CORRUPT_DATA)
        return None
    snapshot = records[last]
    assert isinstance(snapshot, StateSnapshot)
    state = ShareState.from_snapshot(mode, snapshot)
    for record in records[last + 1 :]:
        if not isinstance(record, StateDelta) or record.seq <= state.seq:
            continue  # written with the snapshot, which includes it
        if record.seq != state.seq + 1:
            raise FatalError(
                f"share state delta {record.seq} follows {state.seq}: records are missing",
                code=ErrorCode.CORRUPT_DATA,
            )
        for op in record.ops:
            state.apply(op)
        state.seq = record.seq
    return state
