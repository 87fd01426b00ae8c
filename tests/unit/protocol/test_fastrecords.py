"""The compiled record codec against the pure-Python one: each decodes the other's batches
(headers, null keys and values, timestamps, every codec installed here), uncompressed
batches are byte-identical, and the codec is chosen as documented."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.client.recordcodec import configured_codec
from conveyor.protocol.batch import parse_header, validate_batches
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.fastrecords import (
    _COUNTS_LEN,
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
