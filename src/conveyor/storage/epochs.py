"""The leader-epoch cache of a partition: where each leader epoch starts in the log.

Kafka's ``LeaderEpochFileCache`` (KIP-101): a follower of a new leader asks "where does my
latest epoch end in your log?" and truncates whatever it has beyond that point, so replicas
never diverge even when a leader dies with writes its followers had not all received.

Kept in ``leader-epoch-checkpoint`` next to the segments, one ``epoch start_offset`` line per
epoch, written atomically (temp file, fsync, rename, directory fsync) *before* the first
batch of a new epoch is appended. A crash between the checkpoint and the append leaves an
entry at or beyond the log end; :meth:`EpochCache.load` drops such entries, so the cache
never claims data the log does not hold.

Worked example: entries [(0, 0), (2, 120), (5, 300)], log end 420.
``end_offset_for(2)`` is (2, 300): epoch 2 ran from 120 up to where epoch 5 started.
``end_offset_for(3)`` is (2, 300) too: epoch 3 never wrote here, the largest epoch <= 3 is 2.
``end_offset_for(5)`` is (5, 420): the latest epoch ends at the log end.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Final, NamedTuple

from conveyor.storage.segment import write_error

CHECKPOINT_FILE: Final = "leader-epoch-checkpoint"
UNDEFINED: Final = -1


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class EpochCache:
    """Not thread-safe by itself: the owning log calls it under its lock."""

    def __init__(self, directory: Path, entries: list[EpochEntry]) -> None:
        self.path = directory / CHECKPOINT_FILE
        self.entries = entries

    @classmethod
    def load(cls, directory: Path, log_end_offset: int) -> EpochCache:
        """Read the checkpoint; drop entries the log does not reach (a crash after the
        checkpoint was written, before the batch was) and unreadable lines."""
        path = directory / CHECKPOINT_FILE
        entries: list[EpochEntry] = []
        if path.exists():
            for line in path.read_text(encoding="ascii", errors="replace").splitlines():
                parts = line.split()
                if len(parts) != 2 or not all(p.isdigit() for p in parts):
                    continue
                entry = EpochEntry(int(parts[0]), int(parts[1]))
                last = entries[-1] if entries else None
                if last and (entry.epoch <= last.epoch or entry.start_offset < last.start_offset):
                    continue  # never written by us: keep the cache monotonic
                entries.append(entry)
        cache = cls(directory, entries)
        if cache.truncate_from_end(log_end_offset):
            cache.persist()
        return cache

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1].epoch if self.entries else UNDEFINED

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset`` (before appending its first
        batch); True when that is new and was persisted. Older epochs are ignored."""
        if epoch < 0 or epoch <= self.latest_epoch:
            return False
        if self.entries and start_offset < self.entries[-1].start_offset:
            return False
        entries = list(self.entries)
        if entries and start_offset == entries[-1].start_offset:
            # The previous epoch wrote nothing: the new one replaces it.
            entries[-1] = EpochEntry(epoch, start_offset)
        else:
            entries.append(EpochEntry(epoch, start_offset))
        previous, self.entries = self.entries, entries
        try:  # a failure changes nothing: the next append assigns the epoch again
            self.persist()
        except OSError as exc:  # as an append's: a full disk is DISK_FULL, not a crash
            self.entries = previous
            raise write_error(exc, f"record epoch {epoch} in {self.path}") from exc
        return True

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(largest epoch <= ``epoch``, the offset where it ends here); (UNDEFINED,
        UNDEFINED) when this log knows no epoch that old."""
        if not self.entries or epoch < self.entries[0].epoch:
            return UNDEFINED, UNDEFINED
        i = bisect.bisect_right([e.epoch for e in self.entries], epoch) - 1
        found = self.entries[i]
        if i == len(self.entries) - 1:
            return found.epoch, log_end_offset
        return found.epoch, self.entries[i + 1].start_offset

    def truncate_from_end(self, offset: int) -> bool:
        """Drop the epochs that start at or beyond ``offset`` (the log was cut there)."""
        kept = [e for e in self.entries if e.start_offset < offset]
        if len(kept) == len(self.entries):
            return False
        self.entries = kept
        return True

    def truncate_from_start(self, offset: int) -> bool:
        """The log now starts at ``offset``: the epochs that start at or below it collapse
        into the latest of them, moved to start there (Kafka's ``truncateFromStart``), so
        no answer points a follower below the log start. True when anything changed.

        Example: [(0, 0), (2, 120), (5, 300)] from 150 is [(2, 150), (5, 300)]."""
        below = [e for e in self.entries if e.start_offset <= offset]
        if not below or (len(below) == 1 and below[0].start_offset == offset):
            return False
        kept = [e for e in self.entries if e.start_offset > offset]
        self.entries = [EpochEntry(below[-1].epoch, offset), *kept]
        return True

    def clear(self) -> None:
        self.entries = []
        self.persist()

    def persist(self) -> None:
        temp = self.path.with_suffix(".tmp")
        text = "".join(f"{e.epoch} {e.start_offset}\n" for e in self.entries)
        with temp.open("w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        temp.replace(self.path)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
