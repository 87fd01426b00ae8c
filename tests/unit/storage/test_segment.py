"""LogSegment on real files: append, locate, read whole batches, recover, truncate."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.protocol.batch import CRC_START, parse_header
from conveyor.protocol.errors import CorruptDataError
from conveyor.protocol.records import BatchBuilder
from conveyor.storage.segment import LogSegment, segment_name
from tests.unit.storage.helpers import TIMESTAMP_MS, batch_bounds, records, values_of

BASE = 500


def stamped(base_offset: int, count: int, *, value_size: int = 10, timestamp_ms: int = 0) -> bytes:
    builder = BatchBuilder()
    for value in values_of(count, f"o{base_offset}-", value_size):
        builder.append(value, timestamp_ms=timestamp_ms or TIMESTAMP_MS + base_offset)
    return builder.build(base_offset=base_offset, partition_leader_epoch=3)


class Filled:
    """A segment holding batches of the given record counts, and where each one starts."""

    def __init__(self, directory: Path, counts: list[int], **kwargs: int) -> None:
        self.segment = LogSegment(directory, BASE, kwargs.get("index_interval_bytes", 0))
        self.segment.open_for_append()
        self.batches: list[bytes] = []
        self.positions: list[int] = []
        offset = BASE
        for count in counts:
            data = stamped(offset, count, value_size=kwargs.get("value_size", 10))
            self.positions.append(self.segment.append([data], [parse_header(data)]))
            self.batches.append(data)
            offset += count


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Filled]:
    f = Filled(tmp_path, [1, 5, 2, 10, 3])
    yield f
    f.segment.close()


def test_files_are_named_by_20_digit_base_offset(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, 123, 4096)
    segment.open_for_append()
    assert segment_name(123) == "00000000000000000123"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000000000000000123.index",
        "00000000000000000123.log",
        "00000000000000000123.timeindex",
    ]
    segment.close()


def test_append_writes_bytes_as_given_and_tracks_offsets(filled: Filled) -> None:
    segment = filled.segment
    assert segment.log_path.read_bytes() == b"".join(filled.batches)
    assert filled.positions[0] == 0
    assert segment.size_bytes == sum(len(b) for b in filled.batches)
    assert segment.next_offset == BASE + 21
    assert segment.max_timestamp_ms == TIMESTAMP_MS + BASE + 18


def test_append_of_several_batches_in_one_call(tmp_path: Path) -> None:
    segment = LogSegment(tmp_path, BASE, 0)
    first, second = stamped(BASE, 2), stamped(BASE + 2, 3)
    assert segment.append([first, second], [parse_header(first), parse_header(second)]) == 0
    assert segment.next_offset == BASE + 5
    assert segment.index.entries == 1  # every batch but the one at position 0
    assert segment.index.lookup(BASE + 4) == (BASE + 2, len(first))
    segment.close()


@pytest.mark.parametrize(
    ("offset", "batch"),
    [(500, 0), (501, 1), (503, 1), (505, 1), (506, 2), (507, 2), (508, 3), (517, 3), (518, 4)],
)
def test_locate_finds_the_batch_holding_an_offset(filled: Filled, offset: int, batch: int) -> None:
    found = filled.segment.locate(offset)
    assert found is not None
    position, header = found
    assert position == filled.positions[batch]
    assert header == parse_header(filled.batches[batch])


def test_locate_past_the_end_is_none(filled: Filled) -> None:
    assert filled.segment.locate(BASE + 21) is None


def test_read_returns_whole_batches_from_the_one_holding_the_offset(filled: Filled) -> None:
    # offset 503 is in the middle of the second batch (501..505): that batch comes back whole
    everything = b"".join(filled.batches[1:])
    assert filled.segment.read(503, 1 << 20, upper_offset=10**9) == everything
    assert records(everything)[0][0] == 501


def test_read_returns_at_least_one_batch_even_when_larger_than_max_bytes(
    filled: Filled,
) -> None:
    assert filled.segment.read(510, 1, upper_offset=10**9) == filled.batches[3]
    assert filled.segment.read(510, 0, upper_offset=10**9) == filled.batches[3]


def test_read_stops_at_the_last_whole_batch_within_max_bytes(filled: Filled) -> None:
    sizes = [len(b) for b in filled.batches]
    wanted = sizes[1] + sizes[2] + sizes[3] - 1  # not quite three batches
    assert filled.segment.read(501, wanted, upper_offset=10**9) == b"".join(filled.batches[1:3])
    exact = sizes[1] + sizes[2] + sizes[3]
    assert filled.segment.read(501, exact, upper_offset=10**9) == b"".join(filled.batches[1:4])


@pytest.mark.parametrize(
    ("upper_offset", "batches"),
    [(518, 4), (519, 4), (520, 4), (521, 5), (517, 3), (508, 3), (506, 2), (501, 1), (500, 0)],
)
def test_read_serves_only_batches_ending_below_upper_offset(
    filled: Filled, upper_offset: int, batches: int
) -> None:
    data = filled.segment.read(500, 1 << 20, upper_offset=upper_offset)
    assert data == b"".join(filled.batches[:batches])
    if data:
        assert batch_bounds(data)[-1][1] < upper_offset


def test_read_at_the_end_is_empty(filled: Filled) -> None:
    assert filled.segment.read(BASE + 21, 1 << 20, upper_offset=10**9) == b""


def _flip(path: Path, position: int) -> None:
    with path.open("r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x40]))


def test_read_never_serves_a_batch_failing_its_crc(filled: Filled) -> None:
    damaged = 2
    _flip(filled.segment.log_path, filled.positions[damaged] + CRC_START + 5)
    with pytest.raises(CorruptDataError):
        filled.segment.read(506, 1 << 20, upper_offset=10**9)
    # a read that starts before the damage stops just before it
    assert filled.segment.read(500, 1 << 20, upper_offset=10**9) == b"".join(filled.batches[:2])
    # and batches after it are still served
    assert filled.segment.read(508, 1 << 20, upper_offset=10**9) == b"".join(filled.batches[3:])


def test_read_never_serves_a_batch_with_a_damaged_base_offset(filled: Filled) -> None:
    # base_offset is outside the CRC: the segment must notice offsets that do not follow on
    _flip(filled.segment.log_path, filled.positions[2] + 6)
    assert filled.segment.read(500, 1 << 20, upper_offset=10**9) == b"".join(filled.batches[:2])
    for offset in (506, 507):
        with pytest.raises(CorruptDataError):
            filled.segment.read(offset, 1 << 20, upper_offset=10**9)


@pytest.mark.parametrize("delta_byte", [0x7F, 0x00])
def test_read_reports_a_damaged_last_offset_delta_instead_of_an_empty_read(
    filled: Filled, delta_byte: int
) -> None:
    # last_offset_delta is inside the CRC, but a read decides "nothing here yet" from it
    # before the CRC check: a delta too large or too small must not look like the log end
    last = len(filled.batches) - 1
    with filled.segment.log_path.open("r+b") as f:
        f.seek(filled.positions[last] + 23)
        f.write(bytes([delta_byte, 0, 0, 0]))
    upper = filled.segment.next_offset
    for offset in (518, 519, 520):
        with pytest.raises(CorruptDataError):
            filled.segment.read(offset, 1 << 20, upper_offset=upper)
    assert filled.segment.read(508, 1 << 20, upper_offset=upper) == filled.batches[3]


def test_load_indexes_refuses_a_tail_whose_offsets_do_not_follow_on(tmp_path: Path) -> None:
    f = Filled(tmp_path, [3, 4, 5, 6], index_interval_bytes=10**6)
    f.segment.close()
    _flip(f.segment.log_path, f.positions[3] + 7)  # base_offset of the last batch
    segment = LogSegment(tmp_path, BASE, 10**6)
    assert not segment.load_indexes()  # the CRC of the tail cannot see it; offsets can
    result = segment.recover()
    assert (result.batches, segment.next_offset) == (3, BASE + 12)
    segment.close()


def test_index_entries_every_index_interval_bytes(tmp_path: Path) -> None:
    f = Filled(tmp_path, [2] * 40, index_interval_bytes=300, value_size=30)
    size = len(f.batches[0])
    entries = f.segment.index.entries
    assert 40 * size // (300 + size) <= entries <= 40 * size // 300
    offset = BASE
    for position in f.positions:
        looked_up_offset, looked_up_position = f.segment.index.lookup(offset)
        assert looked_up_position <= position
        assert looked_up_position in f.positions
        assert f.positions.index(looked_up_position) * 2 + BASE == looked_up_offset
        offset += 2
    f.segment.close()


class TestRecover:
    def test_clean_file_loses_nothing_and_rebuilds_indexes(self, tmp_path: Path) -> None:
        f = Filled(tmp_path, [3] * 30, index_interval_bytes=200)
        index_bytes = f.segment.index.path.read_bytes()
        f.segment.close()
        f.segment.index.path.unlink()
        segment = LogSegment(tmp_path, BASE, 200)
        result = segment.recover()
        assert (result.batches, result.dropped_bytes, result.reason) == (30, 0, "")
        assert result.valid_bytes == sum(len(b) for b in f.batches)
        assert segment.index.path.read_bytes() == index_bytes
        assert segment.next_offset == BASE + 90
        segment.close()

    @pytest.mark.parametrize("cut", [1, 12, 60, 61, 100])
    def test_torn_last_batch_is_cut(self, tmp_path: Path, cut: int) -> None:
        f = Filled(tmp_path, [3, 4, 5])
        f.segment.close()
        size = sum(len(b) for b in f.batches)
        os.truncate(f.segment.log_path, f.positions[2] + cut)
        segment = LogSegment(tmp_path, BASE, 0)
        result = segment.recover()
        assert result.valid_bytes == f.positions[2]
        # trailing zero bytes of the torn batch (its base offset's first bytes, say) are
        # indistinguishable from a preallocated tail
        assert result.dropped_bytes + result.preallocated_bytes == cut
        assert result.batches == 2
        assert bool(result.reason) == (result.dropped_bytes > 0)
        assert segment.log_path.stat().st_size == f.positions[2] < size
        assert segment.next_offset == BASE + 7
        segment.close()

    @pytest.mark.parametrize(
        ("where", "reason"),
        [
            (CRC_START + 3, "CRC"),
            (16, "magic"),
            (8, "batch_length"),
            (6, "offset"),
            (60, "record count"),
        ],
    )
    def test_first_bad_batch_and_everything_after_it_is_dropped(
        self, tmp_path: Path, where: int, reason: str
    ) -> None:
        f = Filled(tmp_path, [3, 4, 5, 6])
        f.segment.close()
        _flip(f.segment.log_path, f.positions[1] + where)
        segment = LogSegment(tmp_path, BASE, 0)
        result = segment.recover()
        assert result.valid_bytes == f.positions[1]
        assert result.batches == 1
        assert segment.next_offset == BASE + 3
        assert segment.read(BASE, 1 << 20, upper_offset=10**9) == f.batches[0]
        segment.close()
        assert result.reason, reason

    def test_garbage_after_the_last_batch_is_dropped(self, tmp_path: Path) -> None:
        f = Filled(tmp_path, [3, 4])
        f.segment.close()
        with f.segment.log_path.open("ab") as out:
            out.write(b"\x07" * 100 + b"\x00" * 20)
        segment = LogSegment(tmp_path, BASE, 0)
        result = segment.recover()
        assert (result.batches, result.dropped_bytes, result.preallocated_bytes) == (2, 100, 20)
        assert result.reason
        segment.close()

    def test_a_preallocated_tail_is_cut_and_not_counted_as_dropped(self, tmp_path: Path) -> None:
        f = Filled(tmp_path, [3, 4])
        f.segment.close()
        size = f.segment.log_path.stat().st_size
        with f.segment.log_path.open("ab") as out:
            out.write(b"\x00" * 5000)  # what a crash leaves of an active segment's file
        segment = LogSegment(tmp_path, BASE, 0)
        result = segment.recover()
        assert (result.batches, result.dropped_bytes, result.reason) == (2, 0, "")
        assert result.preallocated_bytes == 5000
        assert segment.log_path.stat().st_size == segment.size_bytes == size
        assert segment.next_offset == BASE + 7
        segment.close()


class TestTruncate:
    @pytest.mark.parametrize(
        ("offset", "kept_batches", "next_offset"),
        [(508, 3, 508), (510, 3, 508), (506, 2, 506), (501, 1, 501), (500, 0, 500)],
    )
    def test_truncate_cuts_at_the_start_of_the_batch_holding_the_offset(
        self, filled: Filled, offset: int, kept_batches: int, next_offset: int
    ) -> None:
        segment = filled.segment
        segment.truncate_to(offset)
        assert segment.next_offset == next_offset
        assert segment.log_path.read_bytes() == b"".join(filled.batches[:kept_batches])
        assert segment.read(next_offset, 1 << 20, upper_offset=10**9) == b""

    def test_truncate_then_append_continues_the_offsets(self, filled: Filled) -> None:
        segment = filled.segment
        segment.truncate_to(506)
        segment.open_for_append()
        data = stamped(506, 4)
        segment.append([data], [parse_header(data)])
        assert segment.read(500, 1 << 20, upper_offset=10**9) == (
            b"".join(filled.batches[:2]) + data
        )


def test_find_offset_by_timestamp(tmp_path: Path) -> None:
    f = Filled(tmp_path, [2] * 20, index_interval_bytes=100)  # batch i stamped BASE + 2i
    segment = f.segment
    for i in range(20):
        assert segment.find_offset_by_timestamp(TIMESTAMP_MS + BASE + 2 * i) == BASE + 2 * i
        assert segment.find_offset_by_timestamp(TIMESTAMP_MS + BASE + 2 * i - 1) == BASE + 2 * i
    assert segment.find_offset_by_timestamp(0) == BASE
    assert segment.find_offset_by_timestamp(TIMESTAMP_MS + BASE + 39) is None
    segment.close()
