"""RecordBatch v2 records: kafka-python as the oracle, real bytes, no mocks.

kafka-python's ``DefaultRecordBatchBuilder`` and ``DefaultRecordBatch`` are an independent
implementation of the same format, so uncompressed batches must match it byte for byte
and compressed batches must decode both ways.
"""

from __future__ import annotations

import contextlib
import random
import struct
import warnings
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.batch import (
    CRC_START,
    HEADER_SIZE,
    crc32c,
    parse_header,
    validate_batches,
)
from conveyor.protocol.errors import CorruptBatchError, ErrorCode, InvalidRequestError
from conveyor.protocol.fastrecords import COMPILED, PYTHON, Builder, compiled_available
from conveyor.protocol.records import (
    BatchBuilder,
    Codec,
    Record,
    check_producer,
    codec_available,
    encode_batch,
)

with warnings.catch_warnings():
    # kafka-python 3.0.12 calls importlib.resources.read_text, deprecated in Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatchBuilder
    from kafka.record.memory_records import MemoryRecords

    from kafka import codec as kafka_codec

# (key, value, headers, timestamp_ms), the shape both builders take
Spec = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]], int]

HEADER_FORMAT = struct.Struct(">qiibIhiqqqhii")  # the oracle's own copy of the layout
BATCH_BYTES_MAX = 1 << 24
AVAILABLE_CODECS = [codec for codec in Codec if codec_available(codec)]
NOW_MS = 1_700_000_000_000


# Every test here runs against both record codecs (protocol/fastrecords.py): the same
# vectors, the same oracle (kafka-python's bytes).
_CODEC = {"in use": PYTHON}


@pytest.fixture(scope="module", autouse=True, params=["python", "compiled"])
def record_codec(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "compiled" and not compiled_available():
        pytest.skip("aiokafka's compiled extension is not installed")
    _CODEC["in use"] = COMPILED if request.param == "compiled" else PYTHON
    yield request.param
    _CODEC["in use"] = PYTHON


def decode_batches(
    buf: bytes | bytearray | memoryview, *, verify_crc: bool = True, start_offset: int = 0
) -> list[Record]:
    return _CODEC["in use"].decode(buf, verify_crc=verify_crc, start_offset=start_offset)


def new_builder(codec: Codec = Codec.NONE) -> Builder:
    return _CODEC["in use"].new_builder(codec)


def kafka_build(
    specs: Sequence[Spec],
    *,
    codec: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    offsets: Sequence[int] | None = None,
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=BATCH_BYTES_MAX,
    )
    for index, (key, value, headers, timestamp_ms) in enumerate(specs):
        offset = index if offsets is None else offsets[index]
        assert builder.append(offset, timestamp_ms, key, value, list(headers)) is not None
    return bytes(builder.build())


def kafka_decode(batch: bytes) -> list[Record]:
    records = MemoryRecords(batch)
    out = []
    while (kafka_batch := records.next_batch()) is not None:
        assert kafka_batch.validate_crc()
        out += [
            Record(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in kafka_batch
        ]
    return out


def build(specs: Sequence[Spec], *, codec: Codec = Codec.NONE, **kwargs: int) -> bytes:
    base_offset = kwargs.pop("base_offset", 0)
    builder = new_builder(codec)
    if kwargs:
        builder.set_producer(
            kwargs.get("producer_id", -1),
            kwargs.get("producer_epoch", -1),
            kwargs.get("base_sequence", -1),
        )
    for key, value, headers, timestamp_ms in specs:
        builder.append(value, key, headers, timestamp_ms)
    # kafka-python writes partition_leader_epoch 0 where the Java client writes -1
    return builder.build(base_offset=base_offset, partition_leader_epoch=0)


def expected(specs: Sequence[Spec], base_offset: int = 0) -> list[Record]:
    return [
        Record(base_offset + index, timestamp_ms, key, value, tuple(headers))
        for index, (key, value, headers, timestamp_ms) in enumerate(specs)
    ]


def restamp(
    batch: bytes,
    *,
    attributes: int | None = None,
    records_count: int | None = None,
    records: bytes | None = None,
) -> bytes:
    """``batch`` with header fields or the records region replaced and a valid CRC."""
    header = parse_header(batch)
    body = batch[HEADER_SIZE:] if records is None else records
    if attributes is not None:
        header = header._replace(attributes=attributes)
    if records_count is not None:
        header = header._replace(records_count=records_count)
    header = header._replace(batch_length=HEADER_SIZE - 12 + len(body), crc=0)
    out = bytearray(HEADER_FORMAT.pack(*header)) + body
    struct.pack_into(">I", out, 17, crc32c(out[CRC_START:]))
    return bytes(out)


SAMPLE: list[Spec] = [
    (None, b"v1", (), NOW_MS),
    (b"k", None, [("h", b"x"), ("null", None)], NOW_MS + 5),
    (b"", b"", (), NOW_MS - 3),  # earlier than the base: a negative timestamp delta
    (b"kk", b"x" * 300, [("", b""), ("\u00e9t\u00e9", b"\x00\xff")], NOW_MS + 70_000),
    (None, None, (), NOW_MS),
]

EDGE_SPECS: dict[str, list[Spec]] = {
    "sample": SAMPLE,
    "one null record": [(None, None, (), 0)],
    "varint length edges": [
        (b"k" * n, b"v" * m, (), NOW_MS) for n, m in [(63, 64), (64, 63), (8191, 8192), (0, 8191)]
    ],
    "16 KiB values": [(None, b"z" * 16_400, (), NOW_MS), (b"k", b"y" * 20_000, (), NOW_MS)],
    "offset deltas past one and two bytes": [(None, b"v", (), NOW_MS + i) for i in range(8300)],
    "far-apart timestamps": [(None, b"v", (), t) for t in (5, 2**40, -1, 2**62, 0)],
}


@pytest.mark.parametrize("name", EDGE_SPECS)
@pytest.mark.parametrize(
    ("producer_id", "producer_epoch", "base_sequence"), [(-1, -1, -1), (42, 7, 1_000)]
)
def test_uncompressed_bytes_equal_kafka_python(
    name: str, producer_id: int, producer_epoch: int, base_sequence: int
) -> None:
    specs = EDGE_SPECS[name]
    ids = (producer_id, producer_epoch, base_sequence)
    ours = build(specs, producer_id=ids[0], producer_epoch=ids[1], base_sequence=ids[2])
    theirs = kafka_build(specs, producer_id=ids[0], producer_epoch=ids[1], base_sequence=ids[2])
    assert ours == theirs
    assert decode_batches(theirs) == expected(specs)


@pytest.mark.parametrize("codec", [c for c in AVAILABLE_CODECS if c is not Codec.NONE])
def test_compressed_batches_decode_both_ways(codec: Codec) -> None:
    kafka_has = {
        Codec.GZIP: kafka_codec.has_gzip,
        Codec.SNAPPY: kafka_codec.has_snappy,
        Codec.LZ4: kafka_codec.has_lz4,
        Codec.ZSTD: kafka_codec.has_zstd,
    }
    if not kafka_has[codec]():
        pytest.skip(f"kafka-python cannot use {codec.name} here (python-snappy is missing)")
    specs: list[Spec] = [
        (b"key-%d" % (i % 7), b"value %d " % i * 20, [("i", b"%d" % i)] if i % 3 else (), NOW_MS)
        for i in range(500)
    ]
    ours = build(specs, codec=codec)
    assert parse_header(ours).codec == codec
    assert kafka_decode(ours) == expected(specs)
    theirs = kafka_build(specs, codec=int(codec))
    assert parse_header(theirs).codec == codec
    assert decode_batches(theirs) == expected(specs)


def test_non_contiguous_offsets_of_a_compacted_batch() -> None:
    specs = SAMPLE[:3]
    batch = kafka_build(specs, offsets=[0, 2, 5])
    assert [record.offset for record in decode_batches(batch)] == [0, 2, 5]
    assert [record.offset for record in decode_batches(batch, start_offset=1)] == [2, 5]


header_strategy = st.tuples(st.text(max_size=6), st.none() | st.binary(max_size=8))
spec_strategy = st.tuples(
    st.none() | st.binary(max_size=16),
    st.none() | st.binary(max_size=160),
    st.lists(header_strategy, max_size=3),
    st.integers(min_value=-1, max_value=2**43),
)


@settings(max_examples=60)
@given(specs=st.lists(spec_strategy, min_size=1, max_size=30))
def test_property_uncompressed_equals_kafka_python(specs: list[Spec]) -> None:
    assert build(specs) == kafka_build(specs)


@settings(max_examples=120)
@given(
    specs=st.lists(spec_strategy, min_size=1, max_size=30),
    codec=st.sampled_from(AVAILABLE_CODECS),
    base_offset=st.integers(min_value=0, max_value=2**40),
    producer=st.tuples(
        st.integers(-1, 2**63 - 1), st.integers(-1, 2**15 - 1), st.integers(-1, 2**31 - 1)
    ),
)
def test_property_round_trip(
    specs: list[Spec], codec: Codec, base_offset: int, producer: tuple[int, int, int]
) -> None:
    producer_id, producer_epoch, base_sequence = producer
    batch = build(
        specs,
        codec=codec,
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )
    [span] = validate_batches(batch, BATCH_BYTES_MAX)
    header = span.header
    assert header.records_count == len(specs)
    assert header.base_timestamp == specs[0][3]
    assert header.max_timestamp == max(spec[3] for spec in specs)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == producer
    assert header.codec in (codec, Codec.NONE)  # NONE when compression did not pay
    assert decode_batches(batch) == expected(specs, base_offset)
    assert decode_batches(memoryview(bytearray(batch)), verify_crc=False) == expected(
        specs, base_offset
    )


@settings(max_examples=200)
@given(
    specs=st.lists(spec_strategy, min_size=1, max_size=5),
    codec=st.sampled_from(AVAILABLE_CODECS),
    edits=st.lists(st.tuples(st.integers(0), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_property_garbage_raises_only_typed_errors(
    specs: list[Spec], codec: Codec, edits: list[tuple[int, int]]
) -> None:
    """Without the CRC to catch them, mangled records still fail with a typed error."""
    batch = bytearray(build(specs, codec=codec))
    for position, byte in edits:
        batch[HEADER_SIZE + position % (len(batch) - HEADER_SIZE)] = byte
    with contextlib.suppress(InvalidRequestError):  # CorruptBatchError, or a missing codec
        decode_batches(batch, verify_crc=False)


@pytest.mark.parametrize("codec", AVAILABLE_CODECS)
def test_any_changed_byte_after_the_magic_fails_the_crc(codec: Codec) -> None:
    batch = build(SAMPLE, codec=codec)
    assert decode_batches(batch) == expected(SAMPLE)
    for position in range(CRC_START - 4, len(batch)):
        corrupt = bytearray(batch)
        corrupt[position] ^= 0x5A
        with pytest.raises(CorruptBatchError) as info:
            decode_batches(corrupt)
        assert info.value.code is ErrorCode.CORRUPT_MESSAGE


def test_wrong_magic_is_unsupported() -> None:
    corrupt = bytearray(build(SAMPLE))
    corrupt[16] = 1
    with pytest.raises(CorruptBatchError) as info:
        decode_batches(corrupt)
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


def test_truncated_trailing_batch_is_ignored() -> None:
    first = build(SAMPLE[:2])
    second = build(SAMPLE[2:], base_offset=2)
    assert decode_batches(first + second) == expected(SAMPLE)
    for cut in range(len(second)):
        assert decode_batches(first + second[:cut]) == expected(SAMPLE[:2])


def test_records_count_that_disagrees_with_the_records_is_corrupt() -> None:
    batch = build(SAMPLE)
    for count in (len(SAMPLE) - 1, len(SAMPLE) + 1, 10**6):
        with pytest.raises(CorruptBatchError):
            decode_batches(restamp(batch, records_count=count))


def test_start_offset_skips_earlier_records() -> None:
    specs = [(None, b"%d" % i, (), NOW_MS + i) for i in range(30)]
    batches = b"".join(
        build(specs[base : base + 10], base_offset=base) for base in range(0, 30, 10)
    )
    for start_offset in (0, 5, 10, 15, 29, 30, 100):
        records = decode_batches(batches, start_offset=start_offset)
        assert records == expected(specs)[start_offset:]


def test_control_batches_are_skipped() -> None:
    first = build(SAMPLE[:2])
    control = restamp(build(SAMPLE[2:3], base_offset=2), attributes=0x20 | 0x10)
    last = build(SAMPLE[3:], base_offset=3)
    assert decode_batches(first + control + last) == expected(SAMPLE)[:2] + expected(SAMPLE)[3:]
    assert decode_batches(control) == []


def test_log_append_time_batches_take_max_timestamp() -> None:
    batch = restamp(build(SAMPLE), attributes=0x08)
    max_timestamp = max(spec[3] for spec in SAMPLE)
    assert [r.timestamp_ms for r in decode_batches(batch)] == [max_timestamp] * len(SAMPLE)


def test_incompressible_records_go_out_uncompressed() -> None:
    noise = random.Random(7).randbytes(4_000)
    batch = build([(None, noise, (), NOW_MS)], codec=Codec.GZIP)
    assert parse_header(batch).codec == Codec.NONE
    assert decode_batches(batch) == expected([(None, noise, (), NOW_MS)])


@pytest.mark.skipif(not codec_available(Codec.ZSTD), reason="zstandard is not installed")
def test_zstd_frame_without_content_size_as_java_writes_it() -> None:
    import zstandard

    specs: list[Spec] = [(None, b"abc" * 50, (), NOW_MS)] * 20
    plain = build(specs)
    streamer = zstandard.ZstdCompressor(level=3).compressobj()
    frame = streamer.compress(plain[HEADER_SIZE:]) + streamer.flush()
    assert zstandard.frame_content_size(frame) == -1
    batch = restamp(plain, attributes=int(Codec.ZSTD), records=frame)
    assert decode_batches(batch) == expected(specs)


@pytest.mark.skipif(not codec_available(Codec.LZ4), reason="lz4 is not installed")
def test_lz4_uses_java_compatible_frames() -> None:
    import lz4.frame

    specs: list[Spec] = [(None, b"%d" % i * 100, (), NOW_MS) for i in range(2_000)]
    batch = build(specs, codec=Codec.LZ4)
    info = lz4.frame.get_frame_info(batch[HEADER_SIZE:])
    assert info["block_linked"] is False
    assert info["content_checksum"] is False
    assert info["content_size"] == 0
    assert info["block_size"] == 64 * 1024


@pytest.mark.skipif(codec_available(Codec.SNAPPY), reason="a snappy library is installed")
def test_missing_snappy_library_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequestError, match="cramjam"):
        BatchBuilder(codec=Codec.SNAPPY)
    batch = restamp(build(SAMPLE), attributes=int(Codec.SNAPPY))
    with pytest.raises(InvalidRequestError, match="cramjam") as info:
        decode_batches(batch)
    assert not isinstance(info.value, CorruptBatchError)


def test_size_bytes_estimate_is_the_uncompressed_size() -> None:
    builder = new_builder()
    assert (builder.records_count, builder.size_bytes_estimate) == (0, HEADER_SIZE)
    for key, value, headers, timestamp_ms in SAMPLE:
        builder.append(value, key, headers, timestamp_ms)
    assert builder.records_count == len(SAMPLE)
    assert builder.size_bytes_estimate == len(builder.build())
    assert builder.build() == builder.build()


def test_append_returns_offset_delta_and_stamps_now() -> None:
    builder = new_builder()
    assert [builder.append(b"x") for _ in range(3)] == [0, 1, 2]
    batch = builder.build()
    [first, *_] = decode_batches(batch)
    assert first.timestamp_ms == parse_header(batch).base_timestamp > NOW_MS


def test_encode_batch_pairs_are_key_then_value() -> None:
    batch = encode_batch(
        [(b"k1", b"v1"), (None, b"v2")],
        headers=[[("a", b"1")], []],
        timestamp_ms=NOW_MS,
        producer_id=3,
        producer_epoch=1,
        base_sequence=9,
    )
    assert decode_batches(batch) == [
        Record(0, NOW_MS, b"k1", b"v1", (("a", b"1"),)),
        Record(1, NOW_MS, None, b"v2", ()),
    ]
    assert parse_header(batch).base_sequence == 9
    with pytest.raises(InvalidRequestError):
        encode_batch([(None, b"v")], headers=[[], []])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"producer_epoch": 2**15},
        {"base_sequence": 2**31},
        {"producer_id": 2**63},
        {"codec": 7},
    ],
)
def test_builder_rejects_out_of_range_fields(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidRequestError):
        BatchBuilder(**kwargs)  # type: ignore[arg-type]


def test_empty_builder_cannot_build() -> None:
    with pytest.raises(InvalidRequestError):
        new_builder().build()


def test_empty_buffer_decodes_to_nothing() -> None:
    assert decode_batches(b"") == []


@pytest.mark.parametrize(
    ("fields", "fits"),
    [
        ((-1, -1, -1), True),  # no producer
        ((2**63 - 1, 2**15 - 1, 2**31 - 1), True),
        ((-(2**63), -(2**15), -(2**31)), True),
        ((2**63, 0, 0), False),
        ((0, 2**15, 0), False),
        ((0, 0, -(2**31) - 1), False),
    ],
)
def test_producer_fields_must_fit_the_header(fields: tuple[int, int, int], fits: bool) -> None:
    builder = BatchBuilder()
    builder.append(b"v", timestamp_ms=1)
    if fits:
        check_producer(*fields)
        builder.set_producer(*fields)
    else:
        with pytest.raises(InvalidRequestError, match="out of range"):
            check_producer(*fields)
        with pytest.raises(InvalidRequestError, match="out of range"):
            builder.set_producer(*fields, transactional=True)
        assert builder.build() == _plain_builder_bytes()  # a refused stamp changes nothing


def _plain_builder_bytes() -> bytes:
    builder = BatchBuilder()
    builder.append(b"v", timestamp_ms=1)
    return builder.build()
