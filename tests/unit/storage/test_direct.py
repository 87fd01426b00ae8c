"""Appends past the page cache (storage/direct.py): a follower's large replicated appends
land byte for byte as the buffered ones do, at any position, with the file ending where
the batches end; a filesystem that refuses O_DIRECT, a refused write and a failed one."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.errors import DiskFullError
from conveyor.protocol.records import BatchBuilder
from conveyor.storage import direct
from conveyor.storage.direct import ALIGN_BYTES, DIRECT_BYTES_MIN, DirectWriter, open_direct
from tests.unit.storage.helpers import TIMESTAMP_MS, LogFactory, path_data_end, read_all, records


def direct_fd_or_skip(path: Path) -> int:
    fd = open_direct(path)
    if fd is None:
        pytest.skip(f"the filesystem of {path} refuses O_DIRECT")
    return fd


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 3 * ALIGN_BYTES + 7), min_size=1, max_size=8))
def test_appends_at_any_position_write_exactly_the_bytes(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int]
) -> None:
    path = tmp_path_factory.mktemp("direct") / "file"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    direct_fd = direct_fd_or_skip(path)
    writer = DirectWriter()
    expected = b""
    try:
        for n, size in enumerate(sizes):
            data = bytes([n + 1]) * size
            writer.write(direct_fd, fd, len(expected), memoryview(data))
            expected += data
            assert os.fstat(fd).st_size == len(expected)
    finally:
        os.close(direct_fd)
        os.close(fd)
    assert path.read_bytes() == expected


def leader_batches(base_offset: int, count: int, value_bytes: int) -> bytes:
    """One leader batch of ``count`` records (a follower appends such bytes unchanged)."""
    builder = BatchBuilder()
    for n in range(count):
        builder.append(b"%d:" % (base_offset + n) + b"x" * value_bytes, timestamp_ms=TIMESTAMP_MS)
    return builder.build(base_offset=base_offset, partition_leader_epoch=3)


def test_large_replicated_appends_match_what_the_leader_sent(make_log: LogFactory) -> None:
    log = make_log()
    sent: list[bytes] = []
    offset = 0
    # small (buffered) and large (direct) appends, at positions that are not aligned
    for count, value_bytes in [(3, 10), (700, 1500), (1, 5), (900, 1300), (2, 1)]:
        chunk = leader_batches(offset, count, value_bytes)
        log.append_replicated(chunk)
        sent.append(chunk)
        offset += count
    active = log._segments[-1]
    if active._direct_fd is None or active._direct_fd < 0:
        pytest.skip("the filesystem refuses O_DIRECT: every append was buffered")
    assert sum(len(c) >= DIRECT_BYTES_MIN for c in sent) == 2
    assert b"".join(read_all(log)) == b"".join(sent)
    assert active.size_bytes == path_data_end(active.log_path) == sum(map(len, sent))
    directory = log.directory
    log.close()
    assert active.log_path.stat().st_size == sum(map(len, sent))  # no preallocated tail
    reopened = make_log(directory)  # recovery finds every batch whole, nothing after
    assert reopened.log_end_offset == offset
    assert len(records(b"".join(read_all(reopened)))) == offset


def test_a_filesystem_without_o_direct_writes_buffered(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct, "open_direct", lambda _path: None)
    log = make_log()
    chunk = leader_batches(0, 800, 1500)
    log.append_replicated(chunk)
    assert log._segments[-1]._direct_fd == -1
    assert b"".join(read_all(log)) == chunk


def test_a_refused_direct_write_falls_back_to_the_page_cache(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(direct.WRITER, "write", refuse)
    log = make_log()
    first, second = leader_batches(0, 800, 1500), leader_batches(800, 800, 1500)
    log.append_replicated(first)
    log.append_replicated(second)
    assert log._segments[-1]._direct_fd == -1
    assert b"".join(read_all(log)) == first + second


def test_a_failed_direct_write_leaves_no_partial_batch(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log()
    first = leader_batches(0, 3, 10)
    log.append_replicated(first)

    def full(direct_fd: int, fd: int, position: int, data: memoryview) -> None:
        os.pwrite(fd, bytes(data[:5000]), position)  # what fit before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct.WRITER, "write", full)
    with pytest.raises(DiskFullError):
        log.append_replicated(leader_batches(3, 800, 1500))
    assert log.log_end_offset == 3
    assert log._segments[-1].log_path.stat().st_size == len(first)


def test_a_crash_before_the_last_partial_block_leaves_a_tail_that_recovery_cuts(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = make_log()
    first = leader_batches(0, 3, 10)
    log.append_replicated(first)
    log.append_replicated(leader_batches(3, 800, 1500))
    # a copy of the directory while the log is open (no clean-shutdown marker), cut after
    # the whole blocks of the second append: what a crash before its last write leaves
    crashed = tmp_path / "crashed"
    shutil.copytree(log.directory, crashed)
    active = sorted(crashed.glob("*.log"))[-1]
    size = path_data_end(active)  # the file may be longer: its preallocated tail
    with active.open("r+b") as out:
        out.truncate(size - size % ALIGN_BYTES)
    reopened = make_log(crashed)
    assert reopened.log_end_offset == 3
    assert b"".join(read_all(reopened)) == first
