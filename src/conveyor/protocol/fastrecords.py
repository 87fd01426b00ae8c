"""The compiled RecordBatch v2 codec: aiokafka's Cython builder and reader behind the same
interface as :mod:`conveyor.protocol.records`, which stays the tested fallback.

Why aiokafka's: it ships cp311 manylinux wheels with the extension built, so a fresh
machine needs no compiler, and it measured 5x the pure-Python encoder and 10x+ the decoder
here (docs/benchmarks.md, "Record codec"; ``scripts/bench_codec.py``). Only its record
classes are used, never its client.

What goes where: uncompressed batches' records are encoded and decoded by the extension;
the batch header and its CRC-32C are written here (``CompiledBatchBuilder.build``), since
the extension's own build computes the CRC in software, 5x the ``crc32c`` package's time;
compressed ones use the pure-Python path (compression costs far more than the framing, and
the pure path's codecs are the ones already checked against the Java client's bytes).
Both produce the same wire format; tests/unit/protocol/test_fastrecords.py checks that
each decodes the other's batches. The broker validates only the header and CRC.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from conveyor.protocol.batch import (
    HEADER_SIZE,
    TRANSACTIONAL_BIT,
    BatchHeader,
    seal_batch,
)
from conveyor.protocol.errors import CorruptBatchError, InvalidRequestError
from conveyor.protocol.records import (
    BatchBuilder,
    Codec,
    Headers,
    Record,
    check_producer,
    decode_batches,
    make_records,
    walk_batches,
)

__all__ = [
    "CODEC_NAMES",
    "ENCODE_ERRORS",
    "NO_HEADERS",
    "CompiledBatchBuilder",
    "RecordCodec",
    "compiled_available",
    "decode_batches_compiled",
    "record_codec",
    "record_lane",
    "shared_counts",
]

CODEC_NAMES: Final = ("auto", "compiled", "python")
_ATTRIBUTES_AT: Final = 21  # offset of the int16 attributes in the batch header
_INT32_MAX: Final = (1 << 31) - 1
NO_HEADERS: Final[list[tuple[str, bytes | None]]] = []  # the extension only reads it
ENCODE_ERRORS: Final = (TypeError, ValueError, OverflowError, UnicodeError)
"""What the extension raises for a record it cannot encode (a str key, a bad header)."""
_COUNTS_LEN: Final = 16_384


@functools.cache
def shared_counts() -> tuple[int, ...]:
    """Record counts (and so offset deltas) as shared int objects: a producer's record
    future keeps its offset delta, and with an int of its own per record (any above 256)
    the garbage collector's full passes over a million live futures touch twice the memory
    (docs/benchmarks.md, "W1 send per record"). Made on first use: 640 KiB that processes
    which never build a batch (brokers) need not hold."""
    return tuple(range(_COUNTS_LEN))


def _load() -> Any | None:
    """aiokafka's Cython module, or None when it (or its extension) is not installed.
    Imported directly, not through aiokafka.record.default_records, which would silently
    give its pure-Python classes instead."""
    try:
        return importlib.import_module("aiokafka.record._crecords.default_records")
    except ImportError:
        return None


_CRECORDS: Final = _load()


def _build_returns_buffer() -> bool:
    """Whether the extension's ``build()`` hands back the builder's own buffer, the one
    its appends go on growing (aiokafka 0.14 does). Then a builder keeps that buffer from
    an empty build and writes the header itself, never calling the software CRC again;
    otherwise it builds as the extension does."""
    if _CRECORDS is None:
        return False
    builder = _CRECORDS.DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, _INT32_MAX)
    buffer = builder.build()
    builder.append(0, 0, None, b"probe", NO_HEADERS)
    return bool(len(buffer) == builder.size() > HEADER_SIZE)


_OWN_HEADER: Final = _build_returns_buffer()


def compiled_available() -> bool:
    return _CRECORDS is not None


class Builder(Protocol):
    """What the producer needs from a batch builder (both implementations have it)."""

    @property
    def records_count(self) -> int: ...
    @property
    def size_bytes_estimate(self) -> int: ...
    @property
    def codec(self) -> Codec: ...
    def append(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
        offset_delta: int | None = None,
    ) -> int: ...
    def set_producer(
        self, producer_id: int, producer_epoch: int, base_sequence: int, transactional: bool = False
    ) -> None: ...
    def build(self, base_offset: int = 0, partition_leader_epoch: int = -1) -> bytes: ...


class CompiledBatchBuilder:
    """:class:`~conveyor.protocol.records.BatchBuilder`'s interface over aiokafka's Cython
    ``DefaultRecordBatchBuilder``, for uncompressed batches.

    The extension encodes the records into its buffer; ``build`` writes the 61-byte
    header over the buffer's first bytes and computes the CRC with the ``crc32c`` package
    (hardware CRC-32C: 26 us for a 130 KB batch, against 134 us for the extension's
    software loop, on the producer's I/O thread). The header's fields the extension keeps
    to itself (first and max timestamps) are tracked here, one comparison a record.

    The record lane: the producer's accumulator appends most records without the frame
    of :meth:`append` (~0.1 us a record, docs/benchmarks.md "W1 send per record"). While
    :func:`record_lane` gives the builder, its owner may append record number
    ``records_count`` (its offset delta) as :meth:`append` would, in three steps:
    ``encode(records_count, timestamp_ms, key, value, headers_list or NO_HEADERS)``
    (raising one of ``ENCODE_ERRORS``, with nothing appended, for a bad record), then
    ``records_count`` one up (an int from :func:`shared_counts` while the table lasts),
    then ``max_timestamp_ms`` raised to ``timestamp_ms`` if below. Both ways can be mixed.
    """

    __slots__ = (
        "_append",
        "_buffer",
        "_builder",
        "_counts",
        "_first_timestamp_ms",
        "_last_offset_delta",
        "_pure",
        "_transactional",
        "encode",
        "max_timestamp_ms",
        "records_count",
    )

    def __init__(self) -> None:
        if _CRECORDS is None:
            raise InvalidRequestError("the compiled record codec (aiokafka) is not installed")
        # batch_size: the producer closes batches itself (size_bytes_estimate), so the
        # builder's own limit is set where it never refuses a record.
        self._builder = _CRECORDS.DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, _INT32_MAX)
        self._append = self.encode = self._builder.append
        # the extension's own buffer (_build_returns_buffer), from a build of no records
        self._buffer: bytearray | None = self._builder.build() if _OWN_HEADER else None
        self._counts = shared_counts()
        # aiokafka reads a first timestamp of -1 as "none yet" and rebases the batch on the
        # next record's, changing the first record's timestamp; such a batch (only a
        # caller-given -1 makes one) is built by the pure builder instead.
        self._pure: BatchBuilder | None = None
        self.records_count = 0
        # the last offset delta given to ``append``; the lane's records leave it behind,
        # but deltas only grow and are at least their record's index (build's max())
        self._last_offset_delta = -1
        self._first_timestamp_ms = self.max_timestamp_ms = 0
        self._transactional = False

    @property
    def size_bytes_estimate(self) -> int:
        if self._pure is not None:
            return self._pure.size_bytes_estimate
        size: int = self._builder.size()
        return size

    @property
    def codec(self) -> Codec:
        return Codec.NONE

    def set_producer(
        self, producer_id: int, producer_epoch: int, base_sequence: int, transactional: bool = False
    ) -> None:
        check_producer(producer_id, producer_epoch, base_sequence)
        self._builder.set_producer_state(producer_id, producer_epoch, base_sequence)
        self._transactional = transactional
        if self._pure is not None:
            self._pure.set_producer(producer_id, producer_epoch, base_sequence, transactional)

    def append(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
        offset_delta: int | None = None,
    ) -> int:
        count = self.records_count
        if offset_delta is None:
            offset_delta = count
        elif offset_delta <= (max(self._last_offset_delta, count - 1) if count else -1):
            raise InvalidRequestError(f"offset delta {offset_delta} does not increase")
        if not count or self._pure is not None:
            return self._append_rare(value, key, headers, timestamp_ms, offset_delta)
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        try:
            self._append(
                offset_delta, timestamp_ms, key, value, list(headers) if headers else NO_HEADERS
            )
        except ENCODE_ERRORS as exc:
            raise InvalidRequestError(f"record cannot be encoded: {exc}") from exc
        if timestamp_ms > self.max_timestamp_ms:  # noqa: PLR1730 -- max() is a call
            self.max_timestamp_ms = timestamp_ms
        count += 1
        # a shared int from the table, not a new one per record (shared_counts)
        self.records_count = self._counts[count] if count < _COUNTS_LEN else count
        self._last_offset_delta = offset_delta
        return offset_delta

    def _append_rare(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        timestamp_ms: int | None,
        offset_delta: int,
    ) -> int:
        """``append`` of a batch's first record, or of any record once the batch is the
        pure builder's."""
        if self._pure is None and timestamp_ms != -1:
            if timestamp_ms is None:
                timestamp_ms = time.time_ns() // 1_000_000
            try:
                self._append(
                    offset_delta,
                    timestamp_ms,
                    key,
                    value,
                    list(headers) if headers else NO_HEADERS,
                )
            except ENCODE_ERRORS as exc:
                raise InvalidRequestError(f"record cannot be encoded: {exc}") from exc
            self._first_timestamp_ms = self.max_timestamp_ms = timestamp_ms
            self.records_count = 1
            self._last_offset_delta = offset_delta
            return offset_delta
        if self._pure is None:
            self._pure = BatchBuilder()
            builder = self._builder
            self._pure.set_producer(
                builder.producer_id,
                builder.producer_epoch,
                builder.base_sequence,
                self._transactional,
            )
        self._pure.append(value, key, headers, timestamp_ms, offset_delta)
        self.records_count += 1
        self._last_offset_delta = offset_delta
        return offset_delta

    def build(self, base_offset: int = 0, partition_leader_epoch: int = -1) -> bytes:
        if not self.records_count:
            raise InvalidRequestError("cannot build a record batch without records")
        if self._pure is not None:
            return self._pure.build(base_offset, partition_leader_epoch)
        out = self._buffer
        if out is None:
            out = self._builder.build()  # the extension's header and (software) CRC
        builder = self._builder
        return seal_batch(
            out,
            base_offset=base_offset,
            partition_leader_epoch=partition_leader_epoch,
            attributes=TRANSACTIONAL_BIT if self._transactional else 0,
            last_offset_delta=max(self._last_offset_delta, self.records_count - 1),
            first_timestamp_ms=self._first_timestamp_ms,
            max_timestamp_ms=self.max_timestamp_ms,
            producer_id=builder.producer_id,
            producer_epoch=builder.producer_epoch,
            base_sequence=builder.base_sequence,
            records_count=self.records_count,
        )


def record_lane(builder: Builder) -> CompiledBatchBuilder | None:
    """``builder`` when its record lane is open (:class:`CompiledBatchBuilder`): a compiled
    builder with a first record, not handed to the pure builder, offset deltas without
    gaps so far (the lane appends at ``records_count``)."""
    if (
        type(builder) is CompiledBatchBuilder
        and builder.records_count
        and builder._pure is None
        and builder._last_offset_delta == builder.records_count - 1
    ):
        return builder
    return None


def decode_batches_compiled(
    buf: bytes | bytearray | memoryview, *, verify_crc: bool = True, start_offset: int = 0
) -> list[Record]:
    """:func:`~conveyor.protocol.records.decode_batches` with uncompressed batches read by
    the extension: same records, same skipping (control batches, a truncated last batch,
    offsets below ``start_offset``), same errors (the same walk: ``walk_batches``)."""
    if _CRECORDS is None:
        return decode_batches(buf, verify_crc=verify_crc, start_offset=start_offset)
    return walk_batches(buf, _read_batch, verify_crc=verify_crc, start_offset=start_offset)


def _read_batch(
    data: bytes, position: int, header: BatchHeader, start_offset: int, out: list[Record]
) -> None:
    end = position + header.size_bytes
    if header.codec != Codec.NONE:
        out += decode_batches(data[position:end], verify_crc=False, start_offset=start_offset)
        return
    assert _CRECORDS is not None
    offsets: list[int] = []
    timestamps: list[int] = []
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    headers: list[tuple[tuple[str, bytes | None], ...]] = []
    try:
        for record in _CRECORDS.DefaultRecordBatch(data[position:end]):
            offsets.append(record.offset)
            timestamps.append(record.timestamp)
            keys.append(record.key)
            values.append(record.value)
            pairs = record.headers
            headers.append(tuple(pairs) if pairs else ())
    except Exception as exc:
        raise CorruptBatchError(f"malformed batch at offset {header.base_offset}: {exc}") from exc
    records = make_records(offsets, timestamps, keys, values, headers)
    if offsets and offsets[0] < start_offset:
        records = [record for record in records if record.offset >= start_offset]
    out += records


class RecordCodec:
    """One codec: how the client makes batch builders and decodes fetched batches."""

    __slots__ = ("decode", "name", "new_builder")

    def __init__(
        self,
        name: str,
        new_builder: Callable[[Codec], Builder],
        decode: Callable[..., list[Record]],
    ) -> None:
        self.name = name
        self.new_builder = new_builder
        self.decode = decode


def _new_compiled_builder(codec: Codec) -> Builder:
    return CompiledBatchBuilder() if codec is Codec.NONE else BatchBuilder(codec=codec)


def _new_python_builder(codec: Codec) -> Builder:
    return BatchBuilder(codec=codec)


PYTHON: Final = RecordCodec("python", _new_python_builder, decode_batches)
COMPILED: Final = RecordCodec("compiled", _new_compiled_builder, decode_batches_compiled)


def record_codec(name: str = "auto") -> RecordCodec:
    """The codec named ``name``: ``auto`` is the compiled one when it is installed."""
    if name == "python":
        return PYTHON
    if name == "compiled":
        if _CRECORDS is None:
            raise InvalidRequestError(
                "record_codec=compiled needs aiokafka's compiled extension: pip install aiokafka"
            )
        return COMPILED
    if name == "auto":
        return COMPILED if _CRECORDS is not None else PYTHON
    raise InvalidRequestError(f"unknown record codec {name!r}: one of {', '.join(CODEC_NAMES)}")
