"""Opening a log's segments after a clean shutdown or a crash (docs/storage-format.md).

With ``.clean-shutdown`` present every segment's indexes are checked against its log and
trusted when they agree. After a crash the active segment is rescanned batch by batch
(structure, offsets that only grow, CRC) and cut at the first bad batch; an older segment
is rescanned only when its indexes disagree with it. A segment cut short before the last
one cannot be followed by the later segments, which are deleted. Zeros after a segment's
last batch are its preallocated tail (``segment.PREALLOCATE_BYTES``), cut and not counted
as dropped, unless the next segment's offsets do not follow on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
from pathlib import Path

from conveyor.storage.segment import LogSegment, RecoveryResult

log = logging.getLogger(__name__)


def load_segments(
    directory: Path,
    index_interval_bytes: int,
    *,
    clean: bool,
    now_ms: int,
    gaps_allowed: bool = False,
) -> tuple[list[LogSegment], list[tuple[int, RecoveryResult]]]:
    """The segments found in ``directory``, oldest first, each checked or recovered, and
    what recovery dropped per segment base offset."""
    bases = sorted(int(p.stem) for p in directory.glob("*.log") if p.stem.isdigit())
    segments: list[LogSegment] = []
    recovered: list[tuple[int, RecoveryResult]] = []
    # A failed open (a full disk while an index is rebuilt, say) closes the segments it
    # opened: the broker retries the open at each heartbeat and must not leak them.
    with contextlib.ExitStack() as opened:
        for i, base in enumerate(bases):
            segment = LogSegment(directory, base, index_interval_bytes)
            opened.callback(segment.close)
            segment.created_ms = now_ms
            segment.gaps_allowed = gaps_allowed
            is_active = i == len(bases) - 1
            must_scan = is_active and not clean
            if must_scan or not segment.load_indexes():
                result = segment.recover()
                if result.preallocated_bytes and not is_active and not gaps_allowed:
                    result = _zeros_before(result, segment.next_offset, bases[i + 1])
                if result.dropped_bytes:
                    recovered.append((base, result))
                    log.warning(
                        "recovery of %s: dropped %d bytes after %d valid batches (%s)",
                        segment.log_path,
                        result.dropped_bytes,
                        result.batches,
                        result.reason,
                    )
            segments.append(segment)
            if recovered and recovered[-1][0] == base and not is_active:
                # A torn tail before the last segment: later segments cannot follow on.
                for later in bases[i + 1 :]:
                    log.warning("recovery: deleting segment %020d after a torn segment", later)
                    LogSegment(directory, later, index_interval_bytes).delete()
                break
        opened.pop_all()  # opened: the log owns them now
    for previous, following in itertools.pairwise(segments):
        # A gap between segments is normal once compacted; an overlap is not.
        if previous.next_offset > following.base_offset:
            log.warning(
                "%s: segments %d..%d and %d overlap",
                directory,
                previous.base_offset,
                previous.next_offset,
                following.base_offset,
            )
    return segments, recovered


def _zeros_before(result: RecoveryResult, next_offset: int, following_base: int) -> RecoveryResult:
    """A sealed segment's zero tail is the preallocation its roll cut (a crash lost the
    cut) when the next segment follows on; otherwise the zeros stand where writes were
    lost, a torn tail like any other (later segments cannot follow on)."""
    if next_offset == following_base:
        return result
    return dataclasses.replace(
        result,
        dropped_bytes=result.preallocated_bytes,
        preallocated_bytes=0,
        reason=f"zeros where offsets {next_offset}..{following_base - 1} should be",
    )
