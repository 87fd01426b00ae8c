"""Flush policies, durability futures, group commit, clean shutdown and reopen."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest

from conveyor.protocol.errors import ErrorCode, InvalidRequestError, LogTruncatedError
from conveyor.storage import Flusher, FlushPolicy, LogConfig, PartitionLog
from conveyor.storage.flusher import inline_round
from conveyor.storage.log import CLEAN_SHUTDOWN_FILE
from tests.unit.storage.helpers import (
    LogFactory,
    data_end,
    make_batch,
    path_data_end,
    read_all,
    records,
    values_of,
)
from tests.waiting import wait_for

TIMEOUT_S = 10


class FsyncCounter:
    """Wraps os.fsync and os.fdatasync (segments sync with the latter) only to count the
    calls; every call still reaches the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._counting(getattr(os, name)))

    def _counting(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def counting(fd: int) -> None:
            with self._lock:
                self.calls += 1
            real(fd)

        return counting


# ---- always ------------------------------------------------------------------------------


def test_always_durable_resolves_only_after_an_fsync_covering_the_write(
    make_log: LogFactory,
) -> None:
    log = make_log()
    for _ in range(3):
        result = log.append(make_batch(values_of(4)))
        assert log.durable_offset <= result.base_offset  # in the page cache, not yet durable
        durable_offset = log.durable(result.last_offset).result(timeout=TIMEOUT_S)
        assert durable_offset > result.last_offset
        assert log.flushed_offset > result.last_offset
        assert log.durable_offset == log.flushed_offset


def test_always_durable_of_an_already_flushed_offset_resolves_at_once(
    make_log: LogFactory,
) -> None:
    log = make_log()
    result = log.append(make_batch(values_of(2)))
    assert log.flush() == result.last_offset + 1
    future = log.durable(result.base_offset)
    assert future.done()
    assert future.result() == result.last_offset + 1


def test_group_commit_one_fsync_serves_many_appends(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads append, meet at a barrier, then all wait for durability: each round of
    appends needs about one fsync, however fast the disk is."""
    log = make_log()
    threads_count, rounds_count = 8, 30
    barrier = threading.Barrier(threads_count)
    failures: list[BaseException] = []
    counter = FsyncCounter(monkeypatch)

    def writer(index: int) -> None:
        try:
            for i in range(rounds_count):
                result = log.append(make_batch([f"t{index}-{i}".encode()]))
                barrier.wait(timeout=TIMEOUT_S)
                assert log.durable(result.last_offset).result(TIMEOUT_S) > result.last_offset
                assert log.flushed_offset > result.last_offset
        except BaseException as exc:  # handed to the test thread
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S * 3)
    assert not failures, failures
    appends = threads_count * rounds_count
    assert log.log_end_offset == appends
    # one fsync per barrier round, a second now and then when a waiter races a round
    assert counter.calls <= appends // 3, (counter.calls, appends)
    values = sorted(v for chunk in read_all(log) for _, _, v in records(chunk) if v)
    assert values == sorted(
        f"t{t}-{i}".encode() for t in range(threads_count) for i in range(rounds_count)
    )


def test_group_commit_free_running_threads(make_log: LogFactory) -> None:
    log = make_log()
    acked: list[tuple[int, int]] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for i in range(40):
                result = log.append(make_batch(values_of(1 + i % 3, f"w{index}-{i}-")))
                durable = log.durable(result.last_offset).result(TIMEOUT_S)
                assert durable > result.last_offset
                with lock:
                    acked.append(result)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S * 3)
    assert not failures, failures
    covered = sorted(o for base, last in acked for o in range(base, last + 1))
    assert covered == list(range(log.log_end_offset))
    assert log.flushed_offset == log.log_end_offset


def test_durable_of_an_offset_not_in_the_log_fails_instead_of_waiting(
    make_log: LogFactory,
) -> None:
    log = make_log()
    result = log.append(make_batch(values_of(3)))
    log.truncate_to(0)  # another thread cut the write before its caller asked for durability
    error = log.durable(result.last_offset).exception(timeout=TIMEOUT_S)
    assert isinstance(error, LogTruncatedError)
    assert error.code is ErrorCode.LOG_TRUNCATED
    assert error.retriable
    future = log.durable(log.log_end_offset + 5)
    assert isinstance(future.exception(timeout=TIMEOUT_S), LogTruncatedError)
    # and the log still works
    result = log.append(make_batch(values_of(2)))
    assert log.durable(result.last_offset).result(TIMEOUT_S) == 2


def test_waiters_beyond_a_truncation_fail_and_the_others_resolve(tmp_path: Path) -> None:
    flusher = Flusher(threads=1)
    gate = threading.Event()

    def hold_the_flush_thread() -> None:
        gate.wait(TIMEOUT_S)

    flusher.submit(hold_the_flush_thread)  # the log's flush rounds queue up behind this
    log = PartitionLog.open(tmp_path / "log", flusher=flusher)
    try:
        kept = log.append(make_batch(values_of(3)))
        cut = log.append(make_batch(values_of(3)))
        kept_future, cut_future = log.durable(kept.last_offset), log.durable(cut.last_offset)
        assert not kept_future.done()
        assert not cut_future.done()
        log.truncate_to(cut.base_offset)
        error = cut_future.exception(timeout=TIMEOUT_S)
        assert isinstance(error, LogTruncatedError)
        assert not kept_future.done()
        gate.set()
        assert kept_future.result(TIMEOUT_S) == cut.base_offset
    finally:
        gate.set()
        log.close()
        flusher.close()


# ---- interval and never -------------------------------------------------------------------


def test_interval_flushes_in_the_background(make_log: LogFactory) -> None:
    log = make_log(flush=FlushPolicy("interval", 20))
    for i in range(5):
        result = log.append(make_batch(values_of(3, f"i{i}-")))
        future = log.durable(result.last_offset)
        assert future.done()  # durable once written, per the policy
        assert future.result() == log.log_end_offset
        assert log.durable_offset == log.log_end_offset
    wait_for(lambda: log.flushed_offset == log.log_end_offset, TIMEOUT_S, "the interval flush")
    log.append(make_batch(values_of(1)))
    wait_for(lambda: log.flushed_offset == log.log_end_offset, TIMEOUT_S, "the interval flush")


def test_never_leaves_flushing_to_the_os_except_on_roll_and_close(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = make_log(flush=FlushPolicy("never"), segment_bytes_max=1024)
    result = log.append(make_batch(values_of(3)))
    future = log.durable(result.last_offset)
    assert future.done()
    assert future.result() == log.durable_offset == log.log_end_offset == 3
    assert log.flushed_offset == 0
    while log.segment_count == 1:  # a roll flushes the sealed segment in the background
        log.append(make_batch(values_of(3, "r", 100)))
    sealed_end = log.segment_infos()[-1].base_offset
    wait_for(lambda: log.flushed_offset >= sealed_end, TIMEOUT_S, "the rolled segment flushed")
    assert log.flush() == log.log_end_offset
    log.close()
    assert (tmp_path / "log" / CLEAN_SHUTDOWN_FILE).exists()


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("always", FlushPolicy("always")),
        (" NEVER ", FlushPolicy("never")),
        ("interval", FlushPolicy("interval", 100)),
        ("interval:250", FlushPolicy("interval", 250)),
        ("250ms", FlushPolicy("interval", 250)),
    ],
)
def test_flush_policy_parse(text: str, policy: FlushPolicy) -> None:
    assert FlushPolicy.parse(text) == policy


@pytest.mark.parametrize("text", ["sometimes", "interval:", "interval:-5", "0", "ms"])
def test_flush_policy_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        FlushPolicy.parse(text)
    assert caught.value.code is ErrorCode.INVALID_CONFIG


@pytest.mark.parametrize(
    "config",
    [
        {"segment_bytes_max": 1000},
        {"segment_bytes_max": 2**31},
        {"segment_ms_max": 0},
        {"index_interval_bytes": -1},
        {"batch_bytes_max": 60},
        {"retention_bytes": -2},
        {"retention_ms": -2},
    ],
)
def test_log_config_rejects(config: dict[str, int]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        LogConfig(**config)  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.INVALID_CONFIG


# ---- close and reopen ---------------------------------------------------------------------


def test_close_marks_a_clean_shutdown_and_reopen_keeps_everything(
    make_log: LogFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "log"
    log = make_log(segment_bytes_max=1024)
    for i in range(25):
        log.append(make_batch(values_of(2, f"c{i}-", 30)), leader_epoch=i)
    assert log.segment_count > 2
    before = list(read_all(log))
    end = log.log_end_offset
    log.close()
    assert (directory / CLEAN_SHUTDOWN_FILE).exists()
    log.close()  # a second close does nothing
    reopened = make_log(segment_bytes_max=1024)
    assert not (directory / CLEAN_SHUTDOWN_FILE).exists()
    assert reopened.recovered == []
    assert (reopened.log_start_offset, reopened.log_end_offset) == (0, end)
    assert reopened.flushed_offset == end
    assert list(read_all(reopened)) == before
    assert reopened.durable(end - 1).done()
    assert reopened.append(make_batch(values_of(1))) == (end, end)


def test_reopen_without_clean_shutdown_rescans_and_cuts_a_torn_tail(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = make_log(segment_bytes_max=1024)
    for i in range(25):
        log.append(make_batch(values_of(2, f"u{i}-", 30)))
    log.flush()
    before = list(read_all(log))
    end = log.log_end_offset
    # a copy of the directory while the log is open: what a crash leaves (no marker)
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "log", crashed)
    assert not (crashed / CLEAN_SHUTDOWN_FILE).exists()
    active = sorted(crashed.glob("*.log"))[-1]
    with active.open("r+b") as out:  # where the next append would have gone
        out.seek(path_data_end(active))
        out.write(make_batch(values_of(2, "torn"))[:50])
    reopened = make_log(crashed, segment_bytes_max=1024)
    assert [(base, r.dropped_bytes) for base, r in reopened.recovered] == [(int(active.stem), 50)]
    assert reopened.log_end_offset == end
    assert reopened.flushed_offset == end  # what survived recovery was fsynced on open
    assert list(read_all(reopened)) == before


def test_shared_flusher_serves_several_logs(tmp_path: Path) -> None:
    flusher = Flusher(threads=2)
    logs = [PartitionLog.open(tmp_path / f"p{i}", flusher=flusher) for i in range(4)]
    try:
        futures: list[Future[int]] = []
        for i, log in enumerate(logs):
            for _ in range(i + 1):
                result = log.append(make_batch(values_of(2)))
                futures.append(log.durable(result.last_offset))
        for future in futures:
            future.result(TIMEOUT_S)
        assert [log.flushed_offset for log in logs] == [2, 4, 6, 8]
    finally:
        for log in logs:
            log.close()
        flusher.close()


# ---- broker-wide flush rounds (flusher.py) -----------------------------------------------


class FsyncRecorder:
    """Wraps os.fsync and os.fdatasync to remember, per file, how many bytes a *finished*
    sync covered (the data's end when it started: a segment's file may be longer, its
    preallocated tail); every call still reaches the real one. With ``hold_first``, syncs
    on the flush threads wait until the test sets ``gate`` (the caller's own, such as the
    epoch checkpoint an append writes, never wait)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, hold_first: bool = False) -> None:
        self.covered_bytes: dict[str, int] = {}
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()
        self._lock = threading.Lock()
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._recording(getattr(os, name)))

    def _recording(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def recording(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            size_bytes = data_end(fd) if path.endswith(".log") else os.fstat(fd).st_size
            if threading.current_thread().name.startswith("conveyor-flush"):
                self.entered.set()
                self.gate.wait(TIMEOUT_S)
            real(fd)
            with self._lock:
                self.covered_bytes[path] = max(self.covered_bytes.get(path, 0), size_bytes)

        return recording

    def covers(self, path: Path) -> bool:
        """Every byte now in ``path`` was in the file when a finished fsync of it started."""
        with self._lock:
            return self.covered_bytes.get(str(path.resolve()), -1) >= path_data_end(path)


def _segment_path(log: PartitionLog) -> Path:
    (path,) = sorted(log.directory.glob("*.log"))
    return path


@pytest.mark.parametrize("requests_waiting", [None, 1])
def test_concurrent_appends_to_many_logs_share_flush_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, requests_waiting: int | None
) -> None:
    """N logs with a waiter each while a round runs: the next round covers all of them,
    so N produces to N partitions cost far fewer than N rounds. Group commit stays with
    the inline path on (``requests_waiting=1``): a lone request on each of seven logs
    (each alone as far as its caller knows) is queued for the next shared round, never
    fsynced on its caller's thread."""
    partitions = 8
    flusher = Flusher(threads=2, inline_idle_min_s=0)
    logs = [PartitionLog.open(tmp_path / f"p{i}", flusher=flusher) for i in range(partitions)]
    try:
        recorder = ThreadedFsyncRecorder(monkeypatch, hold_first=True)
        first = logs[0].append(make_batch(values_of(2)))
        futures = [logs[0].durable(first.last_offset)]
        assert recorder.entered.wait(TIMEOUT_S)  # round 1 is inside its fsync
        for log in logs[1:]:
            result = log.append(make_batch(values_of(2)))
            futures.append(log.durable(result.last_offset, requests_waiting=requests_waiting))
        assert not any(future.done() for future in futures)
        recorder.gate.set()
        for future in futures:
            assert future.result(TIMEOUT_S) == 2
        assert flusher.rounds < partitions, flusher.rounds
        assert flusher.rounds <= 2, flusher.rounds  # round 1: p0; round 2: the other seven
        assert flusher.inline_rounds == 0
        assert all(name.startswith("conveyor-flush") for name in recorder.threads)
        assert all(recorder.covers(_segment_path(log)) for log in logs)
    finally:
        for log in logs:
            log.close()
        flusher.close()


def test_no_ack_before_its_bytes_are_fsynced_with_a_shared_flusher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers on several logs await durability; at the moment each future resolves (on a
    flush thread, as the broker's ack callback runs), an fsync that started after the
    append must have finished for that log's segment file."""
    flusher = Flusher(threads=2)
    logs = [PartitionLog.open(tmp_path / f"p{i}", flusher=flusher) for i in range(4)]
    recorder = FsyncRecorder(monkeypatch)
    failures: list[str] = []
    paths = [_segment_path(log) for log in logs]

    def writer(index: int) -> None:
        log, path = logs[index], paths[index]
        for i in range(25):
            result = log.append(make_batch(values_of(1 + i % 3, f"w{index}-{i}-")))
            appended_bytes = path_data_end(path)
            future = log.durable(result.last_offset)

            def check(done: Future[int], appended_bytes: int = appended_bytes) -> None:
                covered = recorder.covered_bytes.get(str(path.resolve()), -1)
                if covered < appended_bytes:
                    failures.append(f"{path}: acked at {covered} < {appended_bytes} bytes")

            future.add_done_callback(check)
            future.result(TIMEOUT_S)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(logs))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_S * 3)
        assert not failures, failures[:5]
        assert [log.log_end_offset for log in logs] == [49] * len(logs)
    finally:
        for log in logs:
            log.close()
        flusher.close()


# ---- inline rounds: a small round on the caller's thread (flusher.inline_round) ---------


INLINE_OK = {
    "requests_waiting": 1,
    "busy": False,
    "idle_s": 0.01,
    "files": 1,
    "dir_dirty": False,
    "dirty_bytes": 170,
    "idle_min_s": 0.001,
    "bytes_max": 4096,
}


def test_inline_round_when_one_request_finds_the_flusher_idle_and_the_round_small() -> None:
    assert inline_round(**INLINE_OK)  # type: ignore[arg-type]
    assert inline_round(**{**INLINE_OK, "files": 0, "dirty_bytes": 4096})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"requests_waiting": 2},  # others to serve: their rounds are shared on the threads
        {"requests_waiting": 0},  # nobody waits for this round (acks=1, a roll)
        {"busy": True},  # a round runs or waits: this log joins the next one
        {"idle_s": 0.0005},  # a round just ended: likely one of concurrent requests
        {"files": 2},  # a roll: two segment files
        {"dir_dirty": True},  # a directory entry to fsync
        {"dirty_bytes": 4097},  # a large write-back
    ],
)
def test_inline_round_refused(change: dict[str, object]) -> None:
    assert not inline_round(**{**INLINE_OK, **change})  # type: ignore[arg-type]


class ThreadedFsyncRecorder(FsyncRecorder):
    """Also remembers which thread ran each fsync of a segment file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, hold_first: bool = False) -> None:
        super().__init__(monkeypatch, hold_first=hold_first)
        self.threads: list[str] = []
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._by_thread(getattr(os, name)))

    def _by_thread(self, recording: Callable[[int], None]) -> Callable[[int], None]:
        def by_thread(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".log"):
                self.threads.append(threading.current_thread().name)
            recording(fd)

        return by_thread


def test_an_inline_round_fsyncs_on_the_callers_thread_before_the_future_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline_seen: list[int] = []
    flusher = Flusher(
        threads=2, inline_idle_min_s=0, on_inline=lambda: inline_seen.append(flusher.rounds)
    )
    log = PartitionLog.open(tmp_path / "p0", flusher=flusher)
    try:
        log.flush()  # the new segment file's directory entry: never an inline round
        recorder = ThreadedFsyncRecorder(monkeypatch)
        path = _segment_path(log)
        for i in range(3):
            result = log.append(make_batch(values_of(1, f"r{i}-")))
            future = log.durable(result.last_offset, requests_waiting=1)
            assert future.done()  # flushed on this thread, no hand-off
            assert recorder.covers(path)
            assert future.result() == result.last_offset + 1 == log.flushed_offset
        assert recorder.threads == [threading.current_thread().name] * 3
        assert (flusher.rounds, flusher.inline_rounds) == (3, 3)
        assert inline_seen == [1, 2, 3]  # the broker's metric, once per inline round
    finally:
        log.close()
        flusher.close()


def test_without_a_request_count_or_with_others_waiting_the_round_is_handed_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flusher = Flusher(threads=2, inline_idle_min_s=0)
    log = PartitionLog.open(tmp_path / "p0", flusher=flusher)
    try:
        recorder = ThreadedFsyncRecorder(monkeypatch)
        for waiting in (None, 2):
            result = log.append(make_batch(values_of(1)))
            assert log.durable(result.last_offset, requests_waiting=waiting).result(TIMEOUT_S)
        assert all(name.startswith("conveyor-flush") for name in recorder.threads)
        assert len(recorder.threads) == 2
        assert flusher.inline_rounds == 0
    finally:
        log.close()
        flusher.close()


def test_an_inline_round_never_waits_for_a_held_flush_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncation or retention holds the log's flush lock on a worker thread, maybe for
    long: a lone request's round is handed off instead of blocking its caller on it."""
    flusher = Flusher(threads=2, inline_idle_min_s=0)
    log = PartitionLog.open(tmp_path / "p0", flusher=flusher)
    try:
        recorder = ThreadedFsyncRecorder(monkeypatch)
        result = log.append(make_batch(values_of(1)))
        with log._flush_lock:  # what truncate_to holds
            future = log.durable(result.last_offset, requests_waiting=1)
            assert not future.done()
        assert future.result(TIMEOUT_S) == 1
        assert recorder.threads and recorder.threads[0].startswith("conveyor-flush")
        assert flusher.inline_rounds == 0
    finally:
        log.close()
        flusher.close()


@pytest.mark.parametrize("requests_waiting", [None, 1])
def test_no_ack_before_its_bytes_are_fsynced_with_concurrent_writers_on_one_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, requests_waiting: int | None
) -> None:
    """Four threads append to one log and each waits for its own durability, every one
    allowed to flush inline (as if alone): inline rounds and waiters that arrive during
    them (handed to the flush threads) both resolve a future only once a finished fsync
    covered its bytes."""
    flusher = Flusher(threads=2, inline_idle_min_s=0)
    log = PartitionLog.open(tmp_path / "p0", flusher=flusher)
    recorder = FsyncRecorder(monkeypatch)
    path = _segment_path(log)
    failures: list[str] = []
    lock = threading.Lock()

    def writer(index: int) -> None:
        for i in range(40):
            with lock:  # the size read is this append's end
                log.append(make_batch(values_of(1 + i % 3, f"w{index}-{i}-")))
                appended_bytes = path_data_end(path)
                last = log.log_end_offset - 1

            def check(done: Future[int], appended_bytes: int = appended_bytes) -> None:
                covered = recorder.covered_bytes.get(str(path.resolve()), -1)
                if covered < appended_bytes:
                    failures.append(f"acked at {covered} < {appended_bytes} bytes")

            future = log.durable(last, requests_waiting=requests_waiting)
            future.add_done_callback(check)
            future.result(TIMEOUT_S)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_S * 3)
        assert not failures, failures[:5]
        assert log.flushed_offset == log.log_end_offset
        if requests_waiting is None:
            assert flusher.inline_rounds == 0
    finally:
        log.close()
        flusher.close()
