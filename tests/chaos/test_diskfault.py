"""The nemesis's disk faults on real partition directories written by the storage engine,
and what the engine makes of them when it reopens the directory."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from conveyor.chaos import diskfault
from conveyor.protocol.records import encode_batch
from conveyor.storage import LogConfig, PartitionLog
from conveyor.storage.log import CLEAN_SHUTDOWN_FILE

CONFIG = LogConfig(segment_bytes_max=4096, index_interval_bytes=256)


def write_log(directory: Path, batches: int = 150) -> list[tuple[int, str]]:
    """``batches`` batches of two records each (values ``v{offset}``), log closed cleanly."""
    written = []
    with PartitionLog.open(directory, CONFIG) as log:
        for _ in range(batches):
            offset = log.log_end_offset
            values = [f"v{offset}", f"v{offset + 1}"]
            log.append(encode_batch([(b"k", v.encode()) for v in values]))
            written += [(offset, values[0]), (offset + 1, values[1])]
        log.flush()
    (directory / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)  # reopen as after a crash
    return written


def reopen(directory: Path) -> PartitionLog:
    return PartitionLog.open(directory, CONFIG)


def test_batch_spans_cover_a_segment_and_stop_at_a_partial_batch(tmp_path: Path) -> None:
    write_log(tmp_path)
    first = diskfault.segments(tmp_path)[0]
    data = first.read_bytes()
    spans = diskfault.batch_spans(data)
    assert spans[0].position == 0 and spans[-1].position + spans[-1].size_bytes == len(data)
    assert diskfault.batch_spans(data[:-1]) == spans[:-1]


def test_power_loss_cuts_every_segment_back_to_the_durable_offset(tmp_path: Path) -> None:
    written = write_log(tmp_path)
    assert len(diskfault.segments(tmp_path)) > 2
    dropped = diskfault.lose_unsynced(tmp_path, 30)
    assert dropped > 0
    read = diskfault.read_replica(tmp_path)
    assert read.problems == [] and read.records[-1][0] == 29
    assert [(o, v) for o, _k, v in read.records] == written[:30]
    with reopen(tmp_path) as log:
        assert log.log_end_offset == 30


def test_power_loss_drops_a_batch_that_straddles_the_durable_offset(tmp_path: Path) -> None:
    write_log(tmp_path)
    diskfault.lose_unsynced(tmp_path, 31)  # offsets 30-31 are one batch: all of it goes
    assert diskfault.read_replica(tmp_path).records[-1][0] == 29


def test_a_torn_tail_is_cut_by_recovery(tmp_path: Path) -> None:
    written = write_log(tmp_path)
    assert diskfault.tear_tail(tmp_path, random.Random(1)) > 0
    with reopen(tmp_path) as log:
        assert log.log_end_offset == len(written)


def test_a_flipped_bit_is_seen_by_the_replica_reader_and_cut_by_recovery(tmp_path: Path) -> None:
    write_log(tmp_path)
    seed = 0
    while "flipped" not in (what := diskfault.corrupt(tmp_path, random.Random(seed))):
        seed += 1  # that draw garbled an index: draw again
    read = diskfault.read_replica(tmp_path)
    assert read.problems, what
    with reopen(tmp_path) as log:
        end = log.log_end_offset
    assert end == read.records[-1][0] + 1 if read.records else end == 0
    assert diskfault.read_replica(tmp_path).problems == []


def test_a_torn_write_lands_at_the_data_end_of_a_preallocated_segment(tmp_path: Path) -> None:
    """A crashed broker's active segment runs on in zeros (its preallocation): the torn
    write goes where the next append would have, not after the zeros."""
    live = tmp_path / "live"
    with PartitionLog.open(live, CONFIG) as log:
        for i in range(5):
            log.append(encode_batch([(b"k", f"v{i}".encode())]))
        log.flush()
        crashed = tmp_path / "crashed"
        shutil.copytree(live, crashed)  # while open: what a SIGKILL leaves
    active = diskfault.segments(crashed)[-1]
    assert active.read_bytes().endswith(b"\0" * 1024)
    cut = diskfault.tear_tail(crashed, random.Random(3))
    assert cut > 0
    with reopen(crashed) as log:
        assert log.log_end_offset == 5
        ((_, result),) = log.recovered
        assert 0 < result.dropped_bytes <= cut  # the zeros after it are not counted


def test_corruption_targets_the_last_segment_even_when_it_is_empty(tmp_path: Path) -> None:
    """A roll whose first write failed leaves an empty last segment: recovery rescans that
    one, not the sealed one before it, so the fault must not flip a bit there (txn chaos
    seed 59 counted such a flip as a corrupt replica)."""
    write_log(tmp_path)
    sealed = {p: p.read_bytes() for p in diskfault.segments(tmp_path)}
    last = diskfault.segments(tmp_path)[-1]
    empty = tmp_path / f"{int(last.stem) + 10_000:020d}.log"
    empty.touch()
    for seed in range(20):
        assert "flipped" not in diskfault.corrupt(tmp_path, random.Random(seed))
    assert {p: p.read_bytes() for p in sealed} == sealed
