"""The log start offset of a partition, kept in ``log-start-offset-checkpoint``.

The log start offset is the first offset a reader may ask for. Retention moves it by whole
segments (it is then the first segment's base offset), but deleting records up to an offset
(Kafka's DeleteRecords, ``PartitionLog.advance_start``) moves it to *any* offset up to the
high watermark, inside a segment: the records below it stay in their batch on disk until
the whole segment is below the start, yet no read may reach them. That offset is not
derivable from the segment files, so it is kept in a checkpoint next to them, as Kafka's
``log-start-offset-checkpoint`` (one file per partition here, one decimal number).

Crash safety: the checkpoint is written (temp file, fsync, rename, directory fsync) before
the segments change, whichever way the start moves. Raising it, the checkpoint is the
commit point: a crash after it leaves segments wholly below the start, which the next open
deletes (:func:`effective_start`). Lowering it (a follower truncating below its start, or
emptied and restarted), a crash after the checkpoint and before the segments are cut
leaves records between the new and the old start readable again until the truncation is
redone, which is what a follower does first after a restart (it validates its epoch
against the leader's log, KIP-101) and what a leader never needs (it never truncates).

Worked example: segments at 0 and 100, log end 150, checkpoint 120. The log start is
``max(120, 0) = 120``; the segment at 0 holds only offsets below it and is deleted on open;
a read of 110 answers OFFSET_OUT_OF_RANGE; a read of 120 returns the batch holding 120,
which may start below it (clients skip the records before the offset they asked for).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

CHECKPOINT_FILE: Final = "log-start-offset-checkpoint"


def read_offset(path: Path) -> int | None:
    """The offset a checkpoint file holds; None when it is missing or unreadable (a torn
    file cannot happen: it is replaced by rename, but an edited one can)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def write_offset(path: Path, offset: int, *, sync_directory: bool = True) -> None:
    """Replace the checkpoint atomically: temp file, fsync, rename (and directory fsync)."""
    temp = path.with_name(path.name + ".tmp")
    with temp.open("w", encoding="ascii") as f:
        f.write(f"{offset}\n")
        f.flush()
        os.fsync(f.fileno())
    temp.replace(path)
    if sync_directory:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_checkpoint(directory: Path) -> int:
    """The checkpointed log start offset (0 when none: the first segment decides)."""
    return read_offset(directory / CHECKPOINT_FILE) or 0


def write_checkpoint(directory: Path, offset: int) -> None:
    write_offset(directory / CHECKPOINT_FILE, offset)


def effective_start(checkpoint: int, first_base_offset: int) -> int:
    """The log start offset of a log whose first segment starts at ``first_base_offset``:
    the checkpoint when it is ahead (records deleted inside a segment), else the segment
    (retention deleted whole segments since the checkpoint was written)."""
    return max(checkpoint, first_base_offset)
