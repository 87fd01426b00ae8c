"""The compiled record codec against the pure-Python one: each decodes the other's batches
(headers, null keys and values, timestamps, every codec installed here), uncompressed
batches are byte-identical, and the codec is chosen as documented."""

from __future__ import annotations

import itertools
import struct
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.client.recordcodec import configured_codec
from conveyor.protocol.batch import crc32c, parse_header, validate_batches
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.fastrecords import (
    _COUNTS_LEN,
    _CRECORDS,
    COMPILED,
    PYTHON,
    CompiledBatchBuilder,
    RecordCodec,
    compiled_available,
    decode_batches_compiled,
    record_codec,
)
from conveyor.protocol.records import Codec, Record, codec_available

pytestmark = pytest.mark.skipif(
    not compiled_available(), reason="aiokafka's compiled extension is not installed"
)

Spec = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]], int]
AVAILABLE_CODECS = [codec for codec in Codec if codec_available(codec)]
BATCH_BYTES_MAX = 1 << 24

spec_strategy = st.tuples(
    st.none() | st.binary(max_size=16),
    st.none() | st.binary(max_size=300),
    st.lists(st.tuples(st.text(max_size=6), st.none() | st.binary(max_size=8)), max_size=3),
    st.integers(min_value=-1, max_value=2**43),
)


def encode(codec: RecordCodec, specs: list[Spec], compression: Codec) -> bytes:
    builder = codec.new_builder(compression)
    for key, value, headers, timestamp_ms in specs:
        builder.append(value, key, headers, timestamp_ms)
    return builder.build()


def expected(specs: list[Spec]) -> list[Record]:
    return [
        Record(index, timestamp_ms, key, value, tuple(headers))
        for index, (key, value, headers, timestamp_ms) in enumerate(specs)
    ]


@settings(max_examples=150)
@given(
    specs=st.lists(spec_strategy, min_size=1, max_size=40),
    compression=st.sampled_from(AVAILABLE_CODECS),
    writer=st.sampled_from([PYTHON, COMPILED]),
)
def test_property_each_codec_decodes_the_others_batches(
    specs: list[Spec], compression: Codec, writer: RecordCodec
) -> None:
    batch = encode(writer, specs, compression)
    validate_batches(batch, BATCH_BYTES_MAX)  # what the broker checks: header and CRC
    assert PYTHON.decode(batch) == COMPILED.decode(batch) == expected(specs)
    if compression is Codec.NONE:
        assert batch == encode(PYTHON if writer is COMPILED else COMPILED, specs, compression)


def test_transactional_producer_stamp_matches_the_pure_builder() -> None:
    specs: list[Spec] = [(b"k", b"v", [("h", None)], 1_000), (None, b"w", (), 1_001)]
    batches = []
    for codec in (PYTHON, COMPILED):
        builder = codec.new_builder(Codec.NONE)
        for key, value, headers, timestamp_ms in specs:
            builder.append(value, key, headers, timestamp_ms)
        builder.set_producer(77, 3, 12, transactional=True)
        batches.append(builder.build(base_offset=40, partition_leader_epoch=5))
    assert batches[0] == batches[1]
    header = parse_header(batches[1])
    assert header.attributes & 0x10  # transactional
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (77, 3, 12)
    assert [r.offset for r in decode_batches_compiled(batches[1])] == [40, 41]


@pytest.mark.parametrize("timestamps", [[-1, 0], [-1, 5, -1], [0, -1], [-5, 3]])
def test_a_first_timestamp_of_minus_one_is_kept(timestamps: list[int]) -> None:
    """aiokafka reads -1 as "no timestamp yet"; the record keeps it all the same."""
    specs: list[Spec] = [(None, b"v", (), timestamp_ms) for timestamp_ms in timestamps]
    batch = encode(COMPILED, specs, Codec.NONE)
    assert batch == encode(PYTHON, specs, Codec.NONE)
    assert COMPILED.decode(batch) == expected(specs)


def test_bad_records_are_typed_errors() -> None:
    builder = CompiledBatchBuilder()
    with pytest.raises(InvalidRequestError):
        builder.append("not bytes")  # type: ignore[arg-type]
    builder.append(b"v", offset_delta=4)
    with pytest.raises(InvalidRequestError, match="does not increase"):
        builder.append(b"v", offset_delta=4)
    with pytest.raises(InvalidRequestError):
        builder.set_producer(1, 2**15, 0)


def test_compressed_batches_use_the_pure_builder() -> None:
    assert isinstance(COMPILED.new_builder(Codec.NONE), CompiledBatchBuilder)
    assert not isinstance(COMPILED.new_builder(Codec.GZIP), CompiledBatchBuilder)


def test_codec_choice() -> None:
    assert record_codec("auto") is COMPILED
    assert record_codec("compiled") is COMPILED
    assert record_codec("python") is PYTHON
    with pytest.raises(InvalidRequestError, match="unknown record codec"):
        record_codec("cython")
    assert configured_codec({}) is COMPILED
    assert configured_codec({"CONVEYOR_RECORD_CODEC": "python"}) is PYTHON
    assert configured_codec({"CONVEYOR_RECORD_CODEC": "Compiled"}) is COMPILED


def test_a_batch_longer_than_the_shared_counts_keeps_counting() -> None:
    """Counts come from a table of shared ints (``_shared_counts``) and go on past its end."""
    builder = CompiledBatchBuilder()
    total = _COUNTS_LEN + 3
    deltas = [builder.append(b"", None, (), 7) for _ in range(total)]
    assert deltas == list(range(total))
    assert builder.records_count == total
    assert [r.offset for r in decode_batches_compiled(builder.build(base_offset=10))] == list(
        range(10, 10 + total)
    )


def aiokafka_build(  # noqa: PLR0917 -- the test's own arguments
    specs: list[Spec],
    deltas: list[int],
    producer: tuple[int, int, int] | None,
    transactional: bool,
    base_offset: int,
    leader_epoch: int,
) -> bytes:
    """The batch as aiokafka's own ``build()`` makes it (header and its software CRC), with
    the fields it cannot set patched in and the CRC redone, as the compiled builder did
    before it wrote headers itself; a first timestamp of -1 goes to the pure builder."""
    if specs[0][3] == -1:
        pure = PYTHON.new_builder(Codec.NONE)
        for (key, value, headers, timestamp_ms), delta in zip(specs, deltas, strict=True):
            pure.append(value, key, headers, timestamp_ms, delta)
        if producer is not None:
            pure.set_producer(*producer, transactional=transactional)
        return pure.build(base_offset, leader_epoch)
    builder = _CRECORDS.DefaultRecordBatchBuilder(2, 0, int(transactional), -1, -1, -1, 2**31 - 1)
    for (key, value, headers, timestamp_ms), delta in zip(specs, deltas, strict=True):
        builder.append(delta, timestamp_ms, key, value, list(headers))
    if producer is not None:
        builder.set_producer_state(*producer)
    out = builder.build()
    struct.pack_into(">q", out, 0, base_offset)
    struct.pack_into(">i", out, 12, leader_epoch)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


@settings(max_examples=300)
@given(
    specs=st.lists(spec_strategy, min_size=1, max_size=40),
    gaps=st.lists(st.integers(min_value=0, max_value=3), min_size=40, max_size=40),
    producer=st.none()
    | st.tuples(
        st.integers(min_value=-1, max_value=2**63 - 1),
        st.integers(min_value=-1, max_value=2**15 - 1),
        st.integers(min_value=-1, max_value=2**31 - 1),
    ),
    producer_first=st.booleans(),
    transactional=st.booleans(),
    base_offset=st.integers(min_value=0, max_value=2**62),
    leader_epoch=st.integers(min_value=-1, max_value=2**31 - 1),
)
def test_property_the_builders_header_and_crc_match_aiokafkas_build(  # noqa: PLR0917
    specs: list[Spec],
    gaps: list[int],
    producer: tuple[int, int, int] | None,
    producer_first: bool,
    transactional: bool,
    base_offset: int,
    leader_epoch: int,
) -> None:
    """The header and CRC written by ``CompiledBatchBuilder.build`` (hardware CRC) are
    aiokafka's own, byte for byte: records, offset deltas with gaps, producer state set
    before or after the records, transactional or not."""
    deltas = list(itertools.accumulate(gap + 1 for gap in gaps[: len(specs)]))
    deltas = [delta - deltas[0] for delta in deltas]  # the first record's delta: 0
    builder = CompiledBatchBuilder()
    if producer is not None and producer_first:
        builder.set_producer(*producer, transactional=transactional)
    for (key, value, headers, timestamp_ms), delta in zip(specs, deltas, strict=True):
        builder.append(value, key, headers, timestamp_ms, delta)
    if producer is not None and not producer_first:
        builder.set_producer(*producer, transactional=transactional)
    batch = builder.build(base_offset, leader_epoch)
    tx = transactional and producer is not None
    assert batch == aiokafka_build(specs, deltas, producer, tx, base_offset, leader_epoch)
    assert batch == builder.build(base_offset, leader_epoch)  # building again: same bytes
    validate_batches(batch, BATCH_BYTES_MAX, stored=True)  # stored: offset deltas with gaps


def test_unstamped_records_get_the_time_and_the_header_their_max() -> None:
    builder = CompiledBatchBuilder()
    before_ms = time.time_ns() // 1_000_000
    builder.append(b"a")
    builder.append(b"b", timestamp_ms=before_ms + 60_000)
    builder.append(b"c")
    after_ms = time.time_ns() // 1_000_000
    batch = builder.build()
    validate_batches(batch, BATCH_BYTES_MAX)
    header = parse_header(batch)
    records = decode_batches_compiled(batch)
    assert before_ms <= records[0].timestamp_ms == header.base_timestamp <= after_ms
    assert before_ms <= records[2].timestamp_ms <= after_ms
    assert header.max_timestamp == before_ms + 60_000


def test_a_last_offset_delta_beyond_int32_is_a_typed_error() -> None:
    builder = CompiledBatchBuilder()
    builder.append(b"v", offset_delta=2**31)
    with pytest.raises(InvalidRequestError, match="out of range"):
        builder.build()
