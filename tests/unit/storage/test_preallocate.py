"""The active segment's file is extended ahead of its data (segment.PREALLOCATE_BYTES), so
an append does not change the file's size and its fsync has no size change to commit;
the tail of zeros never reaches a reader, is cut when the segment is sealed or closed,
and recovery cuts it after a crash without counting it as lost data."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from conveyor.storage import segment as segment_module
from conveyor.storage.log import CLEAN_SHUTDOWN_FILE
from conveyor.storage.recovery import load_segments
from conveyor.storage.segment import PREALLOCATE_BYTES
from tests.unit.storage.helpers import (
    LogFactory,
    make_batch,
    path_data_end,
    read_all,
    records,
    values_of,
)


def _log_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def _values(data: bytes) -> list[bytes | None]:
    return [value for _, _, value in records(data)]


@pytest.fixture
def synced_at_size(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """The file sizes at which each file was fdatasynced (every call still syncs)."""
    sizes: dict[str, list[int]] = {}
    real = os.fdatasync

    def recording(fd: int) -> None:
        sizes.setdefault(os.readlink(f"/proc/self/fd/{fd}"), []).append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    return sizes


def test_appends_land_inside_the_preallocated_file_and_reads_stop_at_the_data(
    make_log: LogFactory,
) -> None:
    log = make_log()
    first = make_batch(values_of(3, "a"))
    log.append(first)
    (path,) = _log_files(log.directory)
    allocated = path.stat().st_size
    assert allocated == PREALLOCATE_BYTES  # one step from the first append's position
    second = make_batch(values_of(2, "b"))
    log.append(second)
    log.flush()
    # the second append did not change the file's size: its fsync commits no size change
    assert path.stat().st_size == allocated
    active = log._segments[-1]
    assert active.size_bytes == path_data_end(path) == len(first) + len(second)
    assert [r[2] for r in records(b"".join(read_all(log)))] == values_of(3, "a") + values_of(2, "b")
    assert log.read(log.log_end_offset, 1 << 20) == b""


def test_a_clean_close_cuts_the_tail_and_the_log_reopens_without_a_rescan(
    make_log: LogFactory, synced_at_size: dict[str, list[int]]
) -> None:
    log = make_log()
    data = make_batch(values_of(5))
    log.append(data)
    directory = log.directory
    log.close()
    (path,) = _log_files(directory)
    assert path.stat().st_size == len(data)
    assert len(data) in synced_at_size[str(path.resolve())]  # the cut synced, by the close
    assert (directory / CLEAN_SHUTDOWN_FILE).exists()
    reopened = make_log(directory)
    assert reopened.recovered == []
    assert reopened.log_end_offset == 5
    reopened.append(make_batch(values_of(1)))  # extended again, once active
    assert path.stat().st_size == len(data) + PREALLOCATE_BYTES


def test_a_roll_cuts_the_sealed_segments_tail_and_syncs_it_in_the_rolls_flush(
    make_log: LogFactory, synced_at_size: dict[str, list[int]]
) -> None:
    log = make_log(segment_bytes_max=4096)
    batches = [make_batch(values_of(20, f"r{i}-", 40)) for i in range(12)]
    for data in batches:
        log.append(data)
    log.flush()
    paths = _log_files(log.directory)
    assert len(paths) > 2
    for path in paths[:-1]:  # sealed: the file ends at its data, synced so
        assert path.stat().st_size == path_data_end(path)
        assert path.stat().st_size in synced_at_size[str(path.resolve())]
    active = paths[-1]
    # never extended past a whole segment (a step of 1 MiB would be cut at each roll)
    assert path_data_end(active) < active.stat().st_size <= path_data_end(active) + 4096
    assert _values(b"".join(read_all(log))) == _values(b"".join(batches))


def test_a_crash_leaves_the_tail_and_recovery_cuts_it_as_no_loss(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = make_log(segment_bytes_max=4096)
    batches = [make_batch(values_of(20, f"c{i}-", 40)) for i in range(7)]
    for data in batches:
        log.append(data)
    log.flush()
    crashed = tmp_path / "crashed"
    shutil.copytree(log.directory, crashed)  # open: no marker, the active tail in place
    active = _log_files(crashed)[-1]
    assert active.stat().st_size > path_data_end(active)
    reopened = make_log(crashed, segment_bytes_max=4096)
    assert reopened.recovered == []  # zeros are not lost data: no warning, nothing dropped
    assert reopened.log_end_offset == log.log_end_offset
    assert active.stat().st_size == path_data_end(active)
    assert _values(b"".join(read_all(reopened))) == _values(b"".join(batches))


def test_a_sealed_segments_zero_tail_is_kept_apart_from_lost_offsets(
    make_log: LogFactory, tmp_path: Path
) -> None:
    """A crash can lose a roll's cut of the sealed segment (not yet synced): zeros after
    its last batch, with the next segment following on, are that cut. Zeros where offsets
    are missing before the next segment are lost writes: the segments after them cannot
    follow on and are deleted, as after any torn segment."""
    log = make_log(segment_bytes_max=4096)
    for i in range(12):
        log.append(make_batch(values_of(20, f"s{i}-", 40)))
    log.close()
    paths = _log_files(log.directory)
    assert len(paths) >= 3
    with paths[0].open("ab") as out:  # the roll's cut, undone
        out.write(b"\0" * 3000)
    (log.directory / CLEAN_SHUTDOWN_FILE).unlink()
    segments, recovered = load_segments(log.directory, 4096, clean=False, now_ms=0)
    assert [s.base_offset for s in segments] == [int(p.stem) for p in paths]
    assert recovered == []
    assert paths[0].stat().st_size == segments[0].size_bytes
    data = paths[0].read_bytes()
    last = segments[0].last_batch_base_offset()
    cut = next(p for p, h in segments[0].iter_headers(0, len(data)) if h.base_offset == last)
    for segment in segments:
        segment.close()

    # now zeros in place of the first segment's last batch: its offsets are missing
    with paths[0].open("r+b") as out:
        out.seek(cut)
        out.write(b"\0" * (len(data) - cut))
    segments, recovered = load_segments(log.directory, 4096, clean=False, now_ms=0)
    try:
        assert [s.base_offset for s in segments] == [int(paths[0].stem)]
        ((base, result),) = recovered
        assert base == int(paths[0].stem)
        assert result.dropped_bytes == len(data) - cut
        assert "should be" in result.reason
        assert not paths[1].exists()
    finally:
        for segment in segments:
            segment.close()


def test_without_fallocate_appends_write_as_before(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment_module.os, "posix_fallocate", refuse)
    log = make_log()
    data = make_batch(values_of(4))
    log.append(data)
    log.flush()
    (path,) = _log_files(log.directory)
    assert path.stat().st_size == len(data)
    assert records(b"".join(read_all(log))) == records(data)


def test_a_truncation_cuts_the_tail_and_appends_extend_the_file_again(
    make_log: LogFactory,
) -> None:
    log = make_log()
    kept = make_batch(values_of(3, "k"))
    log.append(kept)
    log.append(make_batch(values_of(3, "t")))
    log.truncate_to(3)
    (path,) = _log_files(log.directory)
    assert path.stat().st_size == len(kept)
    again = make_batch(values_of(2, "n"))
    log.append(again)
    assert path.stat().st_size == len(kept) + PREALLOCATE_BYTES
    assert records(b"".join(read_all(log))) == records(kept) + [
        (3 + offset, key, value) for offset, key, value in records(again)
    ]
    assert os.path.getsize(path) > path_data_end(path)
