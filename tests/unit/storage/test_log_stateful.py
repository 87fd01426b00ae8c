"""A hypothesis state machine drives one PartitionLog through appends, reads, truncations,
retention, deleting records up to an offset (the log start inside a batch), flushes and
reopens (clean and after a crash), checked against a plain list."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from conveyor.protocol.errors import CorruptBatchError, OffsetOutOfRangeError
from conveyor.protocol.records import encode_batch
from conveyor.storage import FlushPolicy, LogConfig, PartitionLog, segments_to_delete
from conveyor.storage.log import CLEAN_SHUTDOWN_FILE
from tests.unit.storage.helpers import ManualClock, batch_bounds, records

Pair = tuple[bytes | None, bytes | None]


@dataclass(frozen=True)
class ModelBatch:
    base_offset: int
    pairs: tuple[Pair, ...]
    timestamp_ms: int
    size_bytes: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + len(self.pairs) - 1


values = st.binary(max_size=24)
keys = st.none() | st.binary(min_size=1, max_size=6)
pairs = st.lists(st.tuples(keys, values), min_size=1, max_size=20)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory: Path | None = None
        self.clock = ManualClock()
        self.batches: list[ModelBatch] = []
        self.start = self.end = 0
        self.log: PartitionLog | None = None

    @initialize(
        segment_bytes_max=st.sampled_from([1024, 2048, 4096]),
        index_interval_bytes=st.sampled_from([0, 100, 1000]),
        retention_bytes=st.sampled_from([-1, 1500, 5000]),
        flush=st.sampled_from(["always", "never"]),
    )
    def open_log(
        self, segment_bytes_max: int, index_interval_bytes: int, retention_bytes: int, flush: str
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="conveyor-stateful-")) / "log"
        self.config = LogConfig(
            segment_bytes_max=segment_bytes_max,
            segment_ms_max=30_000,
            index_interval_bytes=index_interval_bytes,
            retention_bytes=retention_bytes,
            retention_ms=60_000,
            flush=FlushPolicy.parse(flush),
        )
        self.log = self._open()

    @property
    def path(self) -> Path:
        assert self.directory is not None
        return self.directory

    def _open(self) -> PartitionLog:
        return PartitionLog.open(self.path, self.config, clock_ms=self.clock)

    @property
    def plog(self) -> PartitionLog:
        assert self.log is not None
        return self.log

    def teardown(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.directory is not None:
            shutil.rmtree(self.directory.parent, ignore_errors=True)

    # ---- model helpers -------------------------------------------------------------------

    def batch_holding(self, offset: int) -> int:
        for i, batch in enumerate(self.batches):
            if batch.base_offset <= offset <= batch.last_offset:
                return i
        raise AssertionError(f"no model batch holds {offset}")

    # ---- rules ---------------------------------------------------------------------------

    @rule(
        request=st.lists(pairs, min_size=1, max_size=3), wait=st.booleans(), ms=st.integers(0, 9000)
    )
    def append(self, request: list[list[Pair]], wait: bool, ms: int) -> None:
        self.clock.advance(ms)
        bodies = [encode_batch(p, timestamp_ms=self.clock.now) for p in request]
        result = self.plog.append(b"".join(bodies))
        count = sum(len(p) for p in request)
        assert result == (self.end, self.end + count - 1)
        for p, body in zip(request, bodies, strict=True):
            self.batches.append(ModelBatch(self.end, tuple(p), self.clock.now, len(body)))
            self.end += len(p)
        if wait:
            assert self.plog.durable(result.last_offset).result(10) > result.last_offset

    @rule(request=pairs, position=st.integers(16, 10_000), xor=st.integers(1, 255))
    def append_corrupt(self, request: list[Pair], position: int, xor: int) -> None:
        body = bytearray(encode_batch(request, timestamp_ms=self.clock.now))
        body[position % (len(body) - 16) + 16] ^= xor  # magic, CRC or CRC-covered bytes
        size_bytes = self.plog.size_bytes
        with pytest.raises(CorruptBatchError):
            self.plog.append(bytes(body))
        assert self.plog.size_bytes == size_bytes

    @rule(data=st.data(), max_bytes=st.integers(0, 5000))
    def read(self, data: st.DataObject, max_bytes: int) -> None:
        offset = data.draw(st.integers(self.start, self.end), label="offset")
        got = self.plog.read(offset, max_bytes)
        if offset == self.end:
            assert got == b""
            return
        first = self.batch_holding(offset)
        bounds = batch_bounds(got)
        expected = self.batches[first : first + len(bounds)]
        assert bounds == [(b.base_offset, b.last_offset) for b in expected]
        assert len(got) <= max(max_bytes, expected[0].size_bytes)
        want = [(b.base_offset + i, k, v) for b in expected for i, (k, v) in enumerate(b.pairs)]
        assert records(got) == want

    @rule(data=st.data())
    def read_out_of_range(self, data: st.DataObject) -> None:
        offset = data.draw(
            st.integers(max(0, self.start - 20), self.start - 1)
            if self.start > 0
            else st.integers(self.end + 1, self.end + 20),
            label="offset",
        )
        with pytest.raises(OffsetOutOfRangeError) as caught:
            self.plog.read(offset, 1000)
        assert (caught.value.log_start_offset, caught.value.log_end_offset) == (
            self.start,
            self.end,
        )

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(max(0, self.start - 10), self.end + 5), label="offset")
        self.plog.truncate_to(offset)
        if offset >= self.end:
            return
        if offset <= self.start:
            self.batches, self.start, self.end = [], offset, offset
            return
        cut = self.batch_holding(offset)
        if self.batches[cut].base_offset <= self.start:
            # the batch holding the offset holds the start too: emptied, restarted there
            self.batches, self.end = [], self.start
            return
        self.end = self.batches[cut].base_offset
        del self.batches[cut:]

    @rule(ms=st.integers(0, 120_000))
    def retention(self, ms: int) -> None:
        self.clock.advance(ms)
        infos = self.plog.segment_infos()
        expected = segments_to_delete(
            infos,
            retention_bytes=self.config.retention_bytes,
            retention_ms=self.config.retention_ms,
            now_ms=self.clock.now,
        )
        assert self.plog.apply_retention() == expected
        if expected == 0:
            return
        first = self.end if expected == len(infos) else infos[expected].base_offset
        assert first == self.end or any(b.base_offset == first for b in self.batches)
        self.start = max(self.start, first)  # records deleted inside a segment stay deleted
        self.batches = [b for b in self.batches if b.last_offset >= self.start]
        # timestamps only grow: had the newest batch expired, every segment would have gone
        assert all(b.timestamp_ms >= self.clock.now - 60_000 for b in self.batches[-1:])

    @rule(data=st.data())
    def advance_start(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(max(0, self.start - 3), self.end + 3), label="offset")
        if offset > self.end:
            with pytest.raises(OffsetOutOfRangeError):
                self.plog.advance_start(offset)
            return
        assert self.plog.advance_start(offset) == max(offset, self.start)
        self.start = max(offset, self.start)
        self.batches = [b for b in self.batches if b.last_offset >= self.start]
        # every segment but the one holding the start (or the empty active one) is gone
        infos = self.plog.segment_infos()
        assert infos[0].base_offset <= self.start
        assert len(infos) == 1 or infos[1].base_offset > self.start

    @rule()
    def flush(self) -> None:
        assert self.plog.flush() == self.end
        assert self.plog.flushed_offset == self.end
        assert self.plog.durable_offset == self.end

    @rule()
    def reopen(self) -> None:
        self.plog.close()
        assert (self.path / CLEAN_SHUTDOWN_FILE).exists()
        self.log = self._open()
        assert self.plog.recovered == []

    @rule()
    def reopen_after_crash(self) -> None:
        """Copy the files of the open log (what a killed process leaves) and open the copy."""
        crashed = self.path.with_name("crashed")
        shutil.copytree(self.path, crashed)
        self.plog.close()
        shutil.rmtree(self.path)
        crashed.rename(self.path)
        self.log = self._open()
        assert self.plog.recovered == []  # nothing was torn: nothing dropped
        assert self.plog.flushed_offset == self.end

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def offset_for_timestamp(self, data: st.DataObject) -> None:
        low, high = self.batches[0].timestamp_ms, self.batches[-1].timestamp_ms
        target = data.draw(st.integers(low - 1, high + 1), label="timestamp")
        expected = next((b.base_offset for b in self.batches if b.timestamp_ms >= target), None)
        assert self.plog.offset_for_timestamp(target) == expected

    @rule()
    def read_everything(self) -> None:
        got: list[tuple[int, bytes | None, bytes | None]] = []
        offset = self.start
        while offset < self.end:
            chunk = self.plog.read(offset, 3000)
            got += records(chunk)
            offset = batch_bounds(chunk)[-1][1] + 1
        assert got == [
            (b.base_offset + i, k, v) for b in self.batches for i, (k, v) in enumerate(b.pairs)
        ]

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def offsets_match_the_model(self) -> None:
        if self.log is None:
            return
        assert (self.plog.log_start_offset, self.plog.log_end_offset) == (self.start, self.end)
        assert self.plog.durable_offset <= self.end
        assert self.plog.flushed_offset <= self.end


LogMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPartitionLogStateful = LogMachine.TestCase
