"""An in-memory partition log with the durability contract of the real one.

The simulation needs thousands of logs per second and full control over when an fsync
completes and what a crash keeps, so it does not use :class:`PartitionLog` on disk; this
log keeps the same contract, checked by the same tests (``tests/unit/storage/
test_log_contract.py`` runs every case against both):

* ``append`` validates every batch (header, CRC) before writing anything, stamps offsets
  and the leader epoch exactly as the real log does (the stored bytes are identical);
* ``append_replicated`` takes a leader's batches byte for byte, contiguous from the log end;
* ``read`` returns whole batches from the one holding the offset, at least one, only those
  ending below ``upper_offset``; out of range raises OFFSET_OUT_OF_RANGE;
* ``truncate_to`` removes every batch holding an offset >= the cut, ``reset_to`` empties
  the log at a new start, ``advance_start`` deletes the records below an offset (the start
  may fall inside a batch, kept whole; it is durable at once, as the real checkpoint); the
  leader-epoch cache follows (the real ``EpochCache`` rules);
* durability: ``durable_offset`` is what was flushed (policy ``always``); ``flush`` makes
  everything written so far durable; ``crash`` loses what was not flushed, keeping at
  most a random prefix of it (the OS may have written some of it back).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from pathlib import Path

from conveyor.protocol.batch import BatchHeader, parse_header, stamp_prefix, validate_batches
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, OffsetOutOfRangeError
from conveyor.storage.epochs import EpochCache, EpochEntry
from conveyor.storage.segment import STORED_BATCH_BYTES_HARD_MAX

BATCH_BYTES_MAX = 1024 * 1024
_PREFIX_BYTES = 16


class _Epochs(EpochCache):
    """The real epoch cache's rules, without its file."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"), [])

    def persist(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Stored:
    base_offset: int
    last_offset: int
    epoch: int
    data: bytes


class MemoryLog:
    def __init__(self, start_offset: int = 0) -> None:
        self._batches: list[Stored] = []
        self._bases: list[int] = []
        self._start = start_offset
        self._flushed = start_offset
        self.epochs = _Epochs()

    # ---- offsets -----------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._start

    @property
    def log_end_offset(self) -> int:
        return self._batches[-1].last_offset + 1 if self._batches else self._start

    @property
    def durable_offset(self) -> int:
        return self._flushed

    @property
    def latest_epoch(self) -> int:
        return self.epochs.latest_epoch

    # ---- writing -----------------------------------------------------------------------

    def append(self, batches: bytes, *, leader_epoch: int = 0) -> tuple[int, int]:
        spans = validate_batches(batches, BATCH_BYTES_MAX)
        base = offset = self.log_end_offset
        if leader_epoch > self.epochs.latest_epoch:
            self.epochs.assign(leader_epoch, base)
        view = memoryview(batches)
        for span in spans:
            header = span.header
            end = span.position + header.size_bytes
            data = stamp_prefix(offset, header.batch_length, leader_epoch) + bytes(
                view[span.position + _PREFIX_BYTES : end]
            )
            self._put(Stored(offset, offset + header.last_offset_delta, leader_epoch, data))
            offset += header.last_offset_delta + 1
        return base, offset - 1

    def append_replicated(self, data: bytes | memoryview) -> tuple[int, int]:
        spans = validate_batches(data, STORED_BATCH_BYTES_HARD_MAX)
        expected = self.log_end_offset
        first = spans[0].header
        if not self._batches and first.base_offset < expected <= first.last_offset:
            expected = first.base_offset  # the start inside the first batch: taken whole
        for span in spans:
            if span.header.base_offset != expected:
                raise InvalidRequestError(
                    f"replicated batch starts at {span.header.base_offset}, expected {expected}",
                    code=ErrorCode.OFFSET_OUT_OF_RANGE,
                )
            expected = span.header.next_offset
        base = spans[0].header.base_offset
        view = memoryview(data)
        for span in spans:
            header = span.header
            if header.partition_leader_epoch > self.epochs.latest_epoch:
                self.epochs.assign(header.partition_leader_epoch, header.base_offset)
            chunk = bytes(view[span.position : span.position + header.size_bytes])
            self._put(
                Stored(header.base_offset, header.last_offset, header.partition_leader_epoch, chunk)
            )
        return base, expected - 1

    def _put(self, stored: Stored) -> None:
        self._batches.append(stored)
        self._bases.append(stored.base_offset)

    def assign_epoch(self, epoch: int) -> None:
        self.epochs.assign(epoch, self.log_end_offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self.epochs.end_offset_for(epoch, self.log_end_offset)

    # ---- reading -----------------------------------------------------------------------

    def advance_start(self, offset: int) -> int:
        if offset <= self._start:
            return self._start
        end = self.log_end_offset
        if offset > end:
            raise OffsetOutOfRangeError(offset, self._start, end)
        keep = [s for s in self._batches if s.last_offset >= offset]
        self._batches, self._bases = keep, [s.base_offset for s in keep]
        self._start = offset
        self._flushed = max(self._flushed, min(offset, end))
        self.epochs.truncate_from_start(offset)
        return offset

    def read(self, offset: int, max_bytes: int, *, upper_offset: int | None = None) -> bytes:
        start, end = self.log_start_offset, self.log_end_offset
        if offset < start or offset > end:
            raise OffsetOutOfRangeError(offset, start, end)
        upper = end if upper_offset is None else min(upper_offset, end)
        i = bisect.bisect_right(self._bases, offset) - 1
        i = max(i, 0)
        out: list[bytes] = []
        size = 0
        for stored in self._batches[i:]:
            if stored.last_offset < offset:
                continue
            if stored.last_offset >= upper:
                break
            if out and size + len(stored.data) > max_bytes:
                break
            out.append(stored.data)
            size += len(stored.data)
        return b"".join(out)

    def headers(self, offset: int) -> list[BatchHeader]:
        return [parse_header(s.data) for s in self._batches if s.last_offset >= offset]

    def records(self) -> list[Stored]:
        return list(self._batches)

    # ---- removing ----------------------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        if offset >= self.log_end_offset:
            return
        keep = bisect.bisect_left(self._bases, offset)
        # a batch holding ``offset`` goes too
        while keep > 0 and self._batches[keep - 1].last_offset >= offset:
            keep -= 1
        if offset <= self._start or keep == 0 or self._batches[keep - 1].last_offset < self._start:
            # at or below the start, or the cut holds the start: empty, restarted
            self._batches, self._bases = [], []
            self._start = min(offset, self._start)
        else:
            self._batches, self._bases = self._batches[:keep], self._bases[:keep]
        end = self.log_end_offset
        self._flushed = min(self._flushed, end)
        if end == self._start:
            self.epochs.entries = []
        else:
            self.epochs.truncate_from_end(end)

    def reset_to(self, offset: int) -> None:
        self._batches, self._bases = [], []
        self._start = offset
        self._flushed = offset
        self.epochs.entries = []

    # ---- durability --------------------------------------------------------------------

    def flush(self) -> int:
        self._flushed = self.log_end_offset
        return self._flushed

    def crash(self, rng: random.Random) -> None:
        """Power loss: what was not flushed is lost, except a random prefix of it."""
        unflushed = [s for s in self._batches if s.last_offset >= self._flushed]
        survivors = rng.randint(0, len(unflushed)) if unflushed else 0
        kept_end = self._flushed if not survivors else unflushed[survivors - 1].last_offset + 1
        self.truncate_to(max(kept_end, self._start))
        self._flushed = self.log_end_offset  # recovery fsyncs what it kept
        self.epochs.entries = [
            EpochEntry(e.epoch, e.start_offset)
            for e in self.epochs.entries
            if e.start_offset < self.log_end_offset
        ]
