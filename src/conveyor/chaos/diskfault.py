"""Disk faults on a stopped broker's partition directories, and reading replicas back.

A partition directory (``{data}/{topic}-{partition}``) holds ``{base_offset:020d}.log``
segments of concatenated record batches plus sparse ``.index``/``.timeindex`` files
(see :mod:`conveyor.storage.segment`). Every function here runs while the broker is dead
(SIGKILLed by the nemesis), as a crash, a power loss or a bad disk would leave the files:

- :func:`lose_unsynced`: power loss. Cut the log back to the offset the broker reported
  durable just before it died: what it had not fsynced is gone.
- :func:`tear_tail`: a write cut short: a partial batch after the active segment's last.
- :func:`corrupt`: bit rot on one replica: a flipped byte inside a batch (caught only by its
  CRC), or a truncated/garbled offset index.

:func:`read_replica` decodes every batch of a directory with CRC checks, for the checker's
replica comparison. :func:`batch_spans` is the pure scan they share.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from conveyor.protocol.batch import CRC_START, HEADER_SIZE, LOG_OVERHEAD, parse_header, peek_length
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.records import decode_batches

log = logging.getLogger(__name__)

INDEX_SUFFIXES: Final = (".index", ".timeindex")


@dataclass(frozen=True)
class Span:
    position: int
    base_offset: int
    size_bytes: int


def batch_spans(data: bytes) -> list[Span]:
    """Whole batches from the start of a segment's bytes, up to the first one that is cut
    short or cannot be a batch (no CRC check: that is the reader's job)."""
    spans = []
    position = 0
    while len(data) - position >= LOG_OVERHEAD:
        base_offset, size_bytes = peek_length(data, position)
        if size_bytes < HEADER_SIZE or position + size_bytes > len(data):
            break
        spans.append(Span(position, base_offset, size_bytes))
        position += size_bytes
    return spans


def data_end(data: bytes) -> int:
    """Where the whole batches at the start of a segment's bytes end: its size but for a
    torn tail, or the active segment's preallocated zeros."""
    spans = batch_spans(data)
    return spans[-1].position + spans[-1].size_bytes if spans else 0


def segments(directory: Path) -> list[Path]:
    """The ``.log`` files of a partition directory in offset order."""
    return sorted((p for p in directory.glob("*.log") if p.stem.isdigit()), key=lambda p: p.stem)


def _delete_segment(log_path: Path) -> None:
    log_path.unlink(missing_ok=True)
    for suffix in INDEX_SUFFIXES:
        log_path.with_suffix(suffix).unlink(missing_ok=True)


def lose_unsynced(directory: Path, durable_offset: int) -> int:
    """Drop every batch at or beyond ``durable_offset`` (a batch that straddles it too);
    the number of bytes dropped. Index files are left as they are: a real power loss leaves
    them stale too, and recovery must cope."""
    dropped = 0
    for path in segments(directory):
        data = path.read_bytes()
        if int(path.stem) >= durable_offset and int(path.stem) > 0:
            dropped += len(data)
            _delete_segment(path)
            continue
        keep = 0
        for span in batch_spans(data):
            if parse_header(data, span.position).last_offset >= durable_offset:
                break
            keep = span.position + span.size_bytes
        if keep < len(data):
            dropped += len(data) - keep
            with path.open("r+b") as out:
                out.truncate(keep)
    log.info("power loss: %s cut at offset %d: %d bytes", directory, durable_offset, dropped)
    return dropped


def tear_tail(directory: Path, rng: random.Random) -> int:
    """Append the first bytes of the segment's last batch to the active segment (a plausible
    header with a short body, as a write cut by a crash); the bytes appended."""
    logs = [p for p in segments(directory) if p.stat().st_size > 0]
    if not logs:
        return 0
    active = logs[-1]
    data = active.read_bytes()
    spans = batch_spans(data)
    if not spans:
        return 0
    last = spans[-1]
    cut = rng.randrange(1, last.size_bytes)
    with active.open("r+b") as out:  # at the data's end: the file may run on in zeros
        out.seek(last.position + last.size_bytes)  # (the active segment's preallocation)
        out.write(data[last.position : last.position + cut])
    log.info("torn write: appended %d of %d bytes to %s", cut, last.size_bytes, active)
    return cut


def corrupt(directory: Path, rng: random.Random) -> str:
    """Flip one byte inside a batch's CRC-covered bytes in the active segment, or garble
    the active segment's offset index; what was done (empty when nothing could be). The
    active segment is the last one, as the broker's recovery sees it, even when it holds
    nothing yet (a roll whose first write failed): an older, sealed segment is not
    rescanned after a crash, so a flip there is bit rot found on read, not this fault."""
    logs = segments(directory)
    if not logs:
        return ""
    active = logs[-1]
    index = active.with_suffix(".index")
    if rng.random() < 0.5 and index.exists() and index.stat().st_size > 0:
        size = index.stat().st_size
        with index.open("r+b") as out:
            if rng.random() < 0.5:
                out.truncate(rng.randrange(size))
                return f"truncated {index.name} from {size} bytes"
            position = rng.randrange(size)
            out.seek(position)
            out.write(bytes([rng.randrange(256)]))
            return f"overwrote byte {position} of {index.name}"
    data = active.read_bytes()
    spans = batch_spans(data)
    if not spans:
        return ""
    span = rng.choice(spans)
    position = span.position + rng.randrange(CRC_START, span.size_bytes)
    with active.open("r+b") as out:
        out.seek(position)
        out.write(bytes([data[position] ^ (1 << rng.randrange(8))]))
    return f"flipped a bit at byte {position} of {active.name} (batch at offset {span.base_offset})"


@dataclass(frozen=True)
class ReplicaRead:
    """What one replica's files hold: ``records`` as ``(offset, key, value)`` up to the
    first problem, and each problem (a CRC mismatch, a malformed batch) found on the way."""

    records: list[tuple[int, str | None, str | None]]
    problems: list[str]


def read_replica(directory: Path) -> ReplicaRead:
    records: list[tuple[int, str | None, str | None]] = []
    problems: list[str] = []
    for path in segments(directory):
        data = path.read_bytes()
        for span in batch_spans(data):
            chunk = data[span.position : span.position + span.size_bytes]
            try:
                decoded = decode_batches(chunk, verify_crc=True)
            except ConveyorError as e:
                problems.append(f"{path.name} position {span.position}: {e}")
                return ReplicaRead(records, problems)
            records += [(r.offset, _text(r.key), _text(r.value)) for r in decoded]
    return ReplicaRead(records, problems)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode(errors="replace")
