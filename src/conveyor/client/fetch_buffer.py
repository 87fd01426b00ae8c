"""The consumer's prefetch buffer and per-partition positions (no I/O, thread-safe).

Fetch tasks on the I/O loop add decoded chunks, each a fetch's records as columns
(``protocol/record_columns.py``); on the application's thread (or loop) ``poll`` takes
records out as ``Message`` tuples made from the columns (``take``), ``poll_batch`` as
slices of them (``take_batch``): the same rows and the same positions either way. Two
offsets per partition:

* ``fetch_offset``: the next offset to fetch; moves when a fetch answers.
* ``position``: the next offset ``poll`` returns; moves as messages are taken, and is what
  ``commit`` records (the Kafka convention: the committed offset is the next to read).

Memory is bounded: a fetch first reserves ``fetch_max_bytes`` and is not sent while
buffered plus reserved bytes would pass ``buffer_max_bytes`` (backpressure: a slow
application stops the fetching, whatever the producers do). Bytes are wire bytes; the
decoded columns take about 2-3x that in Python objects.

``seek`` (and an offset reset) bumps the partition's ``generation`` and drops its chunks;
a fetch that was in flight comes back with the old generation and is dropped, so a
message is never returned from before a seek.

A *paused* partition (``pause``) keeps what it has buffered but ``take`` skips it and the
fetcher sends no new fetch for it until ``resume`` (Kafka's pause/resume).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from conveyor.client.types import (
    Message,
    PartitionRun,
    PolledBatch,
    TopicPartition,
    messages_from_columns,
)
from conveyor.protocol.record_columns import RecordColumns


class _Chunk:
    """One fetch's records as columns; ``index`` rows of them are taken."""

    __slots__ = ("columns", "index", "next_offset", "size_bytes")

    def __init__(self, columns: RecordColumns, next_offset: int, size_bytes: int) -> None:
        self.columns = columns
        self.index = 0
        self.next_offset = next_offset  # the position once every record here is taken
        self.size_bytes = size_bytes


Taken = list[tuple[TopicPartition, RecordColumns, int, int]]
"""What a take removed: per slice of a chunk, its partition, columns and rows."""


def messages_of(taken: Taken) -> list[Message]:
    """The taken rows as Message tuples, built in C loops (client/types.py)."""
    out: list[Message] = []
    for tp, columns, start, stop in taken:
        rows = slice(start, stop)
        out += messages_from_columns(
            tp.topic,
            tp.partition,
            columns.offsets[rows],
            columns.keys[rows],
            columns.values[rows],
            columns.headers[rows],
            columns.timestamps_ms[rows],
        )
    return out


def batch_of(taken: Taken, *, headers: bool) -> PolledBatch:
    """The taken rows as one :class:`PolledBatch`: list slices, no object per record."""
    batch = PolledBatch()
    if headers:
        batch.headers = []
    for tp, columns, start, stop in taken:
        rows = slice(start, stop)
        begin = len(batch.offsets)
        batch.offsets += columns.offsets[rows]
        batch.keys += columns.keys[rows]
        batch.values += columns.values[rows]
        batch.timestamps_ms += columns.timestamps_ms[rows]
        if batch.headers is not None:
            batch.headers += columns.headers[rows]
        batch.runs.append(PartitionRun(tp.topic, tp.partition, begin, len(batch.offsets)))
    return batch


class _PartitionState:
    __slots__ = (
        "chunks",
        "committed",
        "fetch_offset",
        "fetched",
        "generation",
        "high_watermark",
        "position",
    )

    def __init__(self) -> None:
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.committed: int | None = None  # the last position committed (or read at start)
        self.generation = 0
        self.chunks: deque[_Chunk] = deque()
        self.high_watermark: int | None = None
        self.fetched = False  # a fetch has answered since the position was set


class FetchBuffer:
    """See the module docstring. ``on_data``/``on_space`` are called under the lock."""

    def __init__(self, *, buffer_max_bytes: int, fetch_max_bytes: int) -> None:
        if buffer_max_bytes < fetch_max_bytes:
            raise ValueError("buffer_max_bytes must be at least fetch_max_bytes")
        self._lock = threading.Lock()
        self._data = threading.Condition(self._lock)
        self._buffer_max_bytes = buffer_max_bytes
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._ready: deque[TopicPartition] = deque()  # partitions with chunks, in turn
        self._buffered_bytes = 0
        self._reserved_bytes = 0
        self._space_wanted = False
        self._error: Exception | None = None
        self._paused: set[TopicPartition] = set()
        self.on_data: Callable[[], None] | None = None
        self.on_space: Callable[[], None] | None = None

    # --- assignment and positions ----------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> list[TopicPartition]:
        """Make the assignment exactly ``partitions``; returns the newly added ones."""
        wanted = set(partitions)
        with self._lock:
            for tp in [tp for tp in self._partitions if tp not in wanted]:
                self._drop_chunks(self._partitions.pop(tp))
                if tp in self._ready:
                    self._ready.remove(tp)
            added = [tp for tp in wanted if tp not in self._partitions]
            for tp in added:
                self._partitions[tp] = _PartitionState()
        return sorted(added)

    def assignment(self) -> list[TopicPartition]:
        with self._lock:
            return sorted(self._partitions)

    def seek(self, tp: TopicPartition, offset: int, *, committed: int | None = None) -> None:
        """Read ``tp`` from ``offset`` next (dropping what was prefetched)."""
        with self._lock:
            state = self._partitions.get(tp)
            if state is None:
                raise KeyError(f"{tp} is not assigned")
            self._drop_chunks(state)
            if tp in self._ready:
                self._ready.remove(tp)
            state.position = state.fetch_offset = offset
            state.generation += 1
            state.fetched = False
            if committed is not None:
                state.committed = committed

    def seek_if_unset(self, tp: TopicPartition, offset: int, committed: int | None) -> bool:
        """Start ``tp`` at ``offset`` unless the application sought it meanwhile (in an
        ``on_assign`` callback); False when it had."""
        with self._lock:
            state = self._partitions.get(tp)
            if state is None or state.position is not None:
                return False
        self.seek(tp, offset, committed=committed)
        return True

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        with self._lock:
            self._paused.update(partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        with self._lock:
            self._paused.difference_update(partitions)
            self._data.notify_all()
            if self.on_data is not None and self._ready:
                self.on_data()

    def paused(self) -> list[TopicPartition]:
        with self._lock:
            return sorted(self._paused & set(self._partitions))

    def is_paused(self, tp: TopicPartition) -> bool:
        return tp in self._paused

    def position(self, tp: TopicPartition) -> int | None:
        with self._lock:
            state = self._partitions.get(tp)
            return None if state is None else state.position

    def _drop_chunks(self, state: _PartitionState) -> None:
        for chunk in state.chunks:
            self._buffered_bytes -= chunk.size_bytes
        state.chunks.clear()
        self._notify_space()

    # --- the fetcher's side ----------------------------------------------------------------

    def fetch_target(self, tp: TopicPartition) -> tuple[int, int] | None:
        """``(fetch_offset, generation)`` for the next fetch of ``tp``; None if ``tp`` is not
        assigned or has no position yet."""
        with self._lock:
            state = self._partitions.get(tp)
            if state is None or state.fetch_offset is None:
                return None
            return state.fetch_offset, state.generation

    def try_reserve(self, size_bytes: int) -> bool:
        """Reserve room for a fetch of up to ``size_bytes``; False (and ``on_space`` later)
        when the buffer is too full."""
        with self._lock:
            if self._buffered_bytes + self._reserved_bytes + size_bytes > self._buffer_max_bytes:
                self._space_wanted = True
                return False
            self._reserved_bytes += size_bytes
            return True

    def release(self, size_bytes: int) -> None:
        """Give back a reservation whose fetch failed."""
        with self._lock:
            self._reserved_bytes -= size_bytes
            self._notify_space()

    def add(
        self,
        tp: TopicPartition,
        generation: int,
        columns: RecordColumns,
        *,
        next_offset: int,
        size_bytes: int,
        reserved_bytes: int,
        high_watermark: int | None,
    ) -> bool:
        """Add a fetch's records (offsets from the fetch offset up to ``next_offset``);
        False when dropped as stale (seek, reset or unassignment since it was sent)."""
        with self._lock:
            self._reserved_bytes -= reserved_bytes
            state = self._partitions.get(tp)
            if state is None or state.generation != generation:
                self._notify_space()
                return False
            state.fetched = True
            if high_watermark is not None:
                state.high_watermark = high_watermark
            if state.fetch_offset is not None and next_offset <= state.fetch_offset:
                self._notify_space()
                return True  # nothing new: a long poll that timed out
            state.fetch_offset = next_offset
            if not columns and not state.chunks:
                state.position = next_offset  # only skipped offsets (e.g. control batches)
                return True
            state.chunks.append(_Chunk(columns, next_offset, size_bytes))
            self._buffered_bytes += size_bytes
            if len(state.chunks) == 1:
                self._ready.append(tp)
            self._data.notify_all()
            if self.on_data is not None:
                self.on_data()
            return True

    def fail(self, error: Exception) -> None:
        """Hand ``error`` to the next ``take`` (a fetch failed in a way retrying won't fix)."""
        with self._lock:
            self._error = error
            self._data.notify_all()
            if self.on_data is not None:
                self.on_data()

    def update_high_watermark(self, tp: TopicPartition, high_watermark: int) -> None:
        with self._lock:
            state = self._partitions.get(tp)
            if state is not None:
                state.high_watermark = high_watermark

    # --- the application's side ------------------------------------------------------------

    def take(self, max_records: int) -> list[Message]:
        """Up to ``max_records`` messages, whole chunks of one partition at a time, the
        partitions taking turns; advances the partitions' positions."""
        return messages_of(self.take_rows(max_records))

    def take_batch(self, max_records: int, *, headers: bool = False) -> PolledBatch:
        """:meth:`take` as columns (``poll_batch``)."""
        return batch_of(self.take_rows(max_records), headers=headers)

    def take_rows(self, max_records: int) -> Taken:
        """What :meth:`take` takes, as slices of the chunks' columns."""
        out: Taken = []
        taken_count = 0
        with self._lock:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            ready = self._ready
            skipped = 0  # paused partitions rotated past in this take
            while len(ready) > skipped and taken_count < max_records:
                tp = ready[0]
                if tp in self._paused:
                    ready.rotate(-1)
                    skipped += 1
                    continue
                state = self._partitions[tp]
                chunk = state.chunks[0]
                columns = chunk.columns
                start = chunk.index
                stop = min(len(columns), start + max_records - taken_count)
                if stop > start:
                    out.append((tp, columns, start, stop))
                    taken_count += stop - start
                    chunk.index = stop
                    state.position = columns.offsets[stop - 1] + 1
                if chunk.index >= len(columns):
                    state.chunks.popleft()
                    state.position = chunk.next_offset
                    self._buffered_bytes -= chunk.size_bytes
                    self._notify_space()
                    ready.popleft()
                    if state.chunks:
                        ready.append(tp)  # its next chunk waits for the others' turn
                else:
                    ready.rotate(-1)
        return out

    def wait_for_data(self, timeout_s: float) -> bool:
        """Block until a chunk or an error is there (sync consumers only)."""
        with self._lock:
            if self._takeable() or self._error is not None:
                return True
            self._data.wait(timeout_s)
            return self._takeable() or self._error is not None

    def has_data(self) -> bool:
        with self._lock:
            return self._takeable() or self._error is not None

    def _takeable(self) -> bool:  # under lock
        return any(tp not in self._paused for tp in self._ready)

    def uncommitted(self) -> dict[TopicPartition, int]:
        """Positions that moved since they were last committed."""
        with self._lock:
            return {
                tp: state.position
                for tp, state in self._partitions.items()
                if state.position is not None and state.position != state.committed
            }

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        with self._lock:
            for tp, offset in offsets.items():
                state = self._partitions.get(tp)
                if state is not None:
                    state.committed = offset

    def caught_up(self) -> bool:
        """Whether, as of the last fetch answers, nothing is waiting: every partition has
        been fetched at its position, nothing is buffered, and no partition's position is
        below its high watermark."""
        with self._lock:
            if self._takeable():
                return False
            for tp, state in self._partitions.items():
                if tp in self._paused:
                    continue
                if state.position is None or not state.fetched:
                    return False
                if state.high_watermark is not None and state.position < state.high_watermark:
                    return False
            return True

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    @property
    def buffer_max_bytes(self) -> int:
        return self._buffer_max_bytes

    def _notify_space(self) -> None:  # under lock
        if self._space_wanted and self.on_space is not None:
            self._space_wanted = False
            self.on_space()
