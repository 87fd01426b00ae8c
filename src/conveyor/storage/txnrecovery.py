"""A log's transactions from its segments' aborted-transaction indexes (``abortindex.py``):
lazy loading, the read_committed lookup, and rebuilding an index from its segment when
its file is missing or damaged (issue 21, docs/storage-format.md).

* **Lookup** (:func:`collect`, Kafka's ``UnifiedLog.collectAbortedTransactions``): from the
  segment holding the fetch's first offset onwards, each segment's entries (bisected by
  marker offset), until an entry's last stable offset reaches the fetch's end, or a
  segment at or past the end had no transaction that began below the end open at its
  base (its header says which were): no later marker can end one.
* **Rebuild** (:func:`rebuild`): the transactions open at the segment's base come from
  its own header when that passed its CRC, else from the previous segment's (its header,
  then a scan of that segment), walking back as far as needed; the segment is then
  scanned batch by batch (headers, and the key of each marker). A first segment whose
  header is lost starts from nothing open (what began before it was deleted anyway).
* **Open** (:func:`open_transactions`): every missing index is rebuilt (a log written
  before the index existed gets all of them, in one forward pass); after a crash the
  active segment's index is rebuilt whatever its file says (an entry may be missing for
  a marker that reached the log); then the active segment is scanned from its header's
  open transactions: the partition's open transactions, exactly, however old. After a
  clean close, its checkpoint of them (``OPEN_CHECKPOINT_FILE``) spares that scan.

Callers hold the log's lock; everything here is file reads and index writes. A fetch
reads a not yet loaded index's file without the lock (``PartitionLog.aborted_in``).
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from conveyor.protocol.batch import TRANSACTIONAL_BIT
from conveyor.protocol.errors import CorruptDataError
from conveyor.protocol.txn import marker_type
from conveyor.storage.abortindex import AbortedIndex, AbortedTxn, decode_header, encode_header
from conveyor.storage.segment import LogSegment
from conveyor.storage.txnindex import TxnIndex

log = logging.getLogger(__name__)

_MARKER_BYTES: Final = 128  # a marker batch's header and record key fit in this
# The open transactions at a clean close: the log end offset (8 bytes, big-endian), then
# an index header (abortindex.py) listing them.
OPEN_CHECKPOINT_FILE: Final = "open-transactions-checkpoint"
# magic, the log end it is for, the active segment's index entries; then the open ones
_CHECKPOINT: Final = struct.Struct(">4sqq")
_CHECKPOINT_MAGIC: Final = b"COT2"


def scan(segment: LogSegment, open_at_base: dict[int, int]) -> tuple[list[AbortedTxn], TxnIndex]:
    """The aborted transactions whose markers ``segment`` holds, and those open at its
    end, given those open at its base."""
    txns = TxnIndex(dict(open_at_base))
    found: list[AbortedTxn] = []
    try:
        for position, header in segment.iter_headers(0, segment.size_bytes):
            if not header.attributes & TRANSACTIONAL_BIT:
                continue
            marker = None
            if header.is_control:
                marker = marker_type(segment.pread(position, _MARKER_BYTES))
            aborted = txns.observe(header, marker)
            if aborted is not None:
                found.append(aborted)
    except CorruptDataError as exc:
        # A damaged batch inside a segment recovery trusted (its indexes agreed): reads
        # fail there too. What came before it still counts; opening never fails on it.
        log.error("%s: transactions read up to a damaged batch only: %s", segment.log_path, exc)
    return found, txns


def loaded(segments: Sequence[LogSegment], i: int) -> AbortedIndex:
    """Segment ``i``'s index, loaded from its file, or rebuilt when that is missing or
    damaged."""
    index = segments[i].aborted
    if not index.loaded and not index.load(segments[i].next_offset, sealed=i < len(segments) - 1):
        rebuild(segments, i, "missing or damaged")
    return index


def open_at_base(segments: Sequence[LogSegment], i: int) -> dict[int, int]:
    """The transactions open at segment ``i``'s base offset (producer id -> first)."""
    j = i
    while True:
        index = segments[j].aborted
        if not index.loaded:
            # a header that passed its CRC is kept
            index.load(segments[j].next_offset, sealed=j < len(segments) - 1)
        if index.open_at_base is not None or j == 0:
            break
        j -= 1
    state = dict(index.open_at_base or {})
    for k in range(j, i):
        state = scan(segments[k], state)[1].ongoing
    return state


def rebuild(
    segments: Sequence[LogSegment], i: int, reason: str, base: dict[int, int] | None = None
) -> TxnIndex:
    """Rebuild segment ``i``'s index from the segment; returns the transactions open at
    its end. ``base``: those open at its base, when the caller knows them."""
    segment = segments[i]
    state = open_at_base(segments, i) if base is None else base
    entries, txns = scan(segment, state)
    segment.aborted.set(state, entries, sealed=i < len(segments) - 1)
    # after a crash the active segment's is rebuilt as a rule; otherwise a file was lost
    level = logging.INFO if reason == "crash" else logging.WARNING
    log.log(
        level,
        "%s: rebuilt the aborted-transaction index (%s): %d aborted, %d open at its base",
        segment.aborted.path,
        reason,
        len(entries),
        len(state),
    )
    return txns


def write_open_checkpoint(
    directory: Path, end_offset: int, ongoing: dict[int, int], active_entries: int
) -> None:
    """On a clean close: the transactions open at ``end_offset`` (the log's end), so the
    next open need not scan the active segment for them (Kafka's producer snapshot at
    shutdown), and the active segment's index entries, so that an index cut at an entry
    boundary (which nothing in an unsealed file shows) is rebuilt. Fsynced, renamed into
    place."""
    path = directory / OPEN_CHECKPOINT_FILE
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(_CHECKPOINT.pack(_CHECKPOINT_MAGIC, end_offset, active_entries))
        f.write(encode_header(ongoing))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def take_open_checkpoint(directory: Path, end_offset: int) -> tuple[dict[int, int], int] | None:
    """The checkpoint's open transactions and active index entries if it is intact and for
    ``end_offset``; the file is removed either way (used once: a crash after this open
    must not trust it)."""
    path = directory / OPEN_CHECKPOINT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    path.unlink()
    if len(data) < _CHECKPOINT.size:
        return None
    magic, end, entries = _CHECKPOINT.unpack_from(data)
    if magic != _CHECKPOINT_MAGIC or end != end_offset:
        return None  # another log end, or an older format: the active segment is scanned
    header = decode_header(data[_CHECKPOINT.size :])
    return None if header is None else (header[0], entries)


def open_transactions(segments: Sequence[LogSegment], directory: Path, *, clean: bool) -> TxnIndex:
    """On open: rebuild missing indexes (and the active one after a crash); returns the
    transactions open at the log's end (from the clean close's checkpoint when it
    matches, else from a scan of the active segment)."""
    checkpoint = take_open_checkpoint(directory, segments[-1].next_offset)
    carried: dict[int, int] | None = None  # open at the next segment's base, when known
    last = len(segments) - 1
    ends: TxnIndex | None = None
    for i, segment in enumerate(segments):
        index = segment.aborted
        missing = not index.path.exists()
        if missing or (i == last and not clean):
            if not missing:
                index.load(segment.next_offset, sealed=False)  # its header: the base
            base = index.open_at_base if index.open_at_base is not None else carried
            ends = rebuild(segments, i, "missing" if missing else "crash", base)
            carried = ends.ongoing
        else:
            carried, ends = None, None
    if ends is not None:
        return ends  # the active segment was just rebuilt: its scan says what is open
    if clean and checkpoint is not None:
        ongoing, entries = checkpoint
        if len(loaded(segments, last)) == entries:  # appends write to it
            return TxnIndex(ongoing)
        return rebuild(segments, last, "damaged: fewer entries than at close")
    return replay_active(segments)


def replay_active(segments: Sequence[LogSegment]) -> TxnIndex:
    """The transactions open at the log's end: those open at the active segment's base
    (its index's header), then its batches."""
    active = loaded(segments, len(segments) - 1)
    assert active.open_at_base is not None  # loaded
    return scan(segments[-1], active.open_at_base)[1]


def collect(
    segments: Sequence[LogSegment], bases: Sequence[int], start: int, end: int
) -> list[AbortedTxn] | LogSegment:
    """The aborted transactions with records in [start, end), oldest marker first; or the
    first segment needed whose index is not loaded yet (the caller loads it, without the
    log's lock, and asks again)."""
    found: list[AbortedTxn] = []
    if start >= end:
        return found
    first = max(bisect.bisect_right(bases, start) - 1, 0)
    for i in range(first, len(segments)):
        index = segments[i].aborted
        if not index.loaded:
            return segments[i]
        if i > first and segments[i].base_offset >= end:
            oldest = index.first_open_offset()
            if oldest is None or oldest >= end:
                break
        if index.collect(start, end, found):
            break
    return found
