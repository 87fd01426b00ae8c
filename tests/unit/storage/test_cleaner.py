"""The log cleaner on real files: what it keeps, what it removes, when it gives up, the
background thread, the throttle, and copying a compacted log to a follower."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from conveyor.protocol.batch import parse_header
from conveyor.protocol.records import Codec, decode_batches, encode_batch
from conveyor.storage import LogConfig, PartitionLog
from conveyor.storage.cleaner import (
    CleanerSettings,
    CleaningAborted,
    LogCleaner,
    Throttle,
    clean_log,
)
from conveyor.storage.compaction import OFFSET_MAP_ENTRY_BYTES
from tests.unit.storage.helpers import TIMESTAMP_MS, LogFactory, ManualClock
from tests.waiting import wait_for

COMPACT = {"cleanup_policy": "compact", "segment_bytes_max": 1024, "index_interval_bytes": 100}


def put(log: PartitionLog, pairs: list[tuple[bytes | None, bytes | None]], ts: int = 0) -> int:
    batch = encode_batch(pairs, timestamp_ms=ts or TIMESTAMP_MS)
    return log.append(batch).base_offset


def fill(log: PartitionLog, keys: int, rounds: int, ts: int = 0) -> dict[bytes, bytes]:
    """``rounds`` values for each of ``keys`` keys, one batch per record; the latest."""
    latest = {}
    for r in range(rounds):
        for k in range(keys):
            key, value = f"k{k}".encode(), f"r{r}-".encode() * 8
            put(log, [(key, value)], ts)
            latest[key] = value
    return latest


def contents(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    out, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        assert data
        out += [(r.offset, r.key, r.value) for r in decode_batches(data, start_offset=offset)]
        position = 0
        while position < len(data):
            header = parse_header(data, position)
            position += header.size_bytes
            offset = header.next_offset
    return out


def latest_view(log: PartitionLog) -> dict[bytes, bytes | None]:
    view: dict[bytes, bytes | None] = {}
    for _, key, value in contents(log):
        assert key is not None
        view[key] = value
    return view


def test_latest_value_per_key_survives_at_its_offset(make_log: LogFactory) -> None:
    log = make_log(**COMPACT)
    latest = fill(log, keys=5, rounds=20)
    before = {(o, k, v) for o, k, v in contents(log)}
    end, sealed = log.log_end_offset, log.segment_count
    stats = clean_log(log, now_ms=TIMESTAMP_MS)
    assert stats.records_removed > 0 and stats.segments_cleaned == sealed - 1
    after = contents(log)
    assert set(after) <= before  # every survivor is at the offset it was written at
    assert latest_view(log) == latest
    assert log.log_end_offset == end and log.log_start_offset == 0
    assert log.size_bytes < stats.bytes_read
    # what is below the cleaned offset holds each key once
    cleaned = [k for o, k, _ in after if o < log.cleaned_offset]
    assert len(cleaned) == len(set(cleaned))


def test_tombstones_go_after_delete_retention(make_log: LogFactory) -> None:
    log = make_log(**COMPACT, delete_retention_ms=60_000)
    fill(log, keys=3, rounds=5)
    put(log, [(b"k1", None)], ts=TIMESTAMP_MS)
    fill(log, keys=1, rounds=30)  # k0 only: rolls segments past the tombstone
    clean_log(log, now_ms=TIMESTAMP_MS + 60_000)
    view = latest_view(log)
    assert view[b"k1"] is None  # still there: readers have a minute to see the delete
    assert [k for _, k, _ in contents(log)].count(b"k1") == 1
    clean_log(log, now_ms=TIMESTAMP_MS + 60_001)
    assert b"k1" not in latest_view(log)
    assert latest_view(log)[b"k2"] is not None


def test_keyless_records_are_removed_and_compressed_batches_stay_valid(
    make_log: LogFactory,
) -> None:
    log = make_log(**COMPACT)
    for i in range(40):
        batch = encode_batch(
            [(b"a", f"{i}".encode() * 20), (None, b"no key"), (b"b", f"{i}".encode() * 20)],
            codec=Codec.GZIP,
            timestamp_ms=TIMESTAMP_MS,
        )
        log.append(batch)
    clean_log(log, now_ms=TIMESTAMP_MS)
    records = contents(log)
    sealed_end = log.cleaned_offset
    assert all(k is not None for o, k, _ in records if o < sealed_end)
    view = {k: v for _, k, v in records if k is not None}
    assert view == {b"a": b"39" * 20, b"b": b"39" * 20}
    data = log.read(0, 1 << 20)
    assert parse_header(data).codec == Codec.GZIP


def test_a_delete_policy_log_is_left_alone_and_compact_keeps_old_segments(
    make_log: LogFactory, tmp_path: Path, clock: ManualClock
) -> None:
    plain = make_log(tmp_path / "plain", segment_bytes_max=1024, retention_ms=1000)
    fill(plain, keys=2, rounds=30)
    assert clean_log(plain, now_ms=TIMESTAMP_MS).bytes_read == 0
    compact = make_log(tmp_path / "compact", **COMPACT, retention_ms=1000)
    fill(compact, keys=2, rounds=30)
    clock.advance(10_000)
    assert plain.apply_retention() > 0
    assert compact.apply_retention() == 0  # compact only: retention never deletes


def test_a_small_offset_map_cleans_in_several_passes(make_log: LogFactory) -> None:
    log = make_log(**COMPACT)
    latest = fill(log, keys=30, rounds=4)
    small = CleanerSettings(dedupe_buffer_bytes=10 * OFFSET_MAP_ENTRY_BYTES)
    clean_log(log, now_ms=TIMESTAMP_MS, settings=small)
    first = log.cleaned_offset
    assert 0 < first < log.cleaning_view().active_base_offset
    assert latest_view(log) == latest
    while log.cleaned_offset < log.cleaning_view().active_base_offset:
        before = log.cleaned_offset
        clean_log(log, now_ms=TIMESTAMP_MS, settings=small)
        assert log.cleaned_offset > before
    assert latest_view(log) == latest


def test_a_truncation_during_a_cleaning_gives_it_up(
    make_log: LogFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = make_log(**COMPACT)
    latest = fill(log, keys=4, rounds=20)
    real = PartitionLog.swap_cleaned

    def truncate_first(self: PartitionLog, *args: object, **kwargs: object) -> bool:
        self.truncate_to(self.log_end_offset - 1)  # a follower cutting its tail meanwhile
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PartitionLog, "swap_cleaned", truncate_first)
    with pytest.raises(CleaningAborted):
        clean_log(log, now_ms=TIMESTAMP_MS)
    assert not list((tmp_path / "log").glob("*.cleaned"))
    latest[b"k3"] = next(v for _, k, v in reversed(contents(log)) if k == b"k3")
    assert latest_view(log) == latest


def test_the_cleaner_thread_cleans_the_dirtiest_log_when_woken(
    make_log: LogFactory, tmp_path: Path
) -> None:
    quiet = make_log(tmp_path / "quiet", **COMPACT, min_cleanable_dirty_ratio=0.99)
    busy = make_log(tmp_path / "busy", **COMPACT)
    plain = make_log(tmp_path / "plain", segment_bytes_max=1024)
    for log in (quiet, busy, plain):
        fill(log, keys=3, rounds=30)
    cleaner = LogCleaner(CleanerSettings(backoff_ms=60_000), clock_ms=lambda: TIMESTAMP_MS)
    cleaner.add("quiet", quiet)
    cleaner.add("busy", busy)
    cleaner.add("plain", plain)
    clean_log(quiet, now_ms=TIMESTAMP_MS)  # now clean: a ratio of 0 waits
    assert {d.name for d in cleaner.dirty_logs()} == {"quiet", "busy"}
    cleaner.start()
    try:
        wait_for(lambda: cleaner.totals.segments_cleaned > 0, 10, "a first cleaning")
        assert busy.cleaned_offset > 0 and cleaner.totals.records_removed > 0
        assert cleaner.passes == 1
        fill(quiet, keys=3, rounds=30)
        quiet.reconfigure(LogConfig(**COMPACT, min_cleanable_dirty_ratio=0.1))  # type: ignore[arg-type]
        done = cleaner.totals.segments_cleaned
        cleaner.wake()
        wait_for(lambda: cleaner.totals.segments_cleaned > done, 10, "a second cleaning")
    finally:
        cleaner.close()
    assert quiet.cleaned_offset == quiet.cleaning_view().active_base_offset


def test_throttle_sleeps_for_what_exceeds_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(1000, clock=lambda: now[0], sleep=sleep)
    throttle.take(1000)  # the first second's burst
    assert slept == []
    throttle.take(500)
    assert slept == [pytest.approx(0.5)]
    now[0] += 10  # idle time refills at most one second
    throttle.take(1500)
    assert slept[-1] == pytest.approx(0.5)
    Throttle(0, sleep=sleep).take(10**9)  # 0: unlimited
    assert len(slept) == 2


def test_a_follower_copies_a_compacted_log_with_its_gaps(
    make_log: LogFactory, tmp_path: Path
) -> None:
    leader = make_log(tmp_path / "leader", **COMPACT)
    latest = fill(leader, keys=3, rounds=30)
    clean_log(leader, now_ms=TIMESTAMP_MS)
    follower = make_log(tmp_path / "follower", **COMPACT)
    offset = 0
    while offset < leader.log_end_offset:
        data = leader.read(offset, 2000)
        follower.append_replicated(data)
        offset = follower.log_end_offset
    assert contents(follower) == contents(leader)
    assert latest_view(follower) == latest
    follower.close()
    reopened = PartitionLog.open(tmp_path / "follower", LogConfig(**COMPACT))  # type: ignore[arg-type]
    try:
        assert contents(reopened) == contents(leader)
    finally:
        reopened.close()


def test_reconfigure_applies_at_once_without_a_reopen(
    make_log: LogFactory, clock: ManualClock
) -> None:
    log = make_log(segment_bytes_max=1024)
    fill(log, keys=2, rounds=30)
    clock.advance(10_000)
    assert log.apply_retention() == 0
    log.reconfigure(LogConfig(segment_bytes_max=1024, retention_ms=1000))
    assert log.apply_retention() > 0
    log.reconfigure(LogConfig(segment_bytes_max=4096, cleanup_policy="compact"))
    assert log.cleaning_view().config.compacted


def test_the_worker_process_cleans_as_the_thread_does(make_log: LogFactory, tmp_path: Path) -> None:
    """The broker runs the pass in ``python -m conveyor.storage.cleaning`` (never its own
    interpreter lock); the swap stays in the log's process."""
    import threading

    from conveyor.storage.cleaner import _Worker

    here = make_log(tmp_path / "here", **COMPACT)
    there = make_log(tmp_path / "there", **COMPACT)
    latest = fill(here, keys=4, rounds=25)
    assert fill(there, keys=4, rounds=25) == latest
    in_thread = clean_log(here, now_ms=TIMESTAMP_MS)
    in_worker = clean_log(there, now_ms=TIMESTAMP_MS, runner=_Worker(threading.Event()))
    assert (in_worker.records_removed, in_worker.segments_cleaned) == (
        in_thread.records_removed,
        in_thread.segments_cleaned,
    )
    assert contents(there) == contents(here)
    assert there.cleaned_offset == here.cleaned_offset
    assert not list((tmp_path / "there").glob("*.cleaned"))
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(CleaningAborted):
        fill(there, keys=4, rounds=25)
        clean_log(there, now_ms=TIMESTAMP_MS, runner=_Worker(stopped))


def test_a_worker_whose_broker_is_already_gone_exits_at_once() -> None:
    """The broker passes its pid: a worker that starts after its broker died (its parent is
    then someone else) exits before reading its plan, instead of cleaning for nobody and
    racing the restarted broker's worker for the same .cleaned names."""
    import subprocess
    import sys

    not_its_parent = "1"
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor.storage.cleaning", not_its_parent],
        stdin=subprocess.PIPE,  # left open: a worker that went on would block reading it
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.wait(timeout=60) == 1
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate()


def test_a_worker_ends_when_its_broker_is_killed_mid_pass() -> None:
    """A broker killed while its worker runs (here: a stand-in parent, SIGKILLed once the
    worker waits for the rest of its plan, on a pipe this test still holds open) takes
    the worker with it: nothing is left cleaning for nobody."""
    import os
    import signal
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "w = subprocess.Popen([sys.executable, '-m', 'conveyor.storage.cleaning',"
            " str(os.getpid())], stdin=int(sys.argv[1]), stdout=subprocess.DEVNULL)\n"
            "print(w.pid, flush=True)\n"
            "time.sleep(600)\n",
            str(read_end),
        ],
        pass_fds=(read_end,),
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(read_end)
    worker_pid = 0

    def proc(name: str) -> str:
        with open(f"/proc/{worker_pid}/{name}") as file:
            return file.read()

    def reading_its_plan() -> bool:
        # blocked in read(0, ...): past its start-up checks (read is 0 on x86-64, 63 on
        # arm64), so only the kernel's parent-death signal can end it now
        fields = proc("syscall").split()
        return fields[:2] in (["0", "0x0"], ["63", "0x0"])

    def gone() -> bool:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return True
        return proc("stat").rsplit(")", 1)[1].split()[0] == "Z"  # a zombie: gone too

    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        wait_for(reading_its_plan, 30, "the worker to wait for its plan")
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
        wait_for(gone, 30, "the orphaned worker to end")
    finally:
        os.close(write_end)
        if parent.stdout is not None:
            parent.stdout.close()
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if worker_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker_pid, signal.SIGKILL)
