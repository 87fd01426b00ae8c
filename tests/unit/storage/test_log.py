"""PartitionLog: append, read, offsets, rolling, rejected input, timestamps."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.protocol.batch import parse_header, validate_batches
from conveyor.protocol.errors import (
    BatchTooLargeError,
    ConveyorError,
    CorruptBatchError,
    ErrorCode,
    InvalidRequestError,
    OffsetOutOfRangeError,
    StorageError,
)
from conveyor.protocol.records import BatchBuilder
from conveyor.storage import PartitionLog
from conveyor.storage.epochs import CHECKPOINT_FILE
from tests.unit.storage.helpers import (
    TIMESTAMP_MS,
    LogFactory,
    ManualClock,
    batch_bounds,
    file_sizes,
    make_batch,
    read_all,
    records,
    values_of,
    with_crc,
)

BIG = 1 << 20


# ---- appending ----------------------------------------------------------------------------


def test_append_returns_base_and_last_offset(make_log: LogFactory) -> None:
    log = make_log()
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    assert log.append(make_batch(values_of(3))) == (0, 2)
    assert log.append(make_batch(values_of(1))) == (3, 3)
    assert log.append(make_batch(values_of(5))) == (4, 8)
    assert (log.log_start_offset, log.log_end_offset) == (0, 9)


def test_several_concatenated_batches_in_one_append(make_log: LogFactory) -> None:
    log = make_log()
    log.append(make_batch(values_of(2, "first")))
    body = b"".join(make_batch(values_of(n, f"b{n}-")) for n in (3, 1, 4))
    assert log.append(body) == (2, 9)
    data = log.read(2, BIG)
    assert batch_bounds(data) == [(2, 4), (5, 5), (6, 9)]
    assert [v for _, _, v in records(data)] == (
        values_of(3, "b3-") + values_of(1, "b1-") + values_of(4, "b4-")
    )


def test_offsets_are_assigned_by_the_log_not_by_the_batch(make_log: LogFactory) -> None:
    log = make_log()
    builder = BatchBuilder()
    for value in values_of(3):
        builder.append(value, timestamp_ms=TIMESTAMP_MS)
    claims_999 = builder.build(base_offset=999, partition_leader_epoch=77)
    assert log.append(claims_999) == (0, 2)
    assert log.append(claims_999) == (3, 5)
    assert [o for o, _, _ in records(log.read(0, BIG))] == list(range(6))


def test_leader_epoch_is_stamped_and_crc_still_valid(make_log: LogFactory) -> None:
    log = make_log()
    original = make_batch(values_of(4), key=b"k")
    log.append(original, leader_epoch=7)
    log.append(original + original, leader_epoch=9)
    data = log.read(0, BIG)
    headers = [s.header for s in validate_batches(data, BIG)]  # checks every CRC
    assert [(h.base_offset, h.partition_leader_epoch) for h in headers] == [(0, 7), (4, 9), (8, 9)]
    assert [h.crc for h in headers] == [parse_header(original).crc] * 3
    # only base_offset and the epoch changed: bytes 16.. are as the producer sent them
    for position in (0, len(original), 2 * len(original)):
        assert data[position + 16 : position + len(original)] == original[16:]
    assert records(data) == [(o, b"k", values_of(4)[o % 4]) for o in range(12)]


class TestAppendReplicated:
    def leader_batches(self, base_offset: int, counts: list[int], epoch: int = 5) -> bytes:
        out, offset = [], base_offset
        for count in counts:
            builder = BatchBuilder()
            for value in values_of(count, f"L{offset}-"):
                builder.append(value, timestamp_ms=TIMESTAMP_MS)
            out.append(builder.build(base_offset=offset, partition_leader_epoch=epoch))
            offset += count
        return b"".join(out)

    def test_bytes_are_kept_as_the_leader_wrote_them(self, make_log: LogFactory) -> None:
        log = make_log()
        body = self.leader_batches(0, [2, 3, 1])
        assert log.append_replicated(body) == (0, 5)
        more = self.leader_batches(6, [4], epoch=6)
        assert log.append_replicated(more) == (6, 9)
        assert log.read(0, BIG) == body + more
        assert log.log_end_offset == 10

    def test_gaps_of_a_compacted_leader_are_kept(self, make_log: LogFactory) -> None:
        """A compacted leader's batches may be missing (offsets kept, records removed):
        the follower takes them with their gaps, so offsets stay the leader's."""
        log = make_log()
        log.append_replicated(self.leader_batches(0, [2]))
        body = self.leader_batches(3, [2]) + self.leader_batches(7, [1])
        assert log.append_replicated(body) == (3, 7)
        assert log.log_end_offset == 8
        assert [o for o, _, _ in records(log.read(2, BIG))] == [3, 4, 7]
        assert batch_bounds(log.read(5, BIG)) == [(7, 7)]

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(lambda s: s.leader_batches(1, [2]), id="starts-before-log-end"),
            pytest.param(
                lambda s: s.leader_batches(2, [2]) + s.leader_batches(3, [1]), id="overlap-inside"
            ),
        ],
    )
    def test_must_not_go_back_in_offsets(
        self, make_log: LogFactory, tmp_path: Path, body: Callable[[object], bytes]
    ) -> None:
        log = make_log()
        log.append_replicated(self.leader_batches(0, [2]))
        sizes = file_sizes(tmp_path / "log")
        with pytest.raises(InvalidRequestError) as caught:
            log.append_replicated(body(self))
        assert caught.value.code is ErrorCode.OFFSET_OUT_OF_RANGE
        assert caught.value.details["log_end_offset"] == 2
        assert log.log_end_offset == 2
        assert file_sizes(tmp_path / "log") == sizes


# ---- reading ------------------------------------------------------------------------------


def test_read_from_the_middle_of_a_batch_returns_the_whole_batch(make_log: LogFactory) -> None:
    log = make_log()
    log.append(make_batch(values_of(2)))
    log.append(make_batch(values_of(10, "mid")))
    for offset in range(2, 12):
        data = log.read(offset, 1)
        assert batch_bounds(data) == [(2, 11)]
        assert [v for _, _, v in records(data)] == values_of(10, "mid")


def test_read_at_log_end_is_empty_and_beyond_raises(make_log: LogFactory) -> None:
    log = make_log()
    assert log.read(0, BIG) == b""
    log.append(make_batch(values_of(3)))
    assert log.read(3, BIG) == b""
    with pytest.raises(OffsetOutOfRangeError) as caught:
        log.read(4, BIG)
    assert (caught.value.offset, caught.value.log_start_offset) == (4, 0)
    assert caught.value.log_end_offset == 3
    assert caught.value.code is ErrorCode.OFFSET_OUT_OF_RANGE


def test_read_below_log_start_raises_with_the_valid_range(make_log: LogFactory) -> None:
    log = make_log(initial_offset=100)
    assert (log.log_start_offset, log.log_end_offset) == (100, 100)
    assert log.append(make_batch(values_of(5))) == (100, 104)
    with pytest.raises(OffsetOutOfRangeError) as caught:
        log.read(99, BIG)
    error = caught.value
    assert (error.offset, error.log_start_offset, error.log_end_offset) == (99, 100, 105)
    assert error.details == {"offset": 99, "log_start_offset": 100, "log_end_offset": 105}
    assert not error.retriable


def test_read_respects_upper_offset(make_log: LogFactory) -> None:
    log = make_log()
    for count in (2, 3, 4):
        log.append(make_batch(values_of(count)))
    assert batch_bounds(log.read(0, BIG, upper_offset=5)) == [(0, 1), (2, 4)]
    assert batch_bounds(log.read(0, BIG, upper_offset=4)) == [(0, 1)]
    assert log.read(2, BIG, upper_offset=2) == b""
    assert batch_bounds(log.read(0, BIG, upper_offset=10**6)) == [(0, 1), (2, 4), (5, 8)]


def test_a_read_stops_at_the_end_of_a_segment(make_log: LogFactory) -> None:
    log = make_log(segment_bytes_max=1024)
    for i in range(30):
        log.append(make_batch(values_of(2, f"s{i}-", 40)))
    assert log.segment_count > 3
    seen = [r for chunk in read_all(log) for r in records(chunk)]
    assert [o for o, _, _ in seen] == list(range(60))
    for chunk in read_all(log):
        assert len(chunk) <= 1024


# ---- rolling ------------------------------------------------------------------------------


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != CHECKPOINT_FILE)


def test_roll_on_size_names_segments_by_base_offset(make_log: LogFactory, tmp_path: Path) -> None:
    log = make_log(segment_bytes_max=1024)
    batch = make_batch(values_of(4, "x", 50))
    assert len(batch) > 250
    for _ in range(10):
        log.append(batch)
    bases = [info.base_offset for info in log.segment_infos()]
    assert bases[0] == 0
    assert len(bases) == log.segment_count > 2
    for info in log.segment_infos()[:-1]:
        assert info.size_bytes <= 1024
        assert info.size_bytes + len(batch) > 1024
    names = segment_files(tmp_path / "log")
    assert names == sorted(
        f"{base:020d}.{ext}" for base in bases for ext in ("log", "index", "timeindex", "txnindex")
    )
    assert all(re.fullmatch(r"\d{20}\.(log|index|timeindex|txnindex)", n) for n in names)
    assert [o for chunk in read_all(log) for o, _, _ in records(chunk)] == list(range(40))


def test_a_batch_larger_than_a_segment_gets_its_own_segment(make_log: LogFactory) -> None:
    log = make_log(segment_bytes_max=1024)
    log.append(make_batch(values_of(1)))
    log.append(make_batch(values_of(3, "huge", 600)))
    log.append(make_batch(values_of(1)))
    assert [(i.base_offset, i.size_bytes > 1024) for i in log.segment_infos()] == [
        (0, False),
        (1, True),
        (4, False),
    ]


def test_roll_on_age(make_log: LogFactory, clock: ManualClock) -> None:
    log = make_log(segment_ms_max=1000)
    log.append(make_batch(values_of(1)))
    clock.advance(999)
    log.append(make_batch(values_of(1)))
    assert log.segment_count == 1
    clock.advance(1)
    log.append(make_batch(values_of(1)))
    assert [i.base_offset for i in log.segment_infos()] == [0, 2]
    clock.advance(5000)  # an empty active segment is never rolled
    assert log.segment_count == 2
    log.append(make_batch(values_of(1)))
    assert [i.base_offset for i in log.segment_infos()] == [0, 2, 3]


def test_roll_by_age_is_counted_from_open_after_a_restart(
    make_log: LogFactory, clock: ManualClock
) -> None:
    log = make_log(segment_ms_max=1000)
    log.append(make_batch(values_of(1)))
    log.close()
    clock.advance(10_000)
    log = make_log(segment_ms_max=1000)
    log.append(make_batch(values_of(1)))
    assert log.segment_count == 1
    clock.advance(1000)
    log.append(make_batch(values_of(1)))
    assert log.segment_count == 2


# ---- rejected input: typed error, nothing written -----------------------------------------


def _tamper(position: int, value: bytes, *, fix_crc: bool = True) -> Callable[[bytes], bytes]:
    def change(batch: bytes) -> bytes:
        out = batch[:position] + value + batch[position + len(value) :]
        return with_crc(out) if fix_crc else out

    return change


def _flip_value_byte(batch: bytes) -> bytes:
    return batch[:-3] + bytes([batch[-3] ^ 1]) + batch[-2:]


BAD_BATCHES: dict[str, tuple[Callable[[bytes], bytes], type[ConveyorError], ErrorCode]] = {
    "bad-crc": (_flip_value_byte, CorruptBatchError, ErrorCode.CORRUPT_MESSAGE),
    "bad-crc-field": (
        _tamper(17, b"\x00\x00\x00\x00", fix_crc=False),
        CorruptBatchError,
        ErrorCode.CORRUPT_MESSAGE,
    ),
    "batch-length-too-long": (
        lambda b: _tamper(8, (len(b) - 12 + 5).to_bytes(4, "big"))(b),
        CorruptBatchError,
        ErrorCode.CORRUPT_MESSAGE,
    ),
    "batch-length-too-short": (
        lambda b: _tamper(8, (len(b) - 12 - 5).to_bytes(4, "big"))(b),
        CorruptBatchError,
        ErrorCode.CORRUPT_MESSAGE,
    ),
    "batch-length-shorter-than-header": (
        _tamper(8, (20).to_bytes(4, "big")),
        CorruptBatchError,
        ErrorCode.CORRUPT_MESSAGE,
    ),
    "magic-1": (_tamper(16, b"\x01"), CorruptBatchError, ErrorCode.UNSUPPORTED_VERSION),
    "magic-3": (_tamper(16, b"\x03"), CorruptBatchError, ErrorCode.UNSUPPORTED_VERSION),
    "records-count-mismatch": (
        _tamper(57, (5).to_bytes(4, "big")),
        CorruptBatchError,
        ErrorCode.CORRUPT_MESSAGE,
    ),
    "last-offset-delta-mismatch": (
        _tamper(23, (1).to_bytes(4, "big")),
        CorruptBatchError,
        ErrorCode.CORRUPT_MESSAGE,
    ),
    "zero-records": (
        lambda b: _tamper(23, b"\xff\xff\xff\xff")(_tamper(57, b"\x00\x00\x00\x00")(b)),
        CorruptBatchError,
        ErrorCode.CORRUPT_MESSAGE,
    ),
    "truncated-body": (lambda b: b[:-7], CorruptBatchError, ErrorCode.CORRUPT_MESSAGE),
    "truncated-header": (lambda b: b[:40], CorruptBatchError, ErrorCode.CORRUPT_MESSAGE),
    "empty-body": (lambda b: b"", CorruptBatchError, ErrorCode.CORRUPT_MESSAGE),
    "unknown-codec": (_tamper(22, b"\x07"), CorruptBatchError, ErrorCode.CORRUPT_MESSAGE),
    "too-large": (
        lambda b: make_batch(values_of(3, "big", 400)),
        BatchTooLargeError,
        ErrorCode.MESSAGE_TOO_LARGE,
    ),
}


BAD_INPUT_CASES = [
    pytest.param(case, where, id=f"{case}-{where}")
    for case in BAD_BATCHES
    for where in ("alone", "first", "middle", "last")
    if case != "empty-body" or where == "alone"  # an empty piece of a body is no piece
]


@pytest.mark.parametrize(("case", "position_in_request"), BAD_INPUT_CASES)
def test_bad_input_raises_typed_error_and_writes_nothing(
    make_log: LogFactory, tmp_path: Path, case: str, position_in_request: str
) -> None:
    change, error_type, code = BAD_BATCHES[case]
    log = make_log(batch_bytes_max=1000)
    log.append(make_batch(values_of(3)))
    before = (log.log_end_offset, log.size_bytes, file_sizes(tmp_path / "log"))
    bad = change(make_batch(values_of(3)))
    good = make_batch(values_of(2, "good"))
    body = {
        "alone": bad,
        "first": bad + good,
        "middle": good + bad + good,
        "last": good + good + bad,
    }[position_in_request]
    with pytest.raises(error_type) as caught:
        log.append(body)
    assert caught.value.code is code
    assert isinstance(caught.value, InvalidRequestError)
    assert (log.log_end_offset, log.size_bytes, file_sizes(tmp_path / "log")) == before
    # the log is still usable and the next append follows on
    assert log.append(good) == (3, 4)
    assert [o for o, _, _ in records(log.read(0, BIG))] == list(range(5))


def test_a_rejected_append_does_not_roll(make_log: LogFactory, clock: ManualClock) -> None:
    log = make_log(segment_ms_max=10)
    log.append(make_batch(values_of(1)))
    clock.advance(100)
    with pytest.raises(CorruptBatchError):
        log.append(b"\x00" * 70)
    assert log.segment_count == 1


def test_closed_log_refuses_appends_and_reads(make_log: LogFactory) -> None:
    log = make_log()
    log.append(make_batch(values_of(1)))
    log.close()
    with pytest.raises(StorageError):
        log.append(make_batch(values_of(1)))
    with pytest.raises(StorageError):
        log.read(0, BIG)


# ---- timestamps ---------------------------------------------------------------------------


def test_offset_for_timestamp(make_log: LogFactory) -> None:
    log = make_log(segment_bytes_max=1024, index_interval_bytes=100)
    for i in range(40):  # batch i holds offsets 2i, 2i+1 stamped 1000 + 10i
        log.append(make_batch(values_of(2, f"t{i}-", 30), timestamp_ms=1000 + 10 * i))
    assert log.segment_count > 3
    assert log.offset_for_timestamp(0) == 0
    for i in range(40):
        assert log.offset_for_timestamp(1000 + 10 * i) == 2 * i
        assert log.offset_for_timestamp(1000 + 10 * i - 5) == 2 * i
    assert log.offset_for_timestamp(1000 + 10 * 39 + 1) is None
    log.close()
    reopened = PartitionLog.open(log.directory, log.config)
    try:
        for i in range(40):
            assert reopened.offset_for_timestamp(1000 + 10 * i - 5) == 2 * i
        assert reopened.offset_for_timestamp(1000 + 10 * 39 + 1) is None
    finally:
        reopened.close()


def test_max_timestamp_across_segments_and_after_reopen(make_log: LogFactory) -> None:
    log = make_log(segment_bytes_max=1024, index_interval_bytes=100)
    assert log.max_timestamp() is None
    stamps = [1000 + (37 * i) % 400 for i in range(40)]  # out of order; max once
    for i, ts in enumerate(stamps):  # batch i holds offsets 2i, 2i+1
        log.append(make_batch(values_of(2, f"t{i}-", 30), timestamp_ms=ts))
    assert log.segment_count > 3
    expected = (max(stamps), 2 * stamps.index(max(stamps)))
    assert log.max_timestamp() == expected
    log.close()
    reopened = PartitionLog.open(log.directory, log.config)
    try:
        assert reopened.max_timestamp() == expected
    finally:
        reopened.close()


def test_offset_for_timestamp_with_timestamps_out_of_order(make_log: LogFactory) -> None:
    log = make_log()
    for ts in (100, 300, 200, 400):
        log.append(make_batch(values_of(1), timestamp_ms=ts))
    assert log.offset_for_timestamp(150) == 1
    assert log.offset_for_timestamp(250) == 1  # the first batch whose max timestamp is >= 250
    assert log.offset_for_timestamp(350) == 3
    assert log.offset_for_timestamp(401) is None
