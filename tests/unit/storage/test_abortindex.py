"""The per-segment aborted-transaction index (``abortindex.py``, ``txnrecovery.py``):
its file format, and a log's read_committed answers against a model through random
transactional writes, aborts, commits, segment rolls, retention, follower truncation,
clean and unclean restarts and damaged index files."""

from __future__ import annotations

import random
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.protocol.records import BatchBuilder, encode_batch
from conveyor.protocol.txn import marker_batch
from conveyor.storage import LogConfig, PartitionLog
from conveyor.storage import log as log_module
from conveyor.storage.abortindex import (
    ENTRY_BYTES,
    AbortedTxn,
    decode_entries,
    decode_header,
    encode_entry,
    encode_header,
)
from conveyor.storage.cleaner import clean_log
from conveyor.storage.log import CLEAN_SHUTDOWN_FILE

PRODUCERS = 4


def txn_batch(producer_id: int, count: int, timestamp_ms: int, key: bytes | None = None) -> bytes:
    builder = BatchBuilder()
    builder.set_producer(producer_id, 0, 0, transactional=True)
    for i in range(count):
        builder.append(b"v%d" % i, key=key, timestamp_ms=timestamp_ms)
    return builder.build()


@dataclass
class Model:
    """What the log holds, batch by batch: (base offset, last offset, producer id, kind)
    with kind "data", "plain", "commit" or "abort"; the answers are replayed from all of
    it (the log's indexes keep what retention deleted only through their headers)."""

    batches: list[tuple[int, int, int, str]] = field(default_factory=list)

    def replay(self) -> tuple[list[tuple[int, int, int]], dict[int, int]]:
        ongoing: dict[int, int] = {}
        aborted: list[tuple[int, int, int]] = []
        for base, _, pid, kind in self.batches:
            if kind == "data":
                ongoing.setdefault(pid, base)
            elif kind in ("commit", "abort"):
                first = ongoing.pop(pid, None)
                if kind == "abort" and first is not None:
                    aborted.append((pid, first, base))
        return aborted, ongoing

    def aborted_in(self, start: int, end: int) -> list[tuple[int, int, int]]:
        aborted, _ = self.replay()
        return [a for a in aborted if a[2] >= start and a[1] < end] if start < end else []


def answers(log: PartitionLog, start: int, end: int) -> list[tuple[int, int, int]]:
    return [(a.producer_id, a.first_offset, a.last_offset) for a in log.aborted_in(start, end)]


def damage_an_index(directory: Path, config: LogConfig, rng: random.Random) -> None:
    """Truncate or flip a byte of one segment's index, or delete it (never the first
    segment's above offset 0: what was open before it is gone with it, as in Kafka)."""
    log = PartitionLog.open(directory, config)
    infos = log.segment_infos()
    log.close()
    candidates = [i for i, info in enumerate(infos) if i > 0 or info.base_offset == 0]
    if not candidates:
        return
    path = directory / f"{infos[rng.choice(candidates)].base_offset:020d}.txnindex"
    data = bytearray(path.read_bytes())
    choice = rng.randrange(3)
    if choice == 0:
        path.write_bytes(data[: rng.randrange(len(data))])
    elif choice == 1:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(data)
    else:
        path.unlink()


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.integers(0, PRODUCERS - 1), st.integers(1, 3)),
        st.tuples(st.just("plain"), st.just(-1), st.integers(1, 3)),
        st.tuples(st.sampled_from(["commit", "abort"]), st.integers(0, PRODUCERS - 1)),
        st.tuples(st.just("abort"), st.integers(0, PRODUCERS - 1)),
        st.tuples(
            st.sampled_from(["restart", "crash", "damage", "retention", "truncate"]),
            st.integers(0, 2**16),
        ),
    ),
    min_size=5,
    max_size=70,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, seed=st.integers(0, 2**16), loaded_max=st.sampled_from([0, 3, 100_000]))
def test_answers_match_the_model(ops: list[tuple[object, ...]], seed: int, loaded_max: int) -> None:
    """``loaded_max``: the sealed segments' entries kept in memory (0: none after each
    lookup, so every lookup reads files again)."""
    rng = random.Random(seed)
    config = LogConfig(segment_bytes_max=1024, retention_ms=-1)
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(log_module, "ABORTED_LOADED_MAX", loaded_max),
    ):
        directory = Path(tmp) / "p"
        log = PartitionLog.open(directory, config)
        model = Model()
        try:
            for op in ops:
                log = apply(op, log, model, directory=directory, config=config, rng=rng)
                check(log, model, rng)
            check(log, model, rng, queries=20)
        finally:
            log.close()


def apply(
    op: tuple[object, ...],
    log: PartitionLog,
    model: Model,
    *,
    directory: Path,
    config: LogConfig,
    rng: random.Random,
) -> PartitionLog:
    kind = op[0]
    if kind in ("data", "plain"):
        pid, count = int(op[1]), int(op[2])  # type: ignore[call-overload]
        filler = rng.randrange(0, 200)
        batch = (
            txn_batch(pid, count, 1) if kind == "data" else encode_batch([(None, b"x" * filler)])
        )
        result = log.append(batch)
        model.batches.append((result.base_offset, result.last_offset, pid, str(kind)))
    elif kind in ("commit", "abort"):
        pid = int(op[1])  # type: ignore[call-overload]
        marker = marker_batch(pid, 0, kind == "commit", 0, 1)
        result = log.append(marker, allow_control=True)
        model.batches.append((result.base_offset, result.last_offset, pid, str(kind)))
    elif kind in ("restart", "crash", "damage"):
        log.close()
        if kind != "restart":
            (directory / CLEAN_SHUTDOWN_FILE).unlink()
        if kind == "damage":
            damage_an_index(directory, config, rng)
        log = PartitionLog.open(directory, config)
    elif kind == "retention" and log.log_end_offset > log.log_start_offset:
        log.advance_start(rng.randint(log.log_start_offset, log.log_end_offset))
    elif kind == "truncate":
        bases = [b[0] for b in model.batches if b[0] > log.log_start_offset]
        if bases:
            cut = rng.choice(bases)
            log.truncate_to(cut)
            model.batches = [b for b in model.batches if b[0] < cut]
    return log


def check(log: PartitionLog, model: Model, rng: random.Random, queries: int = 3) -> None:
    start_offset, end = log.log_start_offset, log.log_end_offset
    _, ongoing = model.replay()
    assert log.open_transactions() == ongoing
    assert log.last_stable_offset(end) == min([end, *ongoing.values()])
    for _ in range(queries):
        start = rng.randint(start_offset, end)
        upper = rng.randint(start, end + 2)
        assert answers(log, start, upper) == model.aborted_in(start, upper), (start, upper)


def test_the_file_is_kafkas_entries_after_a_header(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "p")
    try:
        log.append(txn_batch(7, 2, 1))  # 0-1
        log.append(txn_batch(8, 1, 1))  # 2, still open at the abort of 7
        log.append(marker_batch(7, 0, False, 0, 1), allow_control=True)  # 3
    finally:
        log.close()
    data = (tmp_path / "p" / f"{0:020d}.txnindex").read_bytes()
    header = decode_header(data)
    assert header == ({}, 16)
    assert len(data) == 16 + ENTRY_BYTES
    # Kafka's AbortedTxn: version 0, producer id, first, last, last stable offset
    assert data[16:50] == bytes.fromhex(
        "0000" + "0000000000000007" + "0000000000000000" + "0000000000000003" + "0000000000000002"
    )
    assert decode_entries(data[16:], 0, 4) == [AbortedTxn(7, 0, 3, 2)]


def test_open_transactions_at_a_segments_base_are_in_its_header(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes_max=1024)
    log = PartitionLog.open(tmp_path / "p", config)
    try:
        log.append(txn_batch(5, 1, 1))  # 0: producer 5 opens
        while log.segment_count < 2:
            log.append(encode_batch([(None, b"x" * 300)]))
        base = log.segment_infos()[-1].base_offset
        log.append(marker_batch(5, 0, False, 0, 1), allow_control=True)
        marker = log.log_end_offset - 1
    finally:
        log.close()
    data = (tmp_path / "p" / f"{base:020d}.txnindex").read_bytes()
    assert decode_header(data) == ({5: 0}, 12 + 16 + 4)
    # The first segment's index is lost: the second's header still knows where 5 began.
    (tmp_path / "p" / f"{base:020d}.txnindex").write_bytes(data[:-3])
    (tmp_path / "p" / f"{0:020d}.txnindex").unlink()
    reopened = PartitionLog.open(tmp_path / "p", config)
    try:
        assert reopened.aborted_in(0, 1) == [AbortedTxn(5, 0, marker, marker + 1)]
    finally:
        reopened.close()


def test_a_cleaned_segment_keeps_the_entries_of_the_segments_it_replaces(
    tmp_path: Path,
) -> None:
    """Compaction keeps every marker, so every aborted transaction keeps its entry even
    when cleaning removed its records (as Kafka's cleaner does while the marker stays)."""
    config = LogConfig(segment_bytes_max=1024, cleanup_policy="compact", retention_ms=-1)
    log = PartitionLog.open(tmp_path / "p", config)
    expected = []
    try:
        for round_ in range(30):
            pid = round_ % 3
            first = log.append(txn_batch(pid, 2, 1, key=b"k")).base_offset
            last = log.append(marker_batch(pid, 0, round_ % 2 == 1, 0, 1), allow_control=True)
            if round_ % 2 == 0:
                expected.append((pid, first, last.base_offset))
        assert log.segment_count > 2
        before = answers(log, 0, log.log_end_offset)
        assert before == expected
        stats = clean_log(log, now_ms=10**13)
        assert stats.segments_cleaned >= 1 and stats.records_removed > 0
        assert answers(log, 0, log.log_end_offset) == before
    finally:
        log.close()
    reopened = PartitionLog.open(tmp_path / "p", config)
    try:
        assert answers(reopened, 0, reopened.log_end_offset) == before
    finally:
        reopened.close()


@given(st.binary(max_size=200), st.integers(0, 100), st.integers(0, 200))
def test_decoding_garbage_never_raises(data: bytes, base: int, end: int) -> None:
    header = decode_header(data)
    assert header is None or header[1] <= len(data)
    entries = decode_entries(data, base, end)
    assert entries is None or all(base <= e.last_offset < end for e in entries)


@given(
    st.dictionaries(st.integers(0, 2**62), st.integers(0, 2**62), max_size=5),
    st.lists(st.integers(0, 2**20), max_size=5, unique=True),
)
def test_the_format_round_trips(opened: dict[int, int], lasts: list[int]) -> None:
    entries = [AbortedTxn(i, last // 2, last, last + 1) for i, last in enumerate(sorted(lasts))]
    data = encode_header(opened) + b"".join(encode_entry(e) for e in entries)
    header = decode_header(data)
    assert header is not None and header[0] == opened
    assert decode_entries(data[header[1] :], 0, 2**21) == entries


def test_an_abort_whose_entry_was_never_written_is_found_after_a_crash(tmp_path: Path) -> None:
    """A kill between the marker's append and its index entry: the open after the crash
    rebuilds the active segment's index from its batches."""
    log = PartitionLog.open(tmp_path / "p")
    try:
        log.append(txn_batch(3, 2, 1))  # 0-1
        log.append(marker_batch(3, 0, False, 0, 1), allow_control=True)  # 2
    finally:
        log.close()
    (tmp_path / "p" / CLEAN_SHUTDOWN_FILE).unlink()
    path = tmp_path / "p" / f"{0:020d}.txnindex"
    path.write_bytes(path.read_bytes()[:-ENTRY_BYTES])  # as if killed before the entry
    reopened = PartitionLog.open(tmp_path / "p")
    try:
        assert reopened.aborted_in(0, 3) == [AbortedTxn(3, 0, 2, 3)]
    finally:
        reopened.close()


def test_an_active_index_cut_at_an_entry_boundary_after_a_clean_close_is_rebuilt(
    tmp_path: Path,
) -> None:
    """An unsealed index cut at an entry boundary looks whole; the clean close's
    checkpoint counts the active index's entries, so the open finds the cut and rebuilds
    (hypothesis found the gap: test_answers_match_the_model's "damage")."""
    log = PartitionLog.open(tmp_path / "p")
    try:
        log.append(txn_batch(3, 2, 1))  # 0-1
        log.append(marker_batch(3, 0, False, 0, 1), allow_control=True)  # 2
    finally:
        log.close()
    path = tmp_path / "p" / f"{0:020d}.txnindex"
    path.write_bytes(path.read_bytes()[:-ENTRY_BYTES])  # the entry gone, after the close
    reopened = PartitionLog.open(tmp_path / "p")
    try:
        assert reopened.aborted_in(0, 3) == [AbortedTxn(3, 0, 2, 3)]
    finally:
        reopened.close()


@pytest.mark.parametrize("loaded_max", [2, 100_000])
def test_lookups_racing_appends_rolls_and_deletes(
    tmp_path: Path, loaded_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lookups load sealed segments' indexes (not loaded after a reopen) without the log's
    lock while another thread appends, rolls and deletes records, and (a small
    ``loaded_max``) others drop them: no error, and the final answers are the model's."""
    monkeypatch.setattr(log_module, "ABORTED_LOADED_MAX", loaded_max)
    config = LogConfig(segment_bytes_max=1024, retention_ms=-1)
    log = PartitionLog.open(tmp_path / "p", config)
    model = Model()

    def write(rounds: range) -> None:
        for round_ in rounds:
            pid = round_ % PRODUCERS
            result = log.append(txn_batch(pid, 2, 1))
            model.batches.append((result.base_offset, result.last_offset, pid, "data"))
            result = log.append(marker_batch(pid, 0, round_ % 3 == 0, 0, 1), allow_control=True)
            kind = "commit" if round_ % 3 == 0 else "abort"
            model.batches.append((result.base_offset, result.last_offset, pid, kind))
            if round_ % 50 == 49:
                log.advance_start(log.log_start_offset + 60)

    write(range(300))
    log.close()
    log = PartitionLog.open(tmp_path / "p", config)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                start = rng.randint(log.log_start_offset, log.log_end_offset)
                log.aborted_in(start, start + rng.randint(1, 200))
            except BaseException as exc:
                errors.append(exc)
                return

    readers = [threading.Thread(target=reader, args=(seed,)) for seed in range(2)]
    for thread in readers:
        thread.start()
    try:
        write(range(300, 500))
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    try:
        assert not errors, errors
        start, end = log.log_start_offset, log.log_end_offset
        assert answers(log, start, end) == model.aborted_in(start, end)
    finally:
        log.close()


def test_in_memory_lookup_says_when_a_file_must_be_read(tmp_path: Path) -> None:
    """The broker answers from memory on its event loop and reads index files only in a
    thread: ``aborted_in_memory`` is None while a needed index is not loaded."""
    config = LogConfig(segment_bytes_max=1024)
    log = PartitionLog.open(tmp_path / "p", config)
    try:
        log.append(txn_batch(1, 1, 1))
        log.append(marker_batch(1, 0, False, 0, 1), allow_control=True)  # 0-1 aborted
        while log.segment_count < 3:
            log.append(encode_batch([(None, b"x" * 300)]))
    finally:
        log.close()
    log = PartitionLog.open(tmp_path / "p", config)
    try:
        assert log.aborted_in_memory(0, 2) is None  # the first segment's index: on disk
        assert log.aborted_in(0, 2) == [AbortedTxn(1, 0, 1, 2)]
        assert log.aborted_in_memory(0, 2) == [AbortedTxn(1, 0, 1, 2)]
        end = log.log_end_offset
        assert log.aborted_in_memory(end - 1, end) == []  # the active segment's: loaded
    finally:
        log.close()


@pytest.mark.parametrize("cut_entries", [1, 0])
def test_a_sealed_index_cut_at_an_entry_boundary_is_rebuilt(
    tmp_path: Path, cut_entries: int
) -> None:
    """The model test's failing example (issue 21): producer 0's transaction 0..8 aborted
    in the first segment, which then rolled; its index cut to an entry boundary (as a
    power loss before the sealed segment's flush can leave it: the ``.log`` with the
    marker, the index without its entry) passed every CRC and lost the abort, so a
    read_committed fetch of [2, 7) returned aborted records. The seal's count catches it:
    the index is rebuilt from the segment (``cut_entries`` 0: only the seal is gone)."""
    config = LogConfig(segment_bytes_max=1024, retention_ms=-1)
    log = PartitionLog.open(tmp_path / "p", config)
    try:
        log.append(txn_batch(0, 1, 1))  # 0
        for _ in range(4):
            log.append(encode_batch([(None, b"x" * 20)]))  # 1-4
        log.append(txn_batch(0, 1, 1))  # 5
        log.append(txn_batch(0, 1, 1))  # 6
        log.append(encode_batch([(None, b"x" * 20)]))  # 7
        log.append(marker_batch(0, 0, False, 0, 1), allow_control=True)  # 8
        while log.segment_count < 2:
            log.append(encode_batch([(None, b"x" * 300)]))
    finally:
        log.close()
    path = tmp_path / "p" / f"{0:020d}.txnindex"
    data = path.read_bytes()
    assert len(data) == 16 + 2 * ENTRY_BYTES  # header, the entry, the seal
    path.write_bytes(data[: len(data) - (1 + cut_entries) * ENTRY_BYTES])
    (tmp_path / "p" / CLEAN_SHUTDOWN_FILE).unlink()
    reopened = PartitionLog.open(tmp_path / "p", config)
    try:
        assert reopened.aborted_in(2, 7) == [AbortedTxn(0, 0, 8, 9)]
    finally:
        reopened.close()
    assert len(path.read_bytes()) == len(data)  # rewritten whole, sealed
