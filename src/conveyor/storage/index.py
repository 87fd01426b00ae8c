"""Sparse indexes beside each segment, in Kafka's file formats.

``NNNNNNNNNNNNNNNNNNNN.index`` (offset index): entries of 8 bytes, big-endian::

    0  4  relative offset  (batch base offset - segment base offset)
    4  4  position         (byte position of that batch in the .log file)

``NNNNNNNNNNNNNNNNNNNN.timeindex`` (time index): entries of 12 bytes, big-endian::

    0  8  timestamp        (largest batch max_timestamp seen so far in the segment, ms)
    8  4  relative offset  (base offset of the batch that carried it)

An entry is written for the first batch of a segment and then for the first batch after
each ``index_interval_bytes`` of log data; entries only grow, in both columns. Index files
are a cache: they are not fsynced, and on open after a crash they are checked against the
log and rebuilt from it when they disagree. Entries are held in memory as 32-bit arrays
(8 bytes per offset entry), so a 1 GiB segment of 100 KiB batches costs about 80 KiB.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from array import array
from pathlib import Path

_OFFSET_ENTRY = struct.Struct(">II")
_TIME_ENTRY = struct.Struct(">qI")

log = logging.getLogger(__name__)


class _IndexFile:
    """The file side of an index: entries appended as they are made, the whole file
    rewritten from memory after a rebuild or a truncation.

    The file is a cache (checked against the log when loaded, rebuilt when it disagrees),
    so a failed entry write (a full disk, while the log's own data may still fit in its
    preallocated space) does not fail the append that made it: the entry stays in memory,
    the file takes no more entries (it stays a valid, sparser prefix), and closing the
    index (the segment sealed or closed) rewrites it from memory when there is room."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._stale = False

    def open_for_append(self) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _write_entry(self, entry: bytes) -> None:
        if self._fd < 0:
            return
        try:
            if os.write(self._fd, entry) == len(entry):
                return
            problem = "short write"
        except OSError as exc:
            problem = str(exc)
        log.warning("%s: entries not written (%s); rewritten when closed", self.path, problem)
        self._close_fd()
        self._stale = True

    def _payload(self) -> bytes:
        raise NotImplementedError

    def rewrite(self) -> None:
        """Write the whole file from memory (after a rebuild or truncation)."""
        self._close_fd()
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_bytes(self._payload())
        os.replace(tmp, self.path)
        self._stale = False

    def close(self) -> None:
        self._close_fd()
        if self._stale:
            try:
                self.rewrite()
            except OSError as exc:  # checked against the log when next loaded
                log.warning("%s: not rewritten (%s)", self.path, exc)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OffsetIndex(_IndexFile):
    def __init__(self, path: Path, base_offset: int) -> None:
        super().__init__(path)
        self.base_offset = base_offset
        self._relative_offsets = array("I")
        self._positions = array("I")

    @property
    def entries(self) -> int:
        return len(self._positions)

    def load(self, log_size_bytes: int) -> bool:
        """Read the file; False (and empty) when it is missing or not plausible."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        if len(data) % _OFFSET_ENTRY.size:
            return False
        previous_offset, previous_position = -1, -1
        for relative_offset, position in _OFFSET_ENTRY.iter_unpack(data):
            if relative_offset <= previous_offset and previous_offset >= 0:
                return self._reset()
            if position <= previous_position or position >= max(log_size_bytes, 1):
                return self._reset()
            self._relative_offsets.append(relative_offset)
            self._positions.append(position)
            previous_offset, previous_position = relative_offset, position
        return True

    def _reset(self) -> bool:
        self._relative_offsets = array("I")
        self._positions = array("I")
        return False

    def append(self, offset: int, position: int) -> None:
        relative = offset - self.base_offset
        self._relative_offsets.append(relative)
        self._positions.append(position)
        self._write_entry(_OFFSET_ENTRY.pack(relative, position))

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the last entry at or below ``offset``; (base, 0) if none."""
        i = bisect.bisect_right(self._relative_offsets, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._relative_offsets[i], self._positions[i]

    def last_position(self) -> int:
        return self._positions[-1] if self._positions else 0

    def drop(self, offset: int) -> None:
        """Forget the entry for ``offset`` (found not to match the log). Only in memory: the
        file keeps it until the next rewrite, and the next open finds it bad again."""
        i = bisect.bisect_left(self._relative_offsets, offset - self.base_offset)
        if (
            i < len(self._relative_offsets)
            and self._relative_offsets[i] == offset - self.base_offset
        ):
            del self._relative_offsets[i]
            del self._positions[i]

    def truncate_to_position(self, position: int) -> None:
        """Drop the entries that point at or beyond ``position``."""
        keep = bisect.bisect_left(self._positions, position)
        del self._relative_offsets[keep:]
        del self._positions[keep:]
        self.rewrite()

    def _payload(self) -> bytes:
        return b"".join(
            _OFFSET_ENTRY.pack(r, p)
            for r, p in zip(self._relative_offsets, self._positions, strict=True)
        )

    def clear(self) -> None:
        self._reset()


class TimeIndex(_IndexFile):
    def __init__(self, path: Path, base_offset: int) -> None:
        super().__init__(path)
        self.base_offset = base_offset
        self._timestamps: list[int] = []
        self._relative_offsets = array("I")

    @property
    def last_timestamp_ms(self) -> int:
        return self._timestamps[-1] if self._timestamps else -1

    def load(self) -> bool:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return False
        if len(data) % _TIME_ENTRY.size:
            return False
        previous_ts, previous_offset = -(2**63), -1
        for timestamp, relative_offset in _TIME_ENTRY.iter_unpack(data):
            if timestamp < previous_ts or relative_offset < previous_offset:
                self.clear()
                return False
            self._timestamps.append(timestamp)
            self._relative_offsets.append(relative_offset)
            previous_ts, previous_offset = timestamp, relative_offset
        return True

    def maybe_append(self, timestamp_ms: int, offset: int) -> None:
        """Add an entry when ``timestamp_ms`` is a new maximum (entries never go backwards)."""
        if self._timestamps and timestamp_ms <= self._timestamps[-1]:
            return
        relative = offset - self.base_offset
        if self._relative_offsets and relative < self._relative_offsets[-1]:
            return
        self._timestamps.append(timestamp_ms)
        self._relative_offsets.append(relative)
        self._write_entry(_TIME_ENTRY.pack(timestamp_ms, relative))

    def lookup(self, timestamp_ms: int) -> int:
        """Base offset of the batch to start scanning from for the first timestamp >= target."""
        i = bisect.bisect_left(self._timestamps, timestamp_ms) - 1
        if i < 0:
            return self.base_offset
        return self.base_offset + self._relative_offsets[i]

    def truncate_to_offset(self, offset: int) -> None:
        keep = bisect.bisect_left(self._relative_offsets, offset - self.base_offset)
        del self._timestamps[keep:]
        del self._relative_offsets[keep:]
        self.rewrite()

    def _payload(self) -> bytes:
        return b"".join(
            _TIME_ENTRY.pack(t, r)
            for t, r in zip(self._timestamps, self._relative_offsets, strict=True)
        )

    def clear(self) -> None:
        self._timestamps = []
        self._relative_offsets = array("I")
