"""Swapping a cleaned segment in for the segments it replaces, crash-safely.

The log cleaner (``cleaner.py``) rewrites a group of consecutive sealed segments, from the
one whose base offset is ``B`` up to (not including) the segment at base offset ``E``, into
one new segment that starts at ``B``. The files, as Kafka's ``.cleaned`` and ``.swap``::

    B.log.cleaned   the new segment being written: deleted when a log opens
    B.E.swap        the same file, complete and fsynced: the commit point

1. write ``B.log.cleaned`` and fsync it;
2. rename it to ``B.E.swap`` and fsync the directory: the cleaning is now decided;
3. delete the segments whose base offset is in [B, E) (their ``.log`` and indexes);
4. rename ``B.E.swap`` to ``B.log``, write its indexes (the aborted-transaction index:
   the replaced segments' entries, all markers being kept), fsync the directory.

A crash before 2 leaves the old segments as they were (the cleaning is lost, nothing
else). After 2, :func:`complete_pending` (called first thing when a log opens) redoes 3 and
4, so a SIGKILL anywhere leaves either the old segments or the new one, never both and
never neither. Between 3 and 4 no ``B.log`` exists, but the swap file does. The new
segment's indexes are not carried over: the open rebuilds them from the log (they are a
cache, docs/storage-format.md; the aborted-transaction index from the previous segment's
and the new one's batches, ``txnrecovery.py``).

The cleaner's progress, the first offset not yet cleaned, is kept in
``cleaner-offset-checkpoint`` (one decimal number, written atomically); it only saves
work: a lost or stale checkpoint makes the next cleaning redo more, never lose a record.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

CLEANED_SUFFIX: Final = ".cleaned"
SWAP_SUFFIX: Final = ".swap"
CHECKPOINT_FILE: Final = "cleaner-offset-checkpoint"
_SEGMENT_SUFFIXES: Final = (".log", ".index", ".timeindex", ".txnindex")


def swap_path(directory: Path, base_offset: int, end_offset: int) -> Path:
    return directory / f"{base_offset:020d}.{end_offset:020d}{SWAP_SUFFIX}"


def parse_swap_name(name: str) -> tuple[int, int] | None:
    """``B.E.swap`` -> (B, E); None for any other name."""
    if not name.endswith(SWAP_SUFFIX):
        return None
    parts = name.removesuffix(SWAP_SUFFIX).split(".")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 20 for p in parts):
        return None
    base, end = int(parts[0]), int(parts[1])
    return (base, end) if base < end else None


def commit(directory: Path, cleaned: Path, base_offset: int, end_offset: int) -> Path:
    """Step 2: the cleaned file (already fsynced) becomes the swap file, durably."""
    target = swap_path(directory, base_offset, end_offset)
    os.replace(cleaned, target)
    fsync_directory(directory)
    return target


def delete_replaced(directory: Path, base_offset: int, end_offset: int) -> list[int]:
    """Step 3: delete every segment file whose base offset is in [base, end)."""
    doomed = sorted(
        {
            int(p.name.split(".")[0])
            for p in directory.iterdir()
            if p.suffix in _SEGMENT_SUFFIXES and p.stem.isdigit()
        }
    )
    deleted = [b for b in doomed if base_offset <= b < end_offset]
    for base in deleted:
        for suffix in _SEGMENT_SUFFIXES:
            (directory / f"{base:020d}{suffix}").unlink(missing_ok=True)
    return deleted


def finish(directory: Path, swap: Path, base_offset: int) -> Path:
    """Step 4: the swap file takes the segment's name."""
    final = directory / f"{base_offset:020d}.log"
    os.replace(swap, final)
    return final


def complete_pending(directory: Path) -> None:
    """On open: finish every committed swap, drop every uncommitted cleaning."""
    for path in sorted(directory.glob(f"*{SWAP_SUFFIX}")):
        parsed = parse_swap_name(path.name)
        if parsed is None:
            continue
        base, end = parsed
        deleted = delete_replaced(directory, base, end)
        finish(directory, path, base)
        log.warning(
            "%s: finished an interrupted cleaning: segment %d replaces %s", directory, base, deleted
        )
    for path in directory.glob(f"*{CLEANED_SUFFIX}"):
        log.info("%s: removing %s, an interrupted cleaning", directory, path.name)
        path.unlink()
    fsync_directory(directory)


def read_checkpoint(directory: Path) -> int:
    """The first offset not yet cleaned (0 when unknown: everything counts as dirty)."""
    try:
        text = (directory / CHECKPOINT_FILE).read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return 0
    return int(text) if text.isdigit() else 0


def write_checkpoint(directory: Path, offset: int) -> None:
    path = directory / CHECKPOINT_FILE
    temp = path.with_suffix(".tmp")
    with temp.open("w", encoding="ascii") as f:
        f.write(f"{offset}\n")
        f.flush()
        os.fsync(f.fileno())
    temp.replace(path)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
