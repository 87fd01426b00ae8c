"""A hypothesis state machine against a model: random keyed writes (tombstones, keyless
records, idempotent producers), cleanings (with small offset maps for partial passes),
crashes at every step of a swap, and reopens. After every step the log, read from start
to end, must give the model's latest value per key (tombstones honoured), every record at
the offset it was written at, valid CRCs, and each live producer's last sequence."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conveyor.protocol.batch import parse_header
from conveyor.protocol.records import BatchBuilder, decode_batches
from conveyor.storage import LogConfig, PartitionLog, swap
from conveyor.storage.cleaner import CleanerSettings, clean_log
from conveyor.storage.compaction import OFFSET_MAP_ENTRY_BYTES
from tests.unit.storage.helpers import ManualClock

KEYS = [b"a", b"b", b"c", b"d", b"e", b"long-key-" + b"x" * 20, None]
DELETE_RETENTION_MS = 5_000
PRODUCER_EXPIRATION_MS = 60_000
# Where a crash can come during a swap: after the real step, the process dies.
CRASH_POINTS = ("commit", "finish", "fsync_directory", "write_checkpoint")


class SimulatedCrashError(Exception):
    pass


@contextlib.contextmanager
def crash_after(monkeypatch: pytest.MonkeyPatch, point: str, nth: int) -> Iterator[None]:
    """The ``nth`` call of ``swap.<point>`` runs, then raises SimulatedCrashError."""
    real: Callable[..., object] = getattr(swap, point)
    calls = [0]

    def step(*args: object) -> object:
        result = real(*args)
        calls[0] += 1
        if calls[0] == nth:
            raise SimulatedCrashError(point)
        return result

    with monkeypatch.context() as patch:
        patch.setattr(swap, point, step)
        yield


class CleanerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="cleaner-machine-"))
        self.path = self.root / "log"
        self.clock = ManualClock()
        # offset -> (key, value, timestamp); the whole history written
        self.written: dict[int, tuple[bytes | None, bytes | None]] = {}
        self.latest: dict[bytes, tuple[int, bytes | None, int]] = {}  # key -> offset, value, ts
        self.producers: dict[int, tuple[int, int]] = {}  # id -> (next sequence, last ts)
        self.log: PartitionLog | None = None
        self.end = 0
        self.monkeypatch = pytest.MonkeyPatch()

    @initialize(segment_bytes=st.sampled_from([1024, 2048]))
    def open_log(self, segment_bytes: int) -> None:
        self.config = LogConfig(
            segment_bytes_max=segment_bytes,
            segment_ms_max=2000,  # advance_clock rolls segments too
            index_interval_bytes=200,
            cleanup_policy="compact",
            delete_retention_ms=DELETE_RETENTION_MS,
        )
        self.log = self._open()

    def _open(self) -> PartitionLog:
        return PartitionLog.open(self.path, self.config, clock_ms=self.clock)

    @property
    def plog(self) -> PartitionLog:
        assert self.log is not None
        return self.log

    def teardown(self) -> None:
        self.monkeypatch.undo()
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- writes ------------------------------------------------------------------------

    @rule(
        records=st.lists(
            st.tuples(st.sampled_from(KEYS), st.none() | st.binary(max_size=30)),
            min_size=1,
            max_size=8,
        ),
        producer=st.sampled_from([None, 1, 2]),
    )
    def write(self, records: list[tuple[bytes | None, bytes | None]], producer: int | None) -> None:
        self._write(records, producer)

    @rule(
        key_sets=st.lists(st.lists(st.sampled_from(KEYS), min_size=1, max_size=6), max_size=6),
        tombstone=st.booleans(),
    )
    def write_many(self, key_sets: list[list[bytes | None]], tombstone: bool) -> None:
        """Several batches of biggish values: segments fill up and roll."""
        for keys in key_sets:
            value = None if tombstone and len(keys) == 1 else b"v" * 60
            self._write([(key, value) for key in keys], None)

    def _write(
        self, records: list[tuple[bytes | None, bytes | None]], producer: int | None
    ) -> None:
        now = self.clock.now
        sequence = self.producers.get(producer or 0, (0, 0))[0]
        builder = (
            BatchBuilder()
            if producer is None
            else BatchBuilder(producer_id=producer, producer_epoch=0, base_sequence=sequence)
        )
        for key, value in records:
            builder.append(value, key, (), now)
        result = self.plog.append(builder.build())
        assert result.base_offset == self.end
        for index, (key, value) in enumerate(records):
            offset = self.end + index
            self.written[offset] = (key, value)
            if key is not None:
                self.latest[key] = (offset, value, now)
        self.end += len(records)
        if producer is not None:
            self.producers[producer] = (sequence + len(records), now)

    @rule(ms=st.sampled_from([1, 1000, 3000, 10_000]))
    def advance_clock(self, ms: int) -> None:
        self.clock.advance(ms)

    # ---- cleaning ----------------------------------------------------------------------

    def _clean(self, map_entries: int) -> None:
        settings_ = CleanerSettings(
            dedupe_buffer_bytes=map_entries * OFFSET_MAP_ENTRY_BYTES,
            producer_id_expiration_ms=PRODUCER_EXPIRATION_MS,
        )
        stats = clean_log(self.plog, now_ms=self.clock.now, settings=settings_)
        event(f"cleaning removed records: {stats.records_removed > 0}")

    @rule(map_entries=st.sampled_from([1, 3, 1000]))
    def clean(self, map_entries: int) -> None:
        self._clean(map_entries)
        if map_entries == 1000:
            self._check_cleaned_part()

    @rule(point=st.sampled_from(CRASH_POINTS), nth=st.integers(1, 3))
    def clean_and_crash(self, point: str, nth: int) -> None:
        """A SIGKILL during a swap: the files as they are at that moment are what the next
        process finds (copied before the log object does anything else)."""
        with crash_after(self.monkeypatch, point, nth):
            try:
                self._clean(1000)
            except SimulatedCrashError:
                event(f"crashed after {point}")
                crashed = self.root / "crashed"
                shutil.copytree(self.path, crashed)
                with contextlib.suppress(Exception):
                    self.plog.close()
                shutil.rmtree(self.path)
                crashed.rename(self.path)
                (self.path / ".clean-shutdown").unlink(missing_ok=True)
                self.log = self._open()
                assert self.plog.recovered == []

    @rule()
    def reopen(self) -> None:
        self.plog.close()
        self.log = self._open()
        assert self.plog.recovered == []

    # ---- checks ------------------------------------------------------------------------

    def _read(self) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        log = self.plog
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            data = log.read(offset, 1 << 16)
            assert data, f"nothing read at {offset} below the log end {log.log_end_offset}"
            for record in decode_batches(data, verify_crc=True, start_offset=offset):
                yield record.offset, record.key, record.value
            position = 0
            while position < len(data):
                header = parse_header(data, position)
                position += header.size_bytes
                offset = header.next_offset

    def _check_cleaned_part(self) -> None:
        """Right after a full pass: below the cleaned offset each key appears once, and
        no expired tombstone is left."""
        cleaned_offset = self.plog.cleaned_offset
        seen: set[bytes] = set()
        for offset, key, value in self._read():
            if offset >= cleaned_offset:
                break
            assert key is not None, f"keyless record at {offset} survived a cleaning"
            assert key not in seen, f"key {key!r} twice below the cleaned offset"
            seen.add(key)
            if value is None:
                timestamp = self.latest[key][2]
                assert timestamp >= self.clock.now - DELETE_RETENTION_MS

    @invariant()
    def log_matches_the_model(self) -> None:
        if self.log is None:
            return
        assert self.plog.log_end_offset == self.end
        assert self.plog.log_start_offset == 0
        view: dict[bytes, bytes | None] = {}
        previous = -1
        for offset, key, value in self._read():
            assert offset > previous
            previous = offset
            assert self.written[offset] == (key, value), f"record at {offset} changed"
            if key is not None:
                view[key] = value
        live = {k: v for k, v in view.items() if v is not None}
        expected = {k: v for k, (_, v, _) in self.latest.items() if v is not None}
        assert live == expected

    @invariant()
    def live_producers_keep_their_last_sequence(self) -> None:
        if self.log is None:
            return
        last: dict[int, int] = {}
        for header in self.plog.headers(self.plog.log_start_offset):
            if header.producer_id >= 0:
                last[header.producer_id] = header.base_sequence + header.last_offset_delta
        for producer, (next_sequence, timestamp) in self.producers.items():
            if timestamp >= self.clock.now - PRODUCER_EXPIRATION_MS:
                assert last.get(producer) == next_sequence - 1, (producer, last, self.producers)


CleanerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCleanerStateful = CleanerMachine.TestCase
