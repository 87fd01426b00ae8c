"""Leader-epoch cache: the KIP-101 answers, persistence, crash leftovers, truncation."""

from __future__ import annotations

from pathlib import Path

from conveyor.storage.epochs import CHECKPOINT_FILE, UNDEFINED, EpochCache, EpochEntry
from tests.unit.storage.helpers import LogFactory, make_batch, values_of


def test_end_offset_for_matches_the_worked_example(tmp_path: Path) -> None:
    cache = EpochCache(tmp_path, [EpochEntry(0, 0), EpochEntry(2, 120), EpochEntry(5, 300)])
    assert cache.end_offset_for(2, 420) == (2, 300)
    assert cache.end_offset_for(3, 420) == (2, 300)
    assert cache.end_offset_for(5, 420) == (5, 420)
    assert cache.end_offset_for(9, 420) == (5, 420)
    assert cache.end_offset_for(0, 420) == (0, 120)


def test_an_epoch_older_than_any_known_is_undefined(tmp_path: Path) -> None:
    cache = EpochCache(tmp_path, [EpochEntry(3, 10)])
    assert cache.end_offset_for(2, 50) == (UNDEFINED, UNDEFINED)
    assert EpochCache(tmp_path, []).end_offset_for(0, 0) == (UNDEFINED, UNDEFINED)


def test_assign_persists_and_ignores_older_epochs(tmp_path: Path) -> None:
    cache = EpochCache(tmp_path, [])
    assert cache.assign(1, 0)
    assert not cache.assign(1, 5)
    assert not cache.assign(0, 7)
    assert cache.assign(4, 9)
    assert EpochCache.load(tmp_path, 100).entries == [EpochEntry(1, 0), EpochEntry(4, 9)]


def test_an_epoch_that_wrote_nothing_is_replaced(tmp_path: Path) -> None:
    cache = EpochCache(tmp_path, [])
    cache.assign(1, 0)
    cache.assign(2, 10)
    cache.assign(3, 10)
    assert cache.entries == [EpochEntry(1, 0), EpochEntry(3, 10)]


def test_load_drops_entries_beyond_the_log_end_and_garbage(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).write_text("0 0\nnot a line\n2 50\n1 60\n4 80\n")
    cache = EpochCache.load(tmp_path, 80)
    # "1 60" goes backwards (never written by us); "4 80" starts at the log end (a crash
    # after the checkpoint, before the batch).
    assert cache.entries == [EpochEntry(0, 0), EpochEntry(2, 50)]
    assert EpochCache.load(tmp_path, 80).entries == cache.entries  # rewritten


def test_the_log_keeps_the_cache_on_append_replication_and_truncation(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = make_log()
    log.append(make_batch(values_of(3)), leader_epoch=1)
    log.append(make_batch(values_of(2)), leader_epoch=1)
    log.append(make_batch(values_of(4)), leader_epoch=3)
    assert log.epochs.entries == [EpochEntry(1, 0), EpochEntry(3, 5)]
    assert log.end_offset_for_epoch(1) == (1, 5)
    assert log.end_offset_for_epoch(2) == (1, 5)
    assert log.end_offset_for_epoch(3) == (3, 9)
    log.truncate_to(5)
    assert log.epochs.entries == [EpochEntry(1, 0)]
    assert log.end_offset_for_epoch(3) == (1, 5)
    # A follower copying these batches byte for byte learns the same epochs.
    follower = make_log(tmp_path / "follower")
    follower.append_replicated(log.read(0, 1 << 20))
    assert follower.epochs.entries == [EpochEntry(1, 0)]


def test_a_new_leader_assigns_its_epoch_at_its_log_end(make_log: LogFactory) -> None:
    log = make_log()
    log.append(make_batch(values_of(3)), leader_epoch=2)
    log.assign_epoch(7)
    assert log.latest_epoch == 7
    assert log.end_offset_for_epoch(2) == (2, 3)
    assert log.end_offset_for_epoch(7) == (7, 3)


def test_reopen_keeps_the_cache_and_rebuilds_a_missing_one(
    make_log: LogFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "log"
    log = make_log(directory)
    log.append(make_batch(values_of(2)), leader_epoch=0)
    log.append(make_batch(values_of(2)), leader_epoch=6)
    log.close()
    assert make_log(directory).epochs.entries == [EpochEntry(0, 0), EpochEntry(6, 2)]
    make_log(directory).close()
    (directory / CHECKPOINT_FILE).unlink()
    assert make_log(directory).epochs.entries == [EpochEntry(0, 0), EpochEntry(6, 2)]


def test_truncating_everything_clears_the_cache(make_log: LogFactory) -> None:
    log = make_log()
    log.append(make_batch(values_of(2)), leader_epoch=4)
    log.truncate_to(0)
    assert log.epochs.entries == []
    assert log.latest_epoch == UNDEFINED


def test_reset_to_empties_the_log_and_restarts_at_an_offset(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = make_log()
    log.append(make_batch(values_of(5)), leader_epoch=2)
    log.reset_to(100)
    assert (log.log_start_offset, log.log_end_offset) == (100, 100)
    assert log.epochs.entries == []
    log.append_replicated(_batch_at(100, epoch=3))
    assert log.log_end_offset == 103
    assert log.epochs.entries == [EpochEntry(3, 100)]
    log.close()
    reopened = make_log(tmp_path / "log")
    assert (reopened.log_start_offset, reopened.log_end_offset) == (100, 103)


def _batch_at(base_offset: int, *, epoch: int) -> bytes:
    from conveyor.protocol.batch import stamp_prefix

    batch = make_batch(values_of(3))
    length = int.from_bytes(batch[8:12], "big")
    return stamp_prefix(base_offset, length, epoch) + batch[16:]
