"""The storage benchmark behind ``conveyor bench storage``.

It appends one pre-built batch (``records_per_batch`` records of ``record_bytes`` each)
over and over until ``size_bytes`` of log exist, as a broker does with produce requests:
the broker never re-encodes a batch, it validates the CRC and stamps the offsets. Each
flush policy is measured against a raw baseline in the same run: ``os.write`` of the same
batch bytes to a plain file, fsynced on the same schedule, in two variants:

* ``always``: *serial* fsyncs after every write on the writing thread; *pipelined* keeps
  up to ``pipeline_depth`` writes waiting while one background thread fsyncs whatever has
  been written (group commit, exactly what the log does). The log is driven like a broker
  awaiting acks: at most ``pipeline_depth`` appends wait on ``log.durable()``, in order.
* ``interval``: *serial* fsyncs on the writing thread once ``interval_ms`` has passed;
  *pipelined* fsyncs on a background thread every ``interval_ms`` (what the log does).

The ratio of a policy is the log's rate over the faster of its two baselines, so it never
flatters the log. Every run ends with a final fsync inside the timing, for the log and the
baselines alike. The interval log is then read back sequentially with ``log.read`` in
``read_bytes_max`` steps, from the page cache. See docs/benchmarks.md for the figures.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from conveyor.bench.machine import Machine, describe_machine, peak_rss_bytes
from conveyor.protocol.batch import parse_header, peek_length
from conveyor.protocol.errors import (
    ConveyorError,
    DiskFullError,
    ErrorCode,
    InvalidRequestError,
    StorageError,
)
from conveyor.protocol.records import encode_batch
from conveyor.storage import FlushPolicy, LogConfig, PartitionLog

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
MB: Final = 1_000_000  # rates are in MB/s and GB/s (powers of ten), sizes in MiB

DEFAULT_SIZE_MIB: Final = 1024
DEFAULT_RECORD_BYTES: Final = 100
DEFAULT_RECORDS_PER_BATCH: Final = 1000
DEFAULT_PIPELINE_DEPTH: Final = 8  # appends awaiting durability at once, like a broker
DEFAULT_INTERVAL_MS: Final = 100
DEFAULT_READ_BYTES_MAX: Final = 1 * MIB
RECORD_BYTES_MAX: Final = 1 * MIB
# Free space required beyond the log itself (indexes, filesystem metadata).
_DISK_HEADROOM_BYTES: Final = 64 * MIB

# The targets.
TARGET_APPEND_RATIO_MIN: Final = 0.80
TARGET_INTERVAL_RECORDS_PER_S_MIN: Final = 1_000_000
TARGET_READ_GB_PER_S_MIN: Final = 1.5
TARGET_PEAK_RSS_MIB_MAX: Final = 100

Policy = Literal["always", "interval"]
POLICIES: Final[tuple[Policy, ...]] = ("always", "interval")
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class StorageBenchConfig:
    size_bytes: int = DEFAULT_SIZE_MIB * MIB
    record_bytes: int = DEFAULT_RECORD_BYTES
    records_per_batch: int = DEFAULT_RECORDS_PER_BATCH
    pipeline_depth: int = DEFAULT_PIPELINE_DEPTH
    interval_ms: int = DEFAULT_INTERVAL_MS
    read_bytes_max: int = DEFAULT_READ_BYTES_MAX

    def __post_init__(self) -> None:
        problems = []
        if self.size_bytes < 1:
            problems.append("size_bytes must be >= 1")
        if not 1 <= self.record_bytes <= RECORD_BYTES_MAX:
            problems.append(f"record_bytes must be between 1 and {RECORD_BYTES_MAX}")
        if self.records_per_batch < 1:
            problems.append("records_per_batch must be >= 1")
        if self.pipeline_depth < 1:
            problems.append("pipeline_depth must be >= 1")
        if self.interval_ms < 1:
            problems.append("interval_ms must be >= 1")
        if self.read_bytes_max < 1:
            problems.append("read_bytes_max must be >= 1")
        if problems:
            raise InvalidRequestError("; ".join(problems), code=ErrorCode.INVALID_CONFIG)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_mib": self.size_bytes / MIB,
            "record_bytes": self.record_bytes,
            "records_per_batch": self.records_per_batch,
            "pipeline_depth": self.pipeline_depth,
            "interval_ms": self.interval_ms,
            "read_bytes_max": self.read_bytes_max,
        }


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed run: how much went through and how long it took."""

    records: int
    size_bytes: int
    seconds: float
    fsyncs: int | None = None  # counted for the raw baselines only

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.size_bytes / self.seconds / MB

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "bytes": self.size_bytes,
            "seconds": self.seconds,
            "records_per_s": self.records_per_s,
            "mb_per_s": self.mb_per_s,
            "fsyncs": self.fsyncs,
        }


@dataclass(frozen=True, slots=True)
class AppendComparison:
    """The log under one flush policy against raw writes fsynced on the same schedule."""

    policy: Policy
    log: Measurement
    raw_serial: Measurement
    raw_pipelined: Measurement

    @property
    def baseline_name(self) -> str:
        """The faster raw variant: the log is held to the best the raw file could do."""
        if self.raw_pipelined.mb_per_s >= self.raw_serial.mb_per_s:
            return "raw_pipelined"
        return "raw_serial"

    @property
    def baseline(self) -> Measurement:
        if self.baseline_name == "raw_pipelined":
            return self.raw_pipelined
        return self.raw_serial

    @property
    def ratio(self) -> float:
        return self.log.mb_per_s / self.baseline.mb_per_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": self.log.to_dict(),
            "raw_serial": self.raw_serial.to_dict(),
            "raw_pipelined": self.raw_pipelined.to_dict(),
            "baseline": self.baseline_name,
            "ratio": self.ratio,
            "ratio_raw_serial": self.log.mb_per_s / self.raw_serial.mb_per_s,
            "ratio_raw_pipelined": self.log.mb_per_s / self.raw_pipelined.mb_per_s,
        }


@dataclass(frozen=True, slots=True)
class TargetCheck:
    name: str
    measured: float
    threshold: float
    unit: str
    at_least: bool  # True: measured must be >= threshold; False: strictly below it

    @property
    def passed(self) -> bool:
        if self.at_least:
            return self.measured >= self.threshold
        return self.measured < self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "threshold": self.threshold,
            "unit": self.unit,
            "comparison": ">=" if self.at_least else "<",
            "pass": self.passed,
        }


@dataclass(frozen=True, slots=True)
class StorageBenchResult:
    config: StorageBenchConfig
    machine: Machine
    batch_bytes: int
    batches: int
    appends: tuple[AppendComparison, ...]
    read: Measurement
    peak_rss_bytes: int

    @property
    def records(self) -> int:
        return self.batches * self.config.records_per_batch

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / MIB

    def append_for(self, policy: Policy) -> AppendComparison:
        for comparison in self.appends:
            if comparison.policy == policy:
                return comparison
        raise KeyError(policy)

    def targets(self) -> list[TargetCheck]:
        checks = [
            TargetCheck(f"append ratio {c.policy}", c.ratio, TARGET_APPEND_RATIO_MIN, "x raw", True)
            for c in self.appends
        ]
        interval = self.append_for("interval").log
        checks.append(
            TargetCheck(
                "append records/s interval",
                interval.records_per_s,
                TARGET_INTERVAL_RECORDS_PER_S_MIN,
                "records/s",
                True,
            )
        )
        checks.append(
            TargetCheck(
                "sequential read", self.read.mb_per_s / 1000, TARGET_READ_GB_PER_S_MIN, "GB/s", True
            )
        )
        checks.append(
            TargetCheck("peak RSS", self.peak_rss_mib, TARGET_PEAK_RSS_MIB_MAX, "MiB", False)
        )
        return checks

    def to_dict(self) -> dict[str, Any]:
        targets = self.targets()
        return {
            "benchmark": "storage",
            "config": self.config.to_dict(),
            "machine": self.machine.to_dict(),
            "batch_bytes": self.batch_bytes,
            "batches": self.batches,
            "records": self.records,
            "log_bytes": self.batch_bytes * self.batches,
            "append": {c.policy: c.to_dict() for c in self.appends},
            "read": self.read.to_dict(),
            "peak_rss_mib": self.peak_rss_mib,
            "targets": [t.to_dict() for t in targets],
            "pass": all(t.passed for t in targets),
        }


# ---- running ------------------------------------------------------------------------------


def default_parent_directory() -> Path:
    """$TMPDIR when set, else the current directory: /tmp is often a tmpfs, where an fsync
    costs nothing and the benchmark would measure memory instead of the disk."""
    tmpdir = os.environ.get("TMPDIR")
    return Path(tmpdir) if tmpdir else Path.cwd()


def build_batch(config: StorageBenchConfig) -> bytes:
    """The one batch every append reuses: ``records_per_batch`` keyless records."""
    pattern = bytes(range(256)) * (config.record_bytes // 256 + 1)
    value = pattern[: config.record_bytes]
    batch = encode_batch((None, value) for _ in range(config.records_per_batch))
    limit = LogConfig().batch_bytes_max
    if len(batch) > limit:
        raise InvalidRequestError(
            f"a batch of {config.records_per_batch} records of {config.record_bytes} bytes "
            f"is {len(batch)} bytes, over the log's limit of {limit}: use fewer records "
            "per batch",
            code=ErrorCode.INVALID_CONFIG,
        )
    return batch


def run_storage_bench(
    config: StorageBenchConfig,
    parent_directory: Path | None = None,
    progress: Progress | None = None,
) -> StorageBenchResult:
    """Run every phase in a fresh directory under ``parent_directory``, removed afterwards."""
    report = progress or (lambda _message: None)
    batch = build_batch(config)
    batches = -(-config.size_bytes // len(batch))
    parent = parent_directory or default_parent_directory()
    with _scratch_directory(parent, batches * len(batch)) as work:
        machine = describe_machine(work)
        try:
            appends = []
            read: Measurement | None = None
            for policy in POLICIES:
                comparison, policy_read = _compare_policy(
                    work, policy, batch, batches, config, report
                )
                appends.append(comparison)
                read = policy_read or read
        except OSError as exc:
            raise _storage_error(exc, work) from exc
    assert read is not None, "the interval phase always reads its log back"
    return StorageBenchResult(
        config=config,
        machine=machine,
        batch_bytes=len(batch),
        batches=batches,
        appends=tuple(appends),
        read=read,
        peak_rss_bytes=peak_rss_bytes(),
    )


def _compare_policy(
    work: Path,
    policy: Policy,
    batch: bytes,
    batches: int,
    config: StorageBenchConfig,
    report: Progress,
) -> tuple[AppendComparison, Measurement | None]:
    """Raw serial, raw pipelined, then the log (read back too for ``interval``)."""
    raw: list[Measurement] = []
    for variant in ("serial", "pipelined"):
        path = work / f"raw-{policy}-{variant}.bin"
        measurement = _raw_append(path, policy, variant, batch, batches, config)
        path.unlink()
        report(f"append {policy:<8} raw {variant:<9}  {_rate(measurement)}")
        raw.append(measurement)
    log_directory = work / f"log-{policy}"
    flush = FlushPolicy(policy, config.interval_ms)
    read: Measurement | None = None
    with PartitionLog.open(log_directory, LogConfig(flush=flush)) as partition_log:
        appended = _append_log(partition_log, batch, batches, config)
        report(f"append {policy:<8} log            {_rate(appended)}")
        if policy == "interval":
            read = _read_log(partition_log, config.read_bytes_max)
            report(f"read   sequential              {_rate(read)}")
    shutil.rmtree(log_directory)
    return AppendComparison(policy, appended, raw[0], raw[1]), read


def _rate(measurement: Measurement) -> str:
    return f"{measurement.records_per_s:>12,.0f} records/s  {measurement.mb_per_s:>8,.1f} MB/s"


@contextmanager
def _scratch_directory(parent: Path, log_bytes: int) -> Iterator[Path]:
    try:
        work = Path(tempfile.mkdtemp(prefix="conveyor-bench-storage-", dir=parent))
    except OSError as exc:
        raise StorageError(f"cannot create a benchmark directory in {parent}: {exc}") from exc
    try:
        free_bytes = shutil.disk_usage(work).free
        if free_bytes < log_bytes + _DISK_HEADROOM_BYTES:
            raise DiskFullError(
                f"{work} has {free_bytes // MIB} MiB free; the benchmark needs "
                f"{(log_bytes + _DISK_HEADROOM_BYTES) // MIB} MiB (use --size-mib or --dir)"
            )
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if work.exists():
            log.warning("could not remove the benchmark directory %s", work)


def _storage_error(exc: OSError, work: Path) -> ConveyorError:
    if exc.errno is not None and exc.errno in (28, 122):  # ENOSPC, EDQUOT
        return DiskFullError(f"no space left in {work}: {exc}")
    return StorageError(f"benchmark I/O failed in {work}: {exc}")


# ---- the log ------------------------------------------------------------------------------


def _append_log(
    partition_log: PartitionLog, batch: bytes, batches: int, config: StorageBenchConfig
) -> Measurement:
    """Append ``batches`` times, at most ``pipeline_depth`` awaiting durability, in order."""
    pending: deque[Future[int]] = deque()
    start_offset = partition_log.log_end_offset
    started = time.perf_counter()
    for _ in range(batches):
        if len(pending) >= config.pipeline_depth:
            pending.popleft().result()
        result = partition_log.append(batch)
        pending.append(partition_log.durable(result.last_offset))
    while pending:
        pending.popleft().result()
    partition_log.flush()
    seconds = time.perf_counter() - started
    records = partition_log.log_end_offset - start_offset
    if records != batches * config.records_per_batch:
        raise StorageError(f"appended {batches} batches but the log grew by {records} records")
    return Measurement(records, batches * len(batch), seconds)


def _read_log(partition_log: PartitionLog, read_bytes_max: int) -> Measurement:
    """Read the whole log from its start, ``read_bytes_max`` at a time."""
    offset, end = partition_log.log_start_offset, partition_log.log_end_offset
    size_bytes = 0
    started = time.perf_counter()
    while offset < end:
        data = partition_log.read(offset, read_bytes_max)
        if not data:
            raise StorageError(f"read at offset {offset} returned nothing before {end}")
        size_bytes += len(data)
        offset = _next_offset(data)
    seconds = time.perf_counter() - started
    if size_bytes != partition_log.size_bytes:
        raise StorageError(f"read {size_bytes} bytes of a {partition_log.size_bytes}-byte log")
    return Measurement(end - partition_log.log_start_offset, size_bytes, seconds)


def _next_offset(data: bytes) -> int:
    """The offset after the last of the whole batches in ``data``."""
    position = 0
    while True:
        _, size = peek_length(data, position)
        if position + size >= len(data):
            return parse_header(data, position).next_offset
        position += size


# ---- raw baselines ------------------------------------------------------------------------


def _raw_append(
    path: Path,
    policy: Policy,
    variant: str,
    batch: bytes,
    batches: int,
    config: StorageBenchConfig,
) -> Measurement:
    records = batches * config.records_per_batch
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        started = time.perf_counter()
        if policy == "always" and variant == "serial":
            fsyncs = _raw_always_serial(fd, batch, batches)
        elif policy == "always":
            fsyncs = _raw_always_pipelined(fd, batch, batches, config.pipeline_depth)
        elif variant == "serial":
            fsyncs = _raw_interval_serial(fd, batch, batches, config.interval_ms / 1000)
        else:
            fsyncs = _raw_interval_background(fd, batch, batches, config.interval_ms / 1000)
        seconds = time.perf_counter() - started
    finally:
        os.close(fd)
    return Measurement(records, batches * len(batch), seconds, fsyncs)


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written != len(data):  # regular files write whole buffers unless the disk is full
        view = memoryview(data)
        while written < len(data):
            written += os.write(fd, view[written:])


def _raw_always_serial(fd: int, batch: bytes, batches: int) -> int:
    for _ in range(batches):
        _write_all(fd, batch)
        os.fsync(fd)
    return batches


def _raw_always_pipelined(fd: int, batch: bytes, batches: int, depth: int) -> int:
    committer = _GroupCommitter(fd)
    pending: deque[Future[None]] = deque()
    try:
        for _ in range(batches):
            if len(pending) >= depth:
                pending.popleft().result()
            _write_all(fd, batch)
            pending.append(committer.written())
        while pending:
            pending.popleft().result()
    finally:
        committer.close()
    return committer.fsyncs


def _raw_interval_serial(fd: int, batch: bytes, batches: int, interval_s: float) -> int:
    fsyncs = 0
    last_fsync = time.perf_counter()
    for _ in range(batches):
        _write_all(fd, batch)
        if time.perf_counter() - last_fsync >= interval_s:
            os.fsync(fd)
            fsyncs += 1
            last_fsync = time.perf_counter()
    os.fsync(fd)
    return fsyncs + 1


def _raw_interval_background(fd: int, batch: bytes, batches: int, interval_s: float) -> int:
    stop = threading.Event()
    fsyncs = [0]
    failure: list[OSError] = []

    def fsync_every_interval() -> None:
        try:
            while not stop.wait(interval_s):
                os.fsync(fd)
                fsyncs[0] += 1
        except OSError as exc:
            failure.append(exc)

    thread = threading.Thread(target=fsync_every_interval, name="bench-raw-fsync", daemon=True)
    thread.start()
    try:
        for _ in range(batches):
            _write_all(fd, batch)
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]
    os.fsync(fd)
    return fsyncs[0] + 1


class _GroupCommitter:
    """A background thread that fsyncs everything written so far and resolves the futures
    of the writes it covered: the same group commit as the log, on a plain file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._condition = threading.Condition()
        self._written = 0
        self._waiters: deque[tuple[int, Future[None]]] = deque()
        self._closing = False
        self.fsyncs = 0
        self._thread = threading.Thread(target=self._run, name="bench-group-fsync", daemon=True)
        self._thread.start()

    def written(self) -> Future[None]:
        """Call after each complete write; the future resolves once an fsync covers it."""
        future: Future[None] = Future()
        with self._condition:
            self._written += 1
            self._waiters.append((self._written, future))
            self._condition.notify()
        return future

    def close(self) -> None:
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiters and not self._closing:
                    self._condition.wait()
                if not self._waiters:
                    return
                covered = self._written
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(exc)
                return
            self.fsyncs += 1
            done = []
            with self._condition:
                while self._waiters and self._waiters[0][0] <= covered:
                    done.append(self._waiters.popleft()[1])
            for future in done:
                future.set_result(None)

    def _fail(self, exc: OSError) -> None:
        with self._condition:
            waiters, self._waiters = self._waiters, deque()
        for _, future in waiters:
            future.set_exception(exc)
