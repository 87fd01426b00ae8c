"""read_committed fetch cost with 100,000 aborted transactions in old segments: the
per-segment aborted-transaction indexes (``storage/abortindex.py``) against the one
in-memory list they replaced (``ListIndex`` below, the code before, verbatim in effect),
in one process and one run (docs/benchmarks.md, "Aborted-transaction index").

A log of 1 MiB segments gets ABORTED transactions (a 100 B transactional batch, then its
ABORT marker, 8 producers in turn), then 32 MiB of plain batches, so every aborted one is
in an old segment. Each measurement is the mean of ``--fetches`` lookups (the aborted
transactions of a 64 KiB fetch: [offset, offset + records in 64 KiB)) at the oldest
offset, the middle, and the tail; also a whole fetch (read 64 KiB + the lookup) at the
oldest offset, and the first lookup after a reopen (lazy load of one segment's index).
Medians of ``--runs``, with the load average.

    nice -n 10 .venv/bin/python scripts/bench_txnindex.py [--aborted 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.protocol.batch import TRANSACTIONAL_BIT, parse_header
from conveyor.protocol.records import BatchBuilder, encode_batch
from conveyor.protocol.txn import ABORT, marker_batch, marker_type
from conveyor.storage import LogConfig, PartitionLog
from conveyor.storage.scan import stored_batches

PRODUCERS = 8
PER_APPEND = 50  # (batch, marker) pairs per append call
FETCH_BYTES = 64 * 1024


@dataclass(slots=True)
class ListIndex:
    """Before: every aborted transaction of the partition in one list (at most 100,000),
    a fetch copying the tail of the list from the first one that may overlap."""

    ongoing: dict[int, int] = field(default_factory=dict)
    aborted: list[tuple[int, int, int]] = field(default_factory=list)
    _ends: list[int] = field(default_factory=list)

    def observe(self, pid: int, offset: int, control: bool, marker: int | None) -> None:
        if not control:
            self.ongoing.setdefault(pid, offset)
            return
        first = self.ongoing.pop(pid, None)
        if marker == ABORT and first is not None:
            self.aborted.append((pid, first, offset))
            self._ends.append(offset)
            if len(self.aborted) > 100_000:
                del self.aborted[: len(self.aborted) - 100_000]
                del self._ends[: len(self._ends) - 100_000]

    def aborted_in(self, start: int, end: int) -> list[tuple[int, int, int]]:
        found = []
        for aborted in self.aborted[bisect.bisect_left(self._ends, start) :]:
            if aborted[1] < end:
                found.append(aborted)
        return found


def txn_batch(pid: int) -> bytes:
    builder = BatchBuilder()
    builder.set_producer(pid, 0, 0, transactional=True)
    builder.append(b"x" * 100, timestamp_ms=1)
    return builder.build()


def build(directory: Path, aborted: int) -> tuple[ListIndex, int]:
    """The log, and the old index fed the same batches; returns (index, aborted's end)."""
    config = LogConfig(segment_bytes_max=1024 * 1024, retention_ms=-1)
    log = PartitionLog.open(directory, config)
    old = ListIndex()
    try:
        for start in range(0, aborted, PER_APPEND):
            pids = [(start + i) % PRODUCERS for i in range(min(PER_APPEND, aborted - start))]
            chunk = b"".join(txn_batch(p) + marker_batch(p, 0, False, 0, 1) for p in pids)
            log.append(chunk, allow_control=True)
        old_end = log.log_end_offset
        plain = encode_batch([(None, b"p" * 1000)] * 16)
        while log.size_bytes < (aborted * 180) + 32 * 1024 * 1024:
            log.append(plain)
        for header, data in stored_batches(log.read, 0):
            if header.attributes & TRANSACTIONAL_BIT:
                kind = marker_type(data) if header.is_control else None
                old.observe(header.producer_id, header.base_offset, header.is_control, kind)
            if header.next_offset >= old_end:
                break
    finally:
        log.close()
    return old, old_end


def mean_us(call: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - started) / count * 1e6


def fetch_end(log: PartitionLog, offset: int) -> int:
    """The offset after the batches a 64 KiB fetch at ``offset`` returns."""
    data = log.read(offset, FETCH_BYTES)
    position = end = 0
    while position < len(data):
        header = parse_header(data, position)
        end, position = header.next_offset, position + header.size_bytes
    return end


def one_run(directory: Path, old: ListIndex, old_end: int, fetches: int) -> dict[str, float]:
    started = time.perf_counter()
    log = PartitionLog.open(directory, LogConfig(segment_bytes_max=1024 * 1024))
    results = {"open_ms": (time.perf_counter() - started) * 1000}
    try:
        points = {"oldest": 0, "middle": old_end // 2, "tail": log.log_end_offset - 100}
        ranges = {name: (at, fetch_end(log, at)) for name, at in points.items()}
        start, end = ranges["middle"]
        t0 = time.perf_counter()
        first = log.aborted_in(start, end)  # loads (lazily) the segment's index
        results["first_lookup_after_open_us"] = (time.perf_counter() - t0) * 1e6
        assert [(a.producer_id, a.first_offset, a.last_offset) for a in first] == old.aborted_in(
            start, end
        )
        for name, (start, end) in ranges.items():
            new = [
                (a.producer_id, a.first_offset, a.last_offset) for a in log.aborted_in(start, end)
            ]
            assert new == old.aborted_in(start, end), name
            results[f"{name}_new_us"] = mean_us(
                lambda s=start, e=end: log.aborted_in(s, e), fetches
            )
            results[f"{name}_old_us"] = mean_us(
                lambda s=start, e=end: old.aborted_in(s, e), fetches
            )
        start, end = ranges["oldest"]
        results["fetch_oldest_new_us"] = mean_us(
            lambda: (log.read(start, FETCH_BYTES), log.aborted_in(start, end)), fetches
        )
        results["fetch_oldest_old_us"] = mean_us(
            lambda: (log.read(start, FETCH_BYTES), old.aborted_in(start, end)), fetches
        )
    finally:
        log.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aborted", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fetches", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "p"
        started = time.perf_counter()
        old, old_end = build(directory, args.aborted)
        print(f"built {args.aborted} aborted transactions in {time.perf_counter() - started:.1f} s")
        runs = [one_run(directory, old, old_end, args.fetches) for _ in range(args.runs)]
    print(f"load average {os.getloadavg()}")
    for key in runs[0]:
        values = [run[key] for run in runs]
        shown = [round(v, 1) for v in values]
        print(f"{key:32s} median {statistics.median(values):10.1f}   runs {shown}")
    for name in ("oldest", "middle", "tail", "fetch_oldest"):
        ratio = statistics.median(r[f"{name}_old_us"] for r in runs) / statistics.median(
            r[f"{name}_new_us"] for r in runs
        )
        print(f"{name:32s} before / after {ratio:8.1f}x")


if __name__ == "__main__":
    main()
