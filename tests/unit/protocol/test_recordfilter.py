"""Filtering a stored batch's records (the log cleaner's tool): offsets, CRC, producer
fields and every codec survive; kafka-python's decoder reads the result; garbage raises
CorruptBatchError and nothing else."""

from __future__ import annotations

import contextlib
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.batch import parse_header, validate_batches
from conveyor.protocol.errors import CorruptBatchError, ErrorCode, InvalidRequestError
from conveyor.protocol.recordfilter import rebuild_batch, require_keys, scan_batch
from conveyor.protocol.records import BatchBuilder, Codec, codec_available, decode_batches

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatch

TIMESTAMP_MS = 1_700_000_000_000
CODECS = [c for c in Codec if codec_available(c)]


def stored_batch(
    pairs: list[tuple[bytes | None, bytes | None]],
    *,
    codec: Codec = Codec.NONE,
    base_offset: int = 100,
    producer: tuple[int, int, int] = (-1, -1, -1),
) -> bytes:
    builder = BatchBuilder(
        codec=codec, producer_id=producer[0], producer_epoch=producer[1], base_sequence=producer[2]
    )
    for index, (key, value) in enumerate(pairs):
        builder.append(value, key, (("h", b"x"),), TIMESTAMP_MS + index)
    return builder.build(base_offset=base_offset, partition_leader_epoch=7)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_kept_records_keep_offsets_timestamps_and_headers(codec: Codec) -> None:
    pairs = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (None, b"4"), (b"c", None)]
    batch = stored_batch(pairs, codec=codec, producer=(42, 3, 1000))
    header = parse_header(batch)
    region, records = scan_batch(batch, header)
    assert [(r.offset, r.key, r.is_tombstone) for r in records] == [
        (100, b"a", False),
        (101, b"b", False),
        (102, b"a", False),
        (103, None, False),
        (104, b"c", True),
    ]
    kept = [records[1], records[2], records[4]]
    out = rebuild_batch(batch, header, region, kept)
    (span,) = validate_batches(out, 1 << 20, stored=True)  # CRC and structure
    new = span.header
    assert (new.base_offset, new.last_offset_delta, new.records_count) == (100, 4, 3)
    assert (new.producer_id, new.producer_epoch, new.base_sequence) == (42, 3, 1000)
    assert new.partition_leader_epoch == 7
    assert (new.base_timestamp, new.max_timestamp) == (header.base_timestamp, header.max_timestamp)
    assert new.codec == header.codec
    decoded = decode_batches(out)
    assert [(r.offset, r.key, r.value, r.timestamp_ms) for r in decoded] == [
        (101, b"b", b"2", TIMESTAMP_MS + 1),
        (102, b"a", b"3", TIMESTAMP_MS + 2),
        (104, b"c", None, TIMESTAMP_MS + 4),
    ]
    assert all(r.headers == (("h", b"x"),) for r in decoded)
    # an independent decoder agrees
    theirs = DefaultRecordBatch(bytearray(out))
    assert theirs.validate_crc()
    assert [(r.offset, r.key, r.value) for r in theirs] == [
        (101, b"b", b"2"),
        (102, b"a", b"3"),
        (104, b"c", None),
    ]


def test_nothing_removed_gives_the_original_bytes() -> None:
    batch = stored_batch([(b"a", b"1"), (b"b", b"2")], codec=Codec.GZIP)
    header = parse_header(batch)
    region, records = scan_batch(batch, header)
    assert rebuild_batch(batch, header, region, records) == batch


def test_an_emptied_batch_is_a_bare_uncompressed_header() -> None:
    batch = stored_batch([(b"a", b"1"), (b"b", b"2")], codec=Codec.GZIP, producer=(9, 0, 5))
    header = parse_header(batch)
    region, _ = scan_batch(batch, header)
    out = rebuild_batch(batch, header, region, [])
    (span,) = validate_batches(out, 1 << 20, stored=True)
    assert len(out) == 61
    assert (span.header.records_count, span.header.codec) == (0, 0)
    assert (span.header.base_offset, span.header.next_offset) == (100, 102)
    assert (span.header.producer_id, span.header.base_sequence) == (9, 5)
    assert decode_batches(out) == []
    with pytest.raises(CorruptBatchError):  # a producer may never send such a batch
        validate_batches(out, 1 << 20)


def test_a_filtered_batch_can_be_filtered_again() -> None:
    batch = stored_batch([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], codec=Codec.GZIP)
    header = parse_header(batch)
    region, records = scan_batch(batch, header)
    once = rebuild_batch(batch, header, region, records[1:])
    header = parse_header(once)
    region, records = scan_batch(once, header)
    assert [r.offset for r in records] == [101, 102]
    twice = rebuild_batch(once, header, region, records[1:])
    assert [(r.offset, r.value) for r in decode_batches(twice)] == [(102, b"3")]
    assert parse_header(twice).next_offset == 103


@settings(max_examples=300)
@given(data=st.binary(min_size=61, max_size=400), count=st.integers(0, 40))
def test_garbage_raises_only_corrupt_batch(data: bytes, count: int) -> None:
    raw = bytearray(data)
    raw[8:12] = (len(raw) - 12).to_bytes(4, "big")  # a plausible length
    raw[16] = 2
    raw[21:23] = b"\x00\x00"  # no compression
    raw[57:61] = count.to_bytes(4, "big")
    header = parse_header(bytes(raw))
    with contextlib.suppress(CorruptBatchError):
        scan_batch(bytes(raw), header)


def test_require_keys_names_every_keyless_record_of_the_request() -> None:
    keyed = stored_batch([(b"a", b"1"), (b"b", b"2")])
    mixed = stored_batch([(b"a", b"1"), (None, b"2"), (b"c", b"3"), (None, None)], codec=Codec.GZIP)
    require_keys(keyed + keyed)  # all keyed: nothing to say
    with pytest.raises(InvalidRequestError) as refused:
        require_keys(keyed + mixed)
    assert refused.value.code is ErrorCode.INVALID_RECORD
    assert refused.value.details["record_indexes"] == [3, 5]
    with pytest.raises(CorruptBatchError):
        require_keys(keyed[:-3])


_RECORDS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.binary(max_size=200)),  # key
        st.one_of(st.none(), st.sampled_from([0, 1, 60, 63, 64, 100, 8200, 9000])),  # value
        st.integers(0, 10**9),  # timestamp delta: 1- to 5-byte varints
        st.integers(0, 20_000),  # offset gap: deltas of 1 to 3 bytes
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200)
@given(records=_RECORDS, gzip=st.booleans())
def test_require_keys_finds_exactly_the_keyless_records(
    records: list[tuple[bytes | None, int | None, int, int]], gzip: bool
) -> None:
    """Against the full decoder, over record lengths of 1, 2 and 3 varint bytes (the inline
    fast paths and the general one) and timestamp/offset deltas of every width."""
    builder = BatchBuilder(codec=Codec.GZIP if gzip else Codec.NONE)
    offset_delta = 0
    for key, value_size, timestamp_delta_ms, gap in records:
        value = None if value_size is None else b"v" * value_size
        builder.append(value, key, (), 1_700_000_000_000 + timestamp_delta_ms, offset_delta)
        offset_delta += 1 + gap
    batch = builder.build()
    keyless = [i for i, r in enumerate(decode_batches(batch)) if r.key is None]
    if not keyless:
        require_keys(batch)
        return
    with pytest.raises(InvalidRequestError) as refused:
        require_keys(batch)
    assert refused.value.details["record_indexes"] == keyless


@settings(max_examples=300)
@given(data=st.binary(min_size=61, max_size=400), count=st.integers(0, 40))
def test_require_keys_on_garbage_raises_only_typed_errors(data: bytes, count: int) -> None:
    raw = bytearray(data)
    raw[8:12] = (len(raw) - 12).to_bytes(4, "big")
    raw[16] = 2
    raw[21:23] = b"\x00\x00"
    raw[57:61] = count.to_bytes(4, "big")
    with contextlib.suppress(CorruptBatchError, InvalidRequestError):
        require_keys(bytes(raw))
