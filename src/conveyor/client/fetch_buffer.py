"""The consumer's prefetch buffer and per-partition positions (no I/O, thread-safe).

Fetch tasks on the I/O loop add decoded chunks; ``poll`` on the application's thread (or
loop) takes messages out. Two offsets per partition:

* ``fetch_offset``: the next offset to fetch; moves when a fetch answers.
* ``position``: the next offset ``poll`` returns; moves as messages are taken, and is what
  ``commit`` records (the Kafka convention: the committed offset is the next to read).

Memory is bounded: a fetch first reserves ``fetch_max_bytes`` and is not sent while
buffered plus reserved bytes would pass ``buffer_max_bytes`` (backpressure: a slow
application stops the fetching, whatever the producers do). Bytes are wire bytes; the
decoded messages take about 2-3x that in Python objects.

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

from conveyor.client.types import Message, TopicPartition


class _Chunk:
    __slots__ = ("index", "messages", "next_offset", "size_bytes")

    def __init__(self, messages: list[Message], next_offset: int, size_bytes: int) -> None:
        self.messages = messages
        self.index = 0
        self.next_offset = next_offset  # the position once every message here is taken
        self.size_bytes = size_bytes


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
        messages: list[Message],
        *,
        next_offset: int,
        size_bytes: int,
        reserved_bytes: int,
        high_watermark: int | None,
    ) -> bool:
        """Add a fetch's messages (offsets from the fetch offset up to ``next_offset``);
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
            if not messages and not state.chunks:
                state.position = next_offset  # only skipped offsets (e.g. control batches)
                return True
            state.chunks.append(_Chunk(messages, next_offset, size_bytes))
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
        out: list[Message] = []
        with self._lock:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            ready = self._ready
            skipped = 0  # paused partitions rotated past in this take
            while len(ready) > skipped and len(out) < max_records:
                tp = ready[0]
                if tp in self._paused:
                    ready.rotate(-1)
                    skipped += 1
                    continue
                state = self._partitions[tp]
                chunk = state.chunks[0]
                want = max_records - len(out)
                taken = chunk.messages[chunk.index : chunk.index + want]
                chunk.index += len(taken)
                out += taken
                if taken:
                    state.position = taken[-1].offset + 1
                if chunk.index >= len(chunk.messages):
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

    def _notify_space(self) -> None:  # under lock
        if self._space_wanted and self.on_space is not None:
            self._space_wanted = False
            self.on_space()
