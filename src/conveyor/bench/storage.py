"""The storage benchmark behind ``conveyor bench storage``.

It appends one pre-built batch (``records_per_batch`` records of ``record_bytes`` each)
over and over until ``size_bytes`` of log exist, as a broker does with produce requests:
the broker never re-encodes a batch, it validates the CRC and stamps the offsets. Under
``always`` the log is driven like a broker awaiting acks: at most ``pipeline_depth``
appends wait on ``log.durable()`` at once, resolved in order, so group commit can work.
Under ``interval`` ``durable()`` resolves at once and a background thread fsyncs.

Each policy is measured against raw baselines in the same run (:mod:`conveyor.bench.raw`:
the same batch bytes, ``os.write`` to a plain file, fsynced on the same schedule, serial
and pipelined). The three writers take turns in ``rounds`` rounds, rotating who goes
first, and each turn ends with everything it wrote fsynced, inside the timing. The ratio
of a policy compares the log with the *faster* baseline (so it never flatters the log)
round by round, and takes the median: on a shared disk one slow stretch would otherwise
decide the result by landing on one writer's turn.
The interval log is then read back sequentially with ``log.read`` in ``read_bytes_max``
steps, from the page cache. Figures and analysis: docs/benchmarks.md.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from conveyor.bench.machine import Machine, describe_machine, peak_rss_bytes
from conveyor.bench.raw import VARIANTS, Variant, raw_append
from conveyor.bench.storage_defaults import (
    DEFAULT_PIPELINE_DEPTH,
    DEFAULT_RECORD_BYTES,
    DEFAULT_RECORDS_PER_BATCH,
    DEFAULT_ROUNDS,
    DEFAULT_SIZE_MIB,
    MIB,
)
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

MB: Final = 1_000_000  # rates are in MB/s and GB/s (powers of ten), sizes in MiB

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
WRITERS: Final[tuple[str, ...]] = ("log", "raw_serial", "raw_pipelined")
_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class StorageBenchConfig:
    size_bytes: int = DEFAULT_SIZE_MIB * MIB
    record_bytes: int = DEFAULT_RECORD_BYTES
    records_per_batch: int = DEFAULT_RECORDS_PER_BATCH
    pipeline_depth: int = DEFAULT_PIPELINE_DEPTH
    interval_ms: int = DEFAULT_INTERVAL_MS
    read_bytes_max: int = DEFAULT_READ_BYTES_MAX
    rounds: int = DEFAULT_ROUNDS

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
        if self.rounds < 1:
            problems.append("rounds must be >= 1")
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
            "rounds": self.rounds,
        }


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed run: how much went through and how long it took."""

    records: int
    size_bytes: int
    seconds: float
    fsyncs: int | None = None  # counted for the raw baselines only
    round_seconds: tuple[float, ...] = ()  # one per round, when the run had turns

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
            "round_seconds": list(self.round_seconds),
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
        """The log's rate over the baseline's: the median of the per-round ratios."""
        return paired_ratio(self.log, self.baseline)

    @property
    def ratio_total(self) -> float:
        """The same from the totals, which one slow turn can swing."""
        return self.log.mb_per_s / self.baseline.mb_per_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": self.log.to_dict(),
            "raw_serial": self.raw_serial.to_dict(),
            "raw_pipelined": self.raw_pipelined.to_dict(),
            "baseline": self.baseline_name,
            "ratio": self.ratio,
            "ratio_total": self.ratio_total,
            "ratio_raw_serial": paired_ratio(self.log, self.raw_serial),
            "ratio_raw_pipelined": paired_ratio(self.log, self.raw_pipelined),
        }


def paired_ratio(log_run: Measurement, raw_run: Measurement) -> float:
    """Median over rounds of raw seconds / log seconds (both moved the same bytes in a round,
    one right after the other). A disk that turns slow for a while slows whichever writer
    holds the turn; the median of these paired ratios shrugs that off, a ratio of totals
    does not. Without rounds, the ratio of the totals."""
    pairs = zip(log_run.round_seconds, raw_run.round_seconds, strict=True)
    ratios = [raw_s / log_s for log_s, raw_s in pairs]
    if not ratios:
        return raw_run.seconds / log_run.seconds
    return statistics.median(ratios)


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
    with _scratch_directory(parent, len(WRITERS) * batches * len(batch)) as work:
        machine = describe_machine(work)
        try:
            appends = []
            read: Measurement | None = None
            for policy in POLICIES:
                comparison, policy_read = _compare_policy(
                    work, policy, batch=batch, batches=batches, config=config, report=report
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
    *,
    batch: bytes,
    batches: int,
    config: StorageBenchConfig,
    report: Progress,
) -> tuple[AppendComparison, Measurement | None]:
    """The log and both raw variants, interleaved in rounds whose order rotates, so that
    drift in the disk's speed (other tenants, writeback) hits all three alike. The
    ``interval`` log is then read back."""
    totals = {writer: Timing() for writer in WRITERS}
    paths = {variant: work / f"raw-{policy}-{variant}.bin" for variant in VARIANTS}
    fds = {variant: os.open(path, _NEW_FILE, 0o644) for variant, path in paths.items()}
    log_directory = work / f"log-{policy}"
    flush = FlushPolicy(policy, config.interval_ms)
    read: Measurement | None = None
    try:
        with PartitionLog.open(log_directory, LogConfig(flush=flush)) as partition_log:
            for round_index, count in enumerate(_split(batches, config.rounds)):
                for writer in _rotated(WRITERS, round_index):
                    if writer == "log":
                        seconds = _append_log(partition_log, batch, count, config.pipeline_depth)
                        totals[writer].add(seconds, 0)
                        continue
                    variant: Variant = "serial" if writer == "raw_serial" else "pipelined"
                    run = raw_append(
                        fds[variant],
                        policy,
                        variant,
                        batch,
                        count,
                        depth=config.pipeline_depth,
                        interval_s=config.interval_ms / 1000,
                    )
                    totals[writer].add(run.seconds, run.fsyncs)
            _check_appended(partition_log, batches * config.records_per_batch)
            _close_and_remove(fds, paths)  # their page cache goes before the read
            if policy == "interval":
                read = _read_log(partition_log, config.read_bytes_max)
    finally:
        _close_and_remove(fds, paths)
    shutil.rmtree(log_directory)
    records, size_bytes = batches * config.records_per_batch, batches * len(batch)
    log_run, serial, pipelined = (
        Measurement(
            records,
            size_bytes,
            sum(totals[w].round_seconds),
            None if w == "log" else totals[w].fsyncs,
            tuple(totals[w].round_seconds),
        )
        for w in WRITERS
    )
    for name, measured in (("log", log_run), ("raw serial", serial), ("raw pipelined", pipelined)):
        report(f"append {policy:<8} {name:<13}  {_rate(measured)}")
    if read is not None:
        report(f"read   sequential              {_rate(read)}")
    return AppendComparison(policy, log_run, serial, pipelined), read


@dataclass(slots=True)
class Timing:
    round_seconds: list[float] = field(default_factory=list)
    fsyncs: int = 0

    def add(self, seconds: float, fsyncs: int) -> None:
        self.round_seconds.append(seconds)
        self.fsyncs += fsyncs


def _rotated(writers: tuple[str, ...], by: int) -> tuple[str, ...]:
    by %= len(writers)
    return writers[by:] + writers[:by]


def _split(batches: int, rounds: int) -> list[int]:
    """``batches`` cut into at most ``rounds`` near-equal, non-empty parts."""
    rounds = min(rounds, batches)
    share, extra = divmod(batches, rounds)
    return [share + (1 if i < extra else 0) for i in range(rounds)]


def _close_and_remove(fds: dict[Variant, int], paths: dict[Variant, Path]) -> None:
    for variant in list(fds):
        os.close(fds.pop(variant))
        paths[variant].unlink(missing_ok=True)


def _rate(measurement: Measurement) -> str:
    return f"{measurement.records_per_s:>12,.0f} records/s  {measurement.mb_per_s:>8,.1f} MB/s"


@contextmanager
def _scratch_directory(parent: Path, data_bytes: int) -> Iterator[Path]:
    try:
        work = Path(tempfile.mkdtemp(prefix="conveyor-bench-storage-", dir=parent))
    except OSError as exc:
        raise StorageError(f"cannot create a benchmark directory in {parent}: {exc}") from exc
    try:
        free_bytes = shutil.disk_usage(work).free
        if free_bytes < data_bytes + _DISK_HEADROOM_BYTES:
            raise DiskFullError(
                f"{work} has {free_bytes // MIB} MiB free; the benchmark needs "
                f"{(data_bytes + _DISK_HEADROOM_BYTES) // MIB} MiB (use --size-mib or --dir)"
            )
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if work.exists():
            log.warning("could not remove the benchmark directory %s", work)


def _storage_error(exc: OSError, work: Path) -> ConveyorError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left in {work}: {exc}")
    return StorageError(f"benchmark I/O failed in {work}: {exc}")


# ---- the log ------------------------------------------------------------------------------


def _append_log(partition_log: PartitionLog, batch: bytes, batches: int, depth: int) -> float:
    """Seconds to append ``batches`` times, at most ``depth`` awaiting durability (in order),
    and to flush at the end."""
    pending: deque[Future[int]] = deque()
    started = time.perf_counter()
    for _ in range(batches):
        if len(pending) >= depth:
            pending.popleft().result()
        result = partition_log.append(batch)
        pending.append(partition_log.durable(result.last_offset))
    while pending:
        pending.popleft().result()
    partition_log.flush()
    return time.perf_counter() - started


def _check_appended(partition_log: PartitionLog, records: int) -> None:
    grown = partition_log.log_end_offset - partition_log.log_start_offset
    if grown != records:
        raise StorageError(f"appended {records} records but the log holds {grown}")


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
