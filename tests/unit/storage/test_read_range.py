"""PartitionLog.read_range: where read()'s batches lie in a segment file, to send them
from there (the replica listener's os.sendfile)."""

from __future__ import annotations

import os
import queue
import shutil
from pathlib import Path
from tempfile import mkdtemp

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.errors import OffsetOutOfRangeError
from conveyor.storage import FileRange, PartitionLog
from tests.unit.storage.helpers import LogFactory, make_batch, open_log, values_of


def sent(found: FileRange | None) -> bytes:
    """The bytes a send of ``found`` would carry (and its descriptor closed)."""
    if found is None:
        return b""
    try:
        return os.pread(found.fd, found.size_bytes, found.position)
    finally:
        os.close(found.fd)


def filled(make_log: LogFactory | None, counts: list[int], **config: int) -> PartitionLog:
    log = make_log(**config) if make_log is not None else open_log(Path(mkdtemp()), **config)
    for n, count in enumerate(counts):
        log.append(make_batch(values_of(count, f"b{n}-", 40)))
    return log


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=12),
    data=st.data(),
)
def test_the_range_holds_the_bytes_read_returns(counts: list[int], data: st.DataObject) -> None:
    log = filled(None, counts, segment_bytes_max=4096, index_interval_bytes=300)
    try:
        offset = data.draw(st.integers(0, log.log_end_offset))
        max_bytes = data.draw(st.integers(1, 20_000))
        assert sent(log.read_range(offset, max_bytes)) == log.read(offset, max_bytes)
    finally:
        log.close()
        shutil.rmtree(log.directory)


def test_at_the_log_end_there_is_nothing_and_beyond_is_out_of_range(
    make_log: LogFactory,
) -> None:
    log = filled(make_log, [3])
    assert log.read_range(3, 1 << 20) is None
    with pytest.raises(OffsetOutOfRangeError):
        log.read_range(4, 1 << 20)


def test_a_range_stays_readable_after_its_segment_is_deleted(make_log: LogFactory) -> None:
    log = filled(make_log, [20, 20, 20, 20], segment_bytes_max=1024)
    assert log.segment_count > 1
    found = log.read_range(0, 1 << 20)
    assert found is not None
    expected = log.read(0, 1 << 20)
    log.advance_start(log.log_end_offset)  # deletes every sealed segment
    assert sent(found) == expected


def test_a_truncation_changes_the_generation_a_range_was_found_in(make_log: LogFactory) -> None:
    """The replica listener sends a range after finding it; a changed generation after the
    send means the file may have been rewritten under it (the answer is then discarded)."""
    log = filled(make_log, [5, 5])
    found = log.read_range(0, 1 << 20)
    assert found is not None and found.generation == log.generation
    os.close(found.fd)
    log.truncate_to(5)
    assert log.generation != found.generation


def test_a_range_cut_short_has_the_next_window_read_ahead_and_one_at_the_end_none(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader cut short by its byte budget (a follower catching up) comes back for what
    follows: the kernel is asked to read it now (POSIX_FADV_WILLNEED, at most the budget,
    never past the segment's end; on the read-ahead thread, in order); a reader that
    reached the end asks for nothing."""
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this platform")
    advised: queue.Queue[tuple[int, ...]] = queue.Queue()
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *args: advised.put(args))
    log = filled(make_log, [10] * 8)
    whole = log.read_range(0, 1 << 20)  # everything: nothing follows
    last = log.read_range(7 * 10, 1 << 20)  # the last batch: the segment ends with it
    assert whole is not None and last is not None
    first = log.read_range(0, whole.size_bytes // 3)
    assert first is not None
    for found in (whole, last, first):
        os.close(found.fd)
    after = first.position + first.size_bytes
    rest = whole.position + whole.size_bytes - after
    # the thread advises in order: the first advice is the cut-short read's, none before
    assert advised.get(timeout=10) == (
        after,
        min(whole.size_bytes // 3, rest),
        os.POSIX_FADV_WILLNEED,
    )
    assert advised.empty()
