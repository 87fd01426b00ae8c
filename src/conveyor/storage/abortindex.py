"""A segment's aborted-transaction index: ``NNNNNNNNNNNNNNNNNNNN.txnindex`` (issue 21).

Kafka's design (``TransactionIndex``, ``LogSegment.collectAbortedTxns``): each segment keeps
the transactions whose ABORT marker it holds, in marker order, so a read_committed fetch
reads the entries of the segments its range touches instead of rescanning the log. The file,
all integers big-endian::

    header   0  4  magic b"CVTX"
             4  2  version (1)
             6  2  flags (0)
             8  4  n: transactions open at the segment's base offset
            12  16n  n times: producer id (8), first offset of its open transaction (8)
            12+16n 4 CRC-32C of the header bytes before it
    entries, 38 bytes each (Kafka's 34-byte AbortedTxn, then a CRC):
             0  2  version (0)
             2  8  producer id
            10  8  first offset (the transaction's first batch)
            18  8  last offset (its ABORT marker, in this segment)
            26  8  last stable offset when the marker was written
            34  4  CRC-32C of bytes 0..33
    seal, the last 38 bytes of a sealed segment's index (written when the segment rolls):
             0  2  version (1)
             2  8  the number of entries before it
            10 24  zero
            34  4  CRC-32C of bytes 0..33

The header's open transactions are what Kafka keeps in its producer-state snapshots: with
them a damaged index is rebuilt from its own segment (or, when the header itself is damaged,
from the previous segment's), never trusted (``txnrecovery.py``). An entry is written by one
``write`` when the marker is appended; the file is fsynced whenever its segment's ``.log``
is (``PartitionLog``'s flush policy). On load every length, CRC and offset is checked; any
failure makes the index damaged (rebuilt), never partially used. Per-entry CRCs cannot see
a file cut at an entry boundary (a power loss before the sealed segment's flush, with the
``.log``'s marker on disk and its entry not): the seal's count can, so a sealed segment's
index without a seal, or whose seal counts other entries, is damaged too.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from conveyor.protocol.batch import crc32c

log = logging.getLogger(__name__)

MAGIC: Final = b"CVTX"
VERSION: Final = 1
_PREFIX: Final = struct.Struct(">4sHHI")
_OPEN: Final = struct.Struct(">qq")
_CRC: Final = struct.Struct(">I")
_ENTRY: Final = struct.Struct(">hqqqq")  # Kafka's AbortedTxn, version 0
ENTRY_BYTES: Final = _ENTRY.size + _CRC.size
_ENTRY_WITH_CRC: Final = struct.Struct(">hqqqqI")
_SEAL_VERSION: Final = 1
OPEN_MAX: Final = 1_000_000  # a header claiming more open transactions is damaged


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int  # the ABORT marker's offset
    last_stable_offset: int  # the partition's LSO just after the marker (Kafka's)


def encode_header(open_at_base: Mapping[int, int]) -> bytes:
    body = _PREFIX.pack(MAGIC, VERSION, 0, len(open_at_base)) + b"".join(
        _OPEN.pack(pid, first) for pid, first in sorted(open_at_base.items())
    )
    return body + _CRC.pack(crc32c(body))


def encode_entry(entry: AbortedTxn) -> bytes:
    body = _ENTRY.pack(
        0, entry.producer_id, entry.first_offset, entry.last_offset, entry.last_stable_offset
    )
    return body + _CRC.pack(crc32c(body))


def encode_seal(count: int) -> bytes:
    body = _ENTRY.pack(_SEAL_VERSION, count, 0, 0, 0)
    return body + _CRC.pack(crc32c(body))


def decode_header(data: bytes | memoryview) -> tuple[dict[int, int], int] | None:
    """(open transactions at the base, header size), or None when damaged."""
    if len(data) < _PREFIX.size + _CRC.size:
        return None
    magic, version, _, count = _PREFIX.unpack_from(data)
    size = _PREFIX.size + count * _OPEN.size + _CRC.size
    if magic != MAGIC or version != VERSION or count > OPEN_MAX or len(data) < size:
        return None
    (crc,) = _CRC.unpack_from(data, size - _CRC.size)
    if crc32c(data[: size - _CRC.size]) != crc:
        return None
    opened = dict(_OPEN.iter_unpack(data[_PREFIX.size : size - _CRC.size]))
    if len(opened) != count or any(pid < 0 or first < 0 for pid, first in opened.items()):
        return None
    return opened, size


def decode_entries(
    data: bytes | memoryview, base_offset: int, next_offset: int
) -> list[AbortedTxn] | None:
    """The entries of a segment holding offsets [base_offset, next_offset), or None when
    any is damaged: a torn tail, a CRC, or offsets impossible for this segment."""
    decoded = decode_sealed_entries(data, base_offset, next_offset)
    return None if decoded is None else decoded[0]


def decode_sealed_entries(
    data: bytes | memoryview, base_offset: int, next_offset: int
) -> tuple[list[AbortedTxn], bool] | None:
    """As :func:`decode_entries`, and whether they end with a seal counting them."""
    if len(data) % ENTRY_BYTES:
        return None
    found: list[AbortedTxn] = []
    previous = base_offset - 1
    view = memoryview(data)
    at = 0
    for version, pid, first, last, stable, crc in _ENTRY_WITH_CRC.iter_unpack(view):
        if crc32c(view[at : at + _ENTRY.size]) != crc:
            return None
        at += ENTRY_BYTES
        if version == _SEAL_VERSION:
            whole = pid == len(found) and first == last == stable == 0
            return (found, True) if whole and at == len(view) else None
        if (
            version != 0
            or pid < 0
            or not 0 <= first <= last
            or not previous < last < next_offset
            or not 0 <= stable <= last + 1
        ):
            return None
        found.append(AbortedTxn(pid, first, last, stable))
        previous = last
    return found, False


class Parsed(NamedTuple):
    """An index file as read: None for a part that is missing or damaged."""

    open_at_base: dict[int, int] | None
    entries: list[AbortedTxn] | None
    sealed: bool = False  # the entries end with a seal counting them


class AbortedIndex:
    """One segment's index, loaded lazily (``load``) and kept in memory as four columns
    sorted by last offset, so a lookup bisects instead of copying a list. Not thread-safe:
    ``PartitionLog`` calls it under its lock. No file descriptor stays open: an entry is
    an append-and-close (aborts are rare next to batches), an fsync opens the path."""

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.loaded = False
        # None until loaded, and when the header was damaged
        self.open_at_base: dict[int, int] | None = None
        self._entries: list[AbortedTxn] = []  # by last offset
        self._last = array("q")  # each one's last offset, to bisect
        self._unsynced = False
        self._broken = False  # an append failed: the file is gone until rewritten
        self.sealed = False  # the file ends with a seal (its segment rolled)

    def __len__(self) -> int:
        return len(self._last)

    def entries(self) -> Iterator[AbortedTxn]:
        return iter(self._entries)

    # ---- writing -------------------------------------------------------------------------

    def create(self, open_at_base: Mapping[int, int]) -> None:
        """A new, empty segment's index (its file is written now: a missing file later
        means lost, not empty). Not fsynced here: with its segment's ``.log``."""
        self.set_loaded(dict(open_at_base), ())
        self.rewrite(durable=False)

    def set(
        self, open_at_base: Mapping[int, int], entries: Iterable[AbortedTxn], *, sealed: bool
    ) -> None:
        """Replace the whole index (a rebuild) and write its file, durably."""
        self.set_loaded(dict(open_at_base), entries, sealed=sealed)
        self.rewrite(durable=True)

    def rewrite(self, *, durable: bool) -> None:
        """Write the file from memory, atomically (a temporary file renamed over it);
        ``durable``: fsynced before the rename, so a crash never leaves a short file under
        the name (a sealed segment's index is not fsynced again)."""
        assert self.loaded and self.open_at_base is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = encode_header(self.open_at_base) + b"".join(
            encode_entry(e) for e in self.entries()
        )
        if self.sealed:
            payload += encode_seal(len(self))
        with tmp.open("wb") as f:
            f.write(payload)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._unsynced = not durable
        self._broken = False

    def append(self, entry: AbortedTxn) -> None:
        """An ABORT marker was appended to the segment: one write at the file's end."""
        assert self.loaded, "the active segment's index is always loaded"
        if self._last and entry.last_offset <= self._last[-1]:
            raise ValueError(f"aborted entry at {entry.last_offset} out of order in {self.path}")
        self._remember(entry)
        if self.sealed:  # a roll that failed after the seal: the segment is still active
            self.sealed = False
            if not self._broken:
                try:
                    self.rewrite(durable=False)
                except OSError as exc:  # the marker is in the log: this must not fail it
                    self._lose_file(exc)
            return
        self._write_at_end(encode_entry(entry))

    def seal(self) -> None:
        """The segment rolled: its file ends with a seal counting its entries, so a later
        load can tell a whole file from one cut at an entry boundary."""
        assert self.loaded, "the active segment's index is always loaded"
        if self.sealed:
            return  # a roll retried after a failure
        self.sealed = True
        self._write_at_end(encode_seal(len(self)))

    def _write_at_end(self, payload: bytes) -> None:
        if self._broken:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                written = os.write(fd, payload)
            finally:
                os.close(fd)
            if written != len(payload):
                raise OSError(f"short write: {written} of {len(payload)} bytes")
        except OSError as exc:
            self._lose_file(exc)
            return
        self._unsynced = True

    def _lose_file(self, exc: OSError) -> None:
        """A write of the file failed after its marker reached the log (a full disk): the
        index must not claim to be whole, and the append must not fail for it. Without
        its file the next open rebuilds it from the log; until then memory is right."""
        log.error("%s: cannot append (%s): removing it until the log reopens", self.path, exc)
        self._broken = True
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)

    def _remember(self, entry: AbortedTxn) -> None:
        self._entries.append(entry)
        self._last.append(entry.last_offset)

    def truncate_to(self, offset: int) -> None:
        """Forget the entries whose marker is at or after ``offset`` (the log was cut)."""
        keep = bisect.bisect_left(self._last, offset)
        if keep == len(self._last) and not self.sealed:
            return
        self.sealed = False  # the segment is (again) the active one
        del self._entries[keep:]
        del self._last[keep:]
        self.rewrite(durable=False)  # the active segment: rebuilt after a crash anyway

    def fsync(self) -> None:
        """Make what was written durable (with the segment's ``.log``)."""
        if not self._unsynced:
            return
        self._unsynced = False  # before: a write during the fsync marks it again
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return  # deleted meanwhile (a retention under the same flush lock cannot)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)

    # ---- reading -------------------------------------------------------------------------

    def load(self, next_offset: int, *, sealed: bool) -> bool:
        """Read and check the file; False when missing or damaged (then nothing is used,
        except a header that passed its own CRC: ``open_at_base``). ``sealed``: the
        segment is not the active one (its file must end with its seal)."""
        return self.adopt(self.read(next_offset), sealed=sealed)

    def read(self, next_offset: int) -> Parsed:
        """The file's content, checked, without changing this index (callable without
        the log's lock: ``PartitionLog.aborted_in``)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Parsed(None, None)
        header = decode_header(data)
        if header is None:
            return Parsed(None, None)
        opened, size = header
        decoded = decode_sealed_entries(memoryview(data)[size:], self.base_offset, next_offset)
        if decoded is None:
            return Parsed(opened, None)
        return Parsed(opened, decoded[0], decoded[1])

    def adopt(self, parsed: Parsed, *, sealed: bool) -> bool:
        """Take what :meth:`read` found; False when the file was missing or damaged, or
        (``sealed``: the segment is not the active one) has no seal."""
        self.loaded = False
        self.open_at_base = parsed.open_at_base
        if parsed.open_at_base is None or parsed.entries is None:
            return False
        if sealed and not parsed.sealed:
            return False  # maybe cut at an entry boundary: rebuilt, never trusted
        self.set_loaded(parsed.open_at_base, parsed.entries, sealed=parsed.sealed)
        if parsed.sealed and not sealed:
            self.sealed = False  # the segment became the active one (a truncation)
            self.rewrite(durable=False)
        return True

    def set_loaded(
        self, open_at_base: dict[int, int], entries: Iterable[AbortedTxn], *, sealed: bool = False
    ) -> None:
        """As ``set`` without writing the file (it already holds this)."""
        self.sealed = sealed
        self.open_at_base = open_at_base
        self._entries = []
        self._last = array("q")
        for entry in entries:
            self._remember(entry)
        self.loaded = True

    def unload(self) -> None:
        """Forget the entries (memory): the next lookup reads the file again."""
        self.loaded = False
        self.sealed = False
        self.open_at_base = None
        self._entries = []
        self._last = array("q")

    def collect(self, start: int, end: int, into: list[AbortedTxn]) -> bool:
        """Add to ``into`` the aborted transactions with records in [start, end) whose
        marker is here; True when no later segment can hold more (Kafka's
        ``collectAbortedTxns``: an entry whose last stable offset is at or past ``end``
        means every transaction that began below ``end`` had ended by then)."""
        entries = self._entries
        for i in range(bisect.bisect_left(self._last, start), len(entries)):
            entry = entries[i]
            if entry.first_offset < end:
                into.append(entry)
            if entry.last_stable_offset >= end:
                return True
        return False

    def first_open_offset(self) -> int | None:
        """The first offset of the oldest transaction open at the base (None: none)."""
        assert self.open_at_base is not None
        return min(self.open_at_base.values()) if self.open_at_base else None
