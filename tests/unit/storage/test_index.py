"""OffsetIndex and TimeIndex: file format, load, append, lookup, truncate, and rebuild from
the log when an index file is damaged."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from conveyor.storage import index as index_module
from conveyor.storage.index import OffsetIndex, TimeIndex
from tests.unit.storage.helpers import (
    TIMESTAMP_MS,
    LogFactory,
    batch_bounds,
    make_batch,
    read_all,
    records,
    values_of,
)

BASE = 1000


def offset_index(tmp_path: Path, entries: list[tuple[int, int]]) -> OffsetIndex:
    index = OffsetIndex(tmp_path / "00000000000000001000.index", BASE)
    index.open_for_append()
    for offset, position in entries:
        index.append(offset, position)
    index.close()
    return index


ENTRIES = [(1010, 4096), (1025, 8300), (1040, 12500)]


class TestOffsetIndex:
    def test_file_holds_big_endian_relative_offset_and_position(self, tmp_path: Path) -> None:
        index = offset_index(tmp_path, ENTRIES)
        assert index.path.read_bytes() == b"".join(
            struct.pack(">II", offset - BASE, position) for offset, position in ENTRIES
        )
        assert index.entries == 3
        assert index.last_position() == 12500

    @pytest.mark.parametrize(
        ("offset", "expected"),
        [
            (1000, (1000, 0)),  # below the first entry: scan from the segment start
            (1009, (1000, 0)),
            (1010, (1010, 4096)),
            (1024, (1010, 4096)),
            (1025, (1025, 8300)),
            (1039, (1025, 8300)),
            (1040, (1040, 12500)),
            (99_999, (1040, 12500)),
        ],
    )
    def test_lookup_gives_last_entry_at_or_below(
        self, tmp_path: Path, offset: int, expected: tuple[int, int]
    ) -> None:
        index = offset_index(tmp_path, ENTRIES)
        assert index.lookup(offset) == expected

    def test_empty_index_looks_up_segment_start(self, tmp_path: Path) -> None:
        index = OffsetIndex(tmp_path / "x.index", BASE)
        assert index.lookup(5000) == (BASE, 0)
        assert index.last_position() == 0

    def test_load_reads_back_what_was_appended(self, tmp_path: Path) -> None:
        written = offset_index(tmp_path, ENTRIES)
        loaded = OffsetIndex(written.path, BASE)
        assert loaded.load(log_size_bytes=20_000)
        assert loaded.entries == 3
        assert [loaded.lookup(o) for o, _ in ENTRIES] == ENTRIES

    def test_load_of_missing_file_is_false(self, tmp_path: Path) -> None:
        assert not OffsetIndex(tmp_path / "missing.index", BASE).load(100)

    @pytest.mark.parametrize(
        "damage",
        [
            pytest.param(lambda b: b[:-3], id="size-not-a-multiple-of-8"),
            pytest.param(lambda b: b[8:16] + b[:8] + b[16:], id="offsets-out-of-order"),
            pytest.param(
                lambda b: b[:12] + struct.pack(">I", 4096) + b[16:], id="positions-not-increasing"
            ),
        ],
    )
    def test_load_rejects_implausible_file(self, tmp_path: Path, damage: object) -> None:
        index = offset_index(tmp_path, ENTRIES)
        index.path.write_bytes(damage(index.path.read_bytes()))  # type: ignore[operator]
        loaded = OffsetIndex(index.path, BASE)
        assert not loaded.load(log_size_bytes=20_000)
        assert loaded.entries == 0
        assert loaded.lookup(1040) == (BASE, 0)

    def test_load_rejects_position_beyond_log(self, tmp_path: Path) -> None:
        index = offset_index(tmp_path, ENTRIES)
        loaded = OffsetIndex(index.path, BASE)
        assert not loaded.load(log_size_bytes=12500)  # the last entry points at the end
        assert loaded.entries == 0

    @pytest.mark.parametrize(
        ("position", "kept"), [(12500, 2), (12501, 3), (8300, 1), (4097, 1), (1, 0)]
    )
    def test_truncate_to_position_drops_entries_at_or_beyond(
        self, tmp_path: Path, position: int, kept: int
    ) -> None:
        index = offset_index(tmp_path, ENTRIES)
        index.truncate_to_position(position)
        assert index.entries == kept
        assert index.path.stat().st_size == 8 * kept
        reloaded = OffsetIndex(index.path, BASE)
        assert reloaded.load(log_size_bytes=20_000)
        assert reloaded.entries == kept

    def test_append_after_truncate_needs_reopen_and_extends_file(self, tmp_path: Path) -> None:
        index = offset_index(tmp_path, ENTRIES)
        index.truncate_to_position(8300)
        index.open_for_append()
        index.append(1030, 9000)
        index.close()
        reloaded = OffsetIndex(index.path, BASE)
        assert reloaded.load(log_size_bytes=20_000)
        assert reloaded.lookup(2000) == (1030, 9000)
        assert reloaded.lookup(1029) == (1010, 4096)


def time_index(tmp_path: Path) -> TimeIndex:
    index = TimeIndex(tmp_path / "00000000000000001000.timeindex", BASE)
    index.open_for_append()
    for timestamp_ms, offset in [(100, 1000), (100, 1005), (90, 1010), (200, 1020), (300, 1030)]:
        index.maybe_append(timestamp_ms, offset)
    index.close()
    return index


class TestTimeIndex:
    def test_only_new_maxima_are_recorded_in_file_format(self, tmp_path: Path) -> None:
        index = time_index(tmp_path)
        expected = [(100, 0), (200, 20), (300, 30)]
        assert index.path.read_bytes() == b"".join(struct.pack(">qI", t, r) for t, r in expected)
        assert index.last_timestamp_ms == 300

    def test_empty_index_has_no_timestamp(self, tmp_path: Path) -> None:
        index = TimeIndex(tmp_path / "x.timeindex", BASE)
        assert index.last_timestamp_ms == -1
        assert index.lookup(5) == BASE

    @pytest.mark.parametrize(
        ("timestamp_ms", "start_offset"),
        [(0, 1000), (100, 1000), (101, 1000), (200, 1000), (201, 1020), (300, 1020), (999, 1030)],
    )
    def test_lookup_gives_a_safe_scan_start(
        self, tmp_path: Path, timestamp_ms: int, start_offset: int
    ) -> None:
        # (t, r) says every batch up to r has max timestamp <= t: a target above t starts
        # scanning at r, one at or below t must start before r.
        assert time_index(tmp_path).lookup(timestamp_ms) == start_offset

    def test_load_and_truncate(self, tmp_path: Path) -> None:
        path = time_index(tmp_path).path
        loaded = TimeIndex(path, BASE)
        assert loaded.load()
        assert loaded.last_timestamp_ms == 300
        loaded.truncate_to_offset(1030)
        assert loaded.last_timestamp_ms == 200
        assert path.stat().st_size == 24
        again = TimeIndex(path, BASE)
        assert again.load()
        assert again.last_timestamp_ms == 200

    @pytest.mark.parametrize(
        "damage",
        [
            pytest.param(lambda b: b[:-1], id="size-not-a-multiple-of-12"),
            pytest.param(lambda b: b[12:24] + b[:12] + b[24:], id="timestamps-go-back"),
            pytest.param(lambda b: b[:32] + struct.pack(">I", 0) + b[36:], id="offsets-go-back"),
        ],
    )
    def test_load_rejects_implausible_file(self, tmp_path: Path, damage: object) -> None:
        path = time_index(tmp_path).path
        path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
        loaded = TimeIndex(path, BASE)
        assert not loaded.load()
        assert loaded.last_timestamp_ms == -1

    def test_load_of_missing_file_is_false(self, tmp_path: Path) -> None:
        assert not TimeIndex(tmp_path / "missing.timeindex", BASE).load()


# ---- damaged index files in a real log: rebuilt from the log on open ----------------------


def _write_log(
    make_log: LogFactory, tmp_path: Path
) -> list[tuple[int, bytes | None, bytes | None]]:
    log = make_log(segment_bytes_max=4096, index_interval_bytes=256)
    for i in range(70):
        log.append(make_batch(values_of(3, f"b{i}-", 20), timestamp_ms=1000 + i))
    assert log.segment_count > 2
    expected = [r for chunk in read_all(log) for r in records(chunk)]
    log.close()
    return expected


INDEX_DAMAGE = {
    "garbage-tail": lambda b: b + b"\x01\x02\x03",
    "emptied": lambda b: b"",
    "swapped-entries": lambda b: b[8:16] + b[:8] + b[16:],
    "position-beyond-log": lambda b: b[:-4] + b"\x7f\xff\xff\xff",
    "last-entry-offset-off-by-one": lambda b: (
        b[:-8] + (int.from_bytes(b[-8:-4], "big") + 1).to_bytes(4, "big") + b[-4:]
    ),
    "middle-entry-points-inside-a-batch": lambda b: (
        b[:12] + (int.from_bytes(b[12:16], "big") + 7).to_bytes(4, "big") + b[16:]
    ),
    "middle-entry-names-the-wrong-offset": lambda b: (
        b[:8] + (int.from_bytes(b[8:12], "big") - 1).to_bytes(4, "big") + b[12:]
    ),
    "deleted": None,
}


@pytest.mark.parametrize("damage", INDEX_DAMAGE, ids=list(INDEX_DAMAGE))
@pytest.mark.parametrize("which", ["oldest", "active"])
def test_damaged_offset_index_is_rebuilt(
    make_log: LogFactory, tmp_path: Path, damage: str, which: str
) -> None:
    expected = _write_log(make_log, tmp_path)
    indexes = sorted((tmp_path / "log").glob("*.index"))
    path = indexes[0] if which == "oldest" else indexes[-1]
    original = path.read_bytes()
    assert len(original) >= 24, "the test needs a few index entries"
    change = INDEX_DAMAGE[damage]
    if change is None:
        path.unlink()
    else:
        path.write_bytes(change(original))
    log = make_log(segment_bytes_max=4096, index_interval_bytes=256)
    assert [r for chunk in read_all(log) for r in records(chunk)] == expected
    for offset, _, _ in expected:  # every lookup, through every index entry
        first_base, first_last = batch_bounds(log.read(offset, 1))[0]
        assert first_base <= offset <= first_last
    assert log.recovered == []  # a cache rebuilt is no data dropped


@pytest.mark.parametrize("which", ["oldest", "active"])
def test_damaged_time_index_is_rebuilt(make_log: LogFactory, tmp_path: Path, which: str) -> None:
    expected = _write_log(make_log, tmp_path)
    time_indexes = sorted((tmp_path / "log").glob("*.timeindex"))
    path = time_indexes[0] if which == "oldest" else time_indexes[-1]
    data = path.read_bytes()
    assert len(data) >= 24
    path.write_bytes(data[12:24] + data[:12] + data[24:])  # timestamps go backwards
    log = make_log(segment_bytes_max=4096, index_interval_bytes=256)
    assert [r for chunk in read_all(log) for r in records(chunk)] == expected
    for i in range(70):
        assert log.offset_for_timestamp(1000 + i) == 3 * i
    assert log.offset_for_timestamp(2000) is None


def test_a_full_disk_for_the_index_files_fails_no_append_and_close_rewrites_them(
    make_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data can still fit (the active segment's preallocated space) when an index file
    cannot grow: the entries stay in memory, the append succeeds, and closing the segment
    writes the files whole from memory once there is room (a 2026-12-04 failover test
    found the raw ENOSPC ending the Produce handler instead)."""
    log = make_log(index_interval_bytes=64)
    batches = [
        make_batch(values_of(3, f"i{i}-", 20), timestamp_ms=TIMESTAMP_MS + i) for i in range(3)
    ]
    log.append(batches[0])
    active = log._segments[-1]
    real = index_module.os.write
    full = True

    def write(fd: int, data: bytes) -> int:
        if full and os.readlink(f"/proc/self/fd/{fd}").endswith(("index", "timeindex")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(index_module.os, "write", write)
    for data in batches[1:]:
        log.append(data)
    # one entry per batch after the first at this interval, in memory, none in the files
    assert active.index.entries == 2
    assert active.index.path.read_bytes() == active.time_index.path.read_bytes() == b""
    assert [r[2] for r in records(b"".join(read_all(log)))] == [
        v for i in range(3) for v in values_of(3, f"i{i}-", 20)
    ]
    full = False
    directory = log.directory
    log.close()
    assert len(active.index.path.read_bytes()) == 8 * 2
    assert len(active.time_index.path.read_bytes()) == 12 * 2
    reopened = make_log(directory, index_interval_bytes=64)
    assert reopened.recovered == []
    assert reopened._segments[-1].index.entries == 2
