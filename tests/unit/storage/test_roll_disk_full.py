"""A full disk while a segment rolls (the sealed segment's last time-index entry, the new
segment's aborted-transaction index file) or while a new leader epoch is recorded (the
leader-epoch checkpoint) is DISK_FULL, as for an append, and changes nothing: it is done
on the next append once there is space. Found by the transactional chaos workload (seed
13, ``disk-full`` with 4 KiB segments): the OSError escaped as a 500 INTERNAL_ERROR and
killed a follower's replica fetch task."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from conveyor.protocol.errors import DiskFullError, StorageError
from conveyor.protocol.records import BatchBuilder
from conveyor.protocol.txn import marker_batch
from conveyor.storage import LogConfig, PartitionLog
from conveyor.storage.abortindex import AbortedIndex
from conveyor.storage.epochs import EpochCache
from conveyor.storage.index import OffsetIndex, TimeIndex
from tests.unit.storage.helpers import (
    TIMESTAMP_MS,
    LogFactory,
    make_batch,
    read_all,
    records,
    values_of,
)


def _failing(code: int) -> Any:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError(code, "injected")

    return fail


@pytest.mark.parametrize(
    ("owner", "method"),
    [(AbortedIndex, "rewrite"), (TimeIndex, "maybe_append")],
    ids=["new-segment-aborted-index", "sealed-segment-time-index"],
)
def test_a_full_disk_while_rolling_is_disk_full_and_the_roll_happens_later(
    make_log: LogFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: type, method: str
) -> None:
    log = make_log(segment_bytes_max=1024)
    batch = make_batch(values_of(4, "x", 50))
    for _ in range(3):
        log.append(batch)  # the next one rolls
    before = (log.log_end_offset, log.segment_count)
    monkeypatch.setattr(owner, method, _failing(errno.ENOSPC))
    with pytest.raises(DiskFullError):
        log.append(batch)
    assert (log.log_end_offset, log.segment_count) == before
    monkeypatch.undo()  # space is back
    log.append(batch)
    assert log.segment_count == before[1] + 1
    assert [o for chunk in read_all(log) for o, _, _ in records(chunk)] == list(range(16))
    log.close()
    reopened = make_log(segment_bytes_max=1024)
    assert [o for chunk in read_all(reopened) for o, _, _ in records(chunk)] == list(range(16))


def test_another_failure_while_rolling_is_a_storage_error(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(segment_bytes_max=1024)
    batch = make_batch(values_of(4, "x", 50))
    for _ in range(3):
        log.append(batch)
    monkeypatch.setattr(AbortedIndex, "rewrite", _failing(errno.EIO))
    with pytest.raises(StorageError) as raised:
        log.append(batch)
    assert not isinstance(raised.value, DiskFullError)


def test_a_full_disk_while_recording_a_new_epoch_is_disk_full_and_changes_nothing(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log()
    batch = make_batch(values_of(2))
    log.append(batch, leader_epoch=1)
    monkeypatch.setattr(EpochCache, "persist", _failing(errno.ENOSPC))
    with pytest.raises(DiskFullError):
        log.append(batch, leader_epoch=2)
    assert (log.log_end_offset, log.epochs.latest_epoch) == (2, 1)
    monkeypatch.undo()
    log.append(batch, leader_epoch=2)
    assert log.epochs.end_offset_for(1, log.log_end_offset) == (1, 2)
    assert log.epochs.latest_epoch == 2
    log.close()
    assert make_log().epochs.latest_epoch == 2  # and on disk


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts descriptors in /proc")
def test_a_full_disk_while_recovery_rewrites_an_index_is_disk_full_and_leaks_nothing(
    make_log: LogFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a 240 s chaos campaign (seed 37, ``disk-full`` then ``kill``): a broker
    restarted on a full disk rebuilt a segment's offset index while reopening its logs,
    and the raw ENOSPC ended its start (the heartbeat task died: the broker never
    registered, even once space was back). Now the open is DISK_FULL, closes what it had
    opened, and succeeds when tried again with space."""
    log = make_log(segment_bytes_max=1024)
    batch = make_batch(values_of(4, "x", 50))
    for _ in range(8):
        log.append(batch)
    assert log.segment_count > 2
    log.close()
    directory = tmp_path / "log"
    for index in sorted(directory.glob("*.index"))[:2]:
        index.unlink()  # the next open must rebuild them
    before = _open_fds()
    monkeypatch.setattr(OffsetIndex, "rewrite", _failing(errno.ENOSPC))
    with pytest.raises(DiskFullError, match="no space to open"):
        PartitionLog.open(directory, LogConfig(segment_bytes_max=1024))
    assert _open_fds() == before
    monkeypatch.undo()  # space is back
    reopened = make_log(segment_bytes_max=1024)
    assert [o for chunk in read_all(reopened) for o, _, _ in records(chunk)] == list(range(32))


def _txn_batch(producer_id: int, count: int, value_bytes: int) -> bytes:
    builder = BatchBuilder()
    builder.set_producer(producer_id, 0, 0, transactional=True)
    for i in range(count):
        builder.append(b"v%d:" % i + b"." * value_bytes, timestamp_ms=TIMESTAMP_MS)
    return builder.build()


def test_after_a_failed_roll_the_still_active_segment_takes_an_abort_and_no_stray_segment_stays(
    make_log: LogFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transactional chaos seed 59 (a full disk at a roll, 2026-12-04): the failed roll
    left the new segment's empty ``.log`` behind; a smaller batch then fit in the sealed,
    still active segment, and its ABORT marker's index rewrite raised after the marker was
    in the log, so the follower believed the append failed (its log end ran one ahead of
    its fetch position), and the next open found the stray segment overlapping."""
    log = make_log(segment_bytes_max=1024)
    big = _txn_batch(7, 4, 200)
    log.append(big)
    log.append(big)  # the next big one rolls
    directory = log.directory
    before = sorted(p.name for p in directory.iterdir())
    monkeypatch.setattr(AbortedIndex, "rewrite", _failing(errno.ENOSPC))
    with pytest.raises(DiskFullError):
        log.append(big)
    assert sorted(p.name for p in directory.iterdir()) == before  # no stray new segment
    end = log.log_end_offset
    # the marker fits in the sealed segment: written, and the append must say so
    result = log.append(marker_batch(7, 0, False, 0, 1), allow_control=True)
    assert result.base_offset == end and log.log_end_offset == end + 1
    monkeypatch.undo()  # space is back
    log.append(big)  # rolls now
    crashed = tmp_path / "crashed"
    shutil.copytree(directory, crashed)  # an unclean stop
    reopened = make_log(crashed, segment_bytes_max=1024)
    assert reopened.log_end_offset == log.log_end_offset
    offsets = [o for chunk in read_all(reopened) for o, _, _ in records(chunk)]
    assert offsets == [o for o in range(log.log_end_offset) if o != end]  # the marker: control
    assert [(a.producer_id, a.last_offset) for a in reopened.aborted_in(0, end + 1)] == [(7, end)]
