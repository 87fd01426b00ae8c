"""Kafka RecordBatch v2 records: the client-side encoder and decoder.

The broker never looks inside a batch (see :mod:`conveyor.protocol.batch` for the 61-byte
header and the CRC); producers build batches here and consumers take them apart here.
After the header come ``records_count`` records, compressed as one block when the codec
(attributes bits 0-2) is not NONE. One record, all integers zigzag varints unless noted::

    length             varint   bytes of the record after this field
    attributes         int8     always 0 (a plain byte, not a varint)
    timestamp_delta    varlong  timestamp - base_timestamp of the batch
    offset_delta       varint   offset - base_offset of the batch
    key_length         varint   -1 for a null key
    key                bytes
    value_length       varint   -1 for a null value
    value              bytes
    headers_count      varint
    headers            per header: varint key length, utf-8 key,
                       varint value length (-1 for null), value

Codecs follow what the Java client writes, so that its consumers read our batches: gzip
(one member), snappy in xerial framing, lz4 in the LZ4 *frame* format with independent
64 KiB blocks and no content size, zstd at level 3. When compression does not make the
records smaller the batch goes out uncompressed (codec bits 0), as kafka-python does.

Speed: the producer appends hundreds of thousands of records per second in pure Python,
so :meth:`BatchBuilder.append` encodes small varints by table lookup (``_VARINT``) and
keeps record pieces in one list joined once in :meth:`BatchBuilder.build`; the decoder
reads one- and two-byte varints inline and calls a function only for longer ones.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import gzip
import importlib
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import add
from types import ModuleType
from typing import Any, Final, TypeAlias

from conveyor.protocol.batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    MAX_CODEC,
    TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
    BatchHeader,
    check_crc,
    parse_header,
    peek_length,
    seal_batch,
)
from conveyor.protocol.errors import CorruptBatchError, ErrorCode, InvalidRequestError

__all__ = [
    "BatchBuilder",
    "Codec",
    "Record",
    "check_producer",
    "codec_available",
    "compress_records",
    "decode_batches",
    "decompress_records",
    "encode_batch",
    "make_records",
    "read_varint",
    "walk_batches",
]


class Codec(enum.IntEnum):
    """Compression codec of a batch: the value of attributes bits 0-2."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record, as a consumer receives it."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


Headers: TypeAlias = Sequence[tuple[str, bytes | None]]

_INT16_MIN, _INT16_MAX = -(1 << 15), (1 << 15) - 1
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_VARINT_BYTES_MAX: Final = 10  # a 64-bit varlong
_GZIP_LEVEL: Final = 6  # java.util.zip's default, what the Java producer uses
_ZSTD_LEVEL: Final = 3  # Kafka's default zstd level
_SNAPPY_BLOCK_BYTES: Final = 32 * 1024  # xerial SnappyOutputStream's default block size
_XERIAL_MAGIC: Final = b"\x82SNAPPY\x00"
_XERIAL_HEADER: Final = struct.Struct(">8sii")  # magic, version 1, min compatible version 1
_INT32: Final = struct.Struct(">i")


# --- varints -------------------------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    """Zigzag varint of a signed 64-bit integer (the slow path behind ``_VARINT``)."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidRequestError(f"{value} does not fit a 64-bit varlong")
    unsigned = ((value << 1) ^ (value >> 63)) & 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while unsigned >= 0x80:
        out.append((unsigned & 0x7F) | 0x80)
        unsigned >>= 7
    out.append(unsigned)
    return bytes(out)


# Encodings of 0..16383 cover offset deltas, lengths and timestamp deltas of ordinary
# batches; a lookup is several times cheaper than a call to _encode_varint.
_VARINT_CACHED: Final = 1 << 14
_VARINT: Final = tuple(_encode_varint(n) for n in range(_VARINT_CACHED))
_NULL: Final = _encode_varint(-1)  # the length of a null key or value: b"\x01"
_NO_HEADERS: Final = _VARINT[0]


_ZIGZAG: Final = tuple((byte >> 1) ^ -(byte & 1) for byte in range(0x80))  # one-byte varints


def _read_uvarint(data: bytes, position: int) -> tuple[int, int]:
    """(unsigned value, next position) of the varint at ``position``, before unzigzagging."""
    unsigned = 0
    shift = 0
    for index in range(position, position + _VARINT_BYTES_MAX):
        byte = data[index]
        unsigned |= (byte & 0x7F) << shift
        if byte < 0x80:
            return unsigned, index + 1
        shift += 7
    raise CorruptBatchError(f"varint at position {position} is longer than 10 bytes")


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    """(signed value, next position) of the zigzag varint at ``position``."""
    unsigned, position = _read_uvarint(data, position)
    return (unsigned >> 1) ^ -(unsigned & 1), position


# --- codecs --------------------------------------------------------------------------------

_PACKAGES: Final = {
    Codec.SNAPPY: "cramjam (or python-snappy)",
    Codec.LZ4: "lz4",
    Codec.ZSTD: "zstandard",
}


# module name -> an attribute it must have, so that an unrelated module of the same name
# (PyPI's "snappy" is not python-snappy) counts as missing rather than failing later
_MODULES: Final = {
    Codec.SNAPPY: (("cramjam", "snappy"), ("snappy", "decompress")),
    Codec.LZ4: (("lz4.frame", "decompress"),),
    Codec.ZSTD: (("zstandard", "ZstdDecompressor"),),
}


def _import_codec(codec: Codec) -> ModuleType:
    """The library behind ``codec``, imported on first use so that it stays optional."""
    for name, attribute in _MODULES[codec]:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, attribute):
            return module
    package = _PACKAGES[codec]
    raise InvalidRequestError(
        f"compression codec {codec.name.lower()} needs the {package} package: "
        f"pip install {package.split()[0]}",
        codec=codec.name.lower(),
        package=package,
    )


@functools.cache
def codec_available(codec: Codec) -> bool:
    """Whether this process can compress and decompress with ``codec``."""
    if codec in (Codec.NONE, Codec.GZIP):
        return True
    try:
        _import_codec(codec)
    except InvalidRequestError:
        return False
    return True


def _snappy_raw(codec_module: ModuleType) -> tuple[Callable[[bytes], bytes], ...]:
    """(compress, decompress) of raw snappy blocks from cramjam or python-snappy."""
    if codec_module.__name__ == "cramjam":
        snappy = codec_module.snappy
        return (
            lambda data: bytes(snappy.compress_raw(data)),
            lambda data: bytes(snappy.decompress_raw(data)),
        )
    return (
        lambda data: bytes(codec_module.compress(data)),
        lambda data: bytes(codec_module.decompress(data)),
    )


def _compress(codec: Codec, data: bytes) -> bytes:
    if codec is Codec.GZIP:
        return gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0)
    module = _import_codec(codec)
    if codec is Codec.LZ4:
        # Kafka's own LZ4 writer: independent 64 KiB blocks, no sizes, no checksums.
        return bytes(
            module.compress(
                data,
                block_size=module.BLOCKSIZE_MAX64KB,
                block_linked=False,
                content_checksum=False,
                store_size=False,
            )
        )
    if codec is Codec.ZSTD:
        return bytes(module.ZstdCompressor(level=_ZSTD_LEVEL).compress(data))
    compress_block = _snappy_raw(module)[0]
    out = [_XERIAL_HEADER.pack(_XERIAL_MAGIC, 1, 1)]
    for start in range(0, len(data), _SNAPPY_BLOCK_BYTES):
        block = compress_block(data[start : start + _SNAPPY_BLOCK_BYTES])
        out += (_INT32.pack(len(block)), block)
    return b"".join(out)


def _decompress(codec: Codec, data: bytes) -> bytes:
    """Uncompressed records of a batch; a library's error becomes a CorruptBatchError."""
    try:
        if codec is Codec.GZIP:
            return gzip.decompress(data)
        module = _import_codec(codec)
        if codec is Codec.LZ4:
            return bytes(module.decompress(data))
        if codec is Codec.ZSTD:
            # The Java client streams zstd frames without a content size: decompressobj
            # copes with that where ZstdDecompressor.decompress would refuse.
            return bytes(module.ZstdDecompressor().decompressobj().decompress(data))
        return _snappy_decompress(_snappy_raw(module)[1], data)
    except InvalidRequestError:
        raise
    except Exception as exc:  # each library raises its own types; all mean bad bytes
        raise CorruptBatchError(
            f"cannot decompress {codec.name.lower()} records: {exc}", codec=codec.name.lower()
        ) from exc


def compress_records(codec: Codec, data: bytes) -> bytes:
    """The records region of a batch compressed with ``codec`` as Kafka's clients do."""
    return data if codec is Codec.NONE else _compress(codec, data)


def decompress_records(codec: Codec, data: bytes) -> bytes:
    """A batch's records region uncompressed (CorruptBatchError on bad bytes)."""
    return data if codec is Codec.NONE else _decompress(codec, data)


def read_varint(data: bytes, position: int) -> tuple[int, int]:
    """(signed value, next position) of the zigzag varint at ``position``."""
    return _read_varint(data, position)


def _snappy_decompress(decompress_block: Callable[[bytes], bytes], data: bytes) -> bytes:
    """Xerial framing (what Kafka's Java client writes) or one raw snappy block."""
    if not data.startswith(_XERIAL_MAGIC):
        return decompress_block(data)
    out = []
    position = _XERIAL_HEADER.size
    while position < len(data):
        (size,) = _INT32.unpack_from(data, position)
        position += _INT32.size
        if size < 0 or position + size > len(data):
            raise CorruptBatchError(f"xerial snappy block of {size} bytes overruns the batch")
        out.append(decompress_block(data[position : position + size]))
        position += size
    return b"".join(out)


# --- encoding ------------------------------------------------------------------------------


# Header names repeat from record to record ("trace-id", "content-type"): their encoded
# form (length varint + utf-8) is kept, up to a bound, like _VARINT keeps small ints.
_HEADER_NAMES: dict[str, bytes] = {}
_HEADER_NAMES_MAX: Final = 1024


def _encode_headers(headers: Headers) -> bytes:
    varint = _VARINT
    names = _HEADER_NAMES
    count = len(headers)
    out = [varint[count] if count < _VARINT_CACHED else _encode_varint(count)]
    for name, value in headers:
        encoded = names.get(name)
        if encoded is None:
            try:
                name_bytes = name.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidRequestError(f"header name {name!r} is not valid utf-8") from exc
            encoded = _encode_varint(len(name_bytes)) + name_bytes
            if len(names) >= _HEADER_NAMES_MAX:
                names.clear()
            names[name] = encoded
        if value is None:
            out += (encoded, _NULL)
        else:
            size = len(value)
            out += (encoded, varint[size] if size < _VARINT_CACHED else _encode_varint(size), value)
    return b"".join(out)


def check_producer(producer_id: int, producer_epoch: int, base_sequence: int) -> None:
    """Raise :class:`InvalidRequestError` unless the producer fields fit the batch
    header (int64 id, int16 epoch, int32 sequence): both batch builders check here."""
    if not (
        _INT64_MIN <= producer_id <= _INT64_MAX
        and _INT16_MIN <= producer_epoch <= _INT16_MAX
        and _INT32_MIN <= base_sequence <= _INT32_MAX
    ):
        raise InvalidRequestError("producer id, epoch or sequence out of range")


class BatchBuilder:
    """Accumulates records for one partition and builds one RecordBatch v2 from them.

    Offsets inside the batch start at 0; the broker assigns the real ``base_offset`` on
    append. ``size_bytes_estimate`` is exact for the uncompressed batch, so the producer
    can close a batch before it passes ``batch.size``.
    """

    __slots__ = (
        "_attributes",
        "_base_sequence",
        "_base_timestamp_ms",
        "_codec",
        "_last_offset_delta",
        "_max_timestamp_ms",
        "_parts",
        "_producer_epoch",
        "_producer_id",
        "_records_count",
        "_size_bytes",
    )

    def __init__(
        self,
        *,
        codec: Codec = Codec.NONE,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
    ) -> None:
        try:
            self._codec = Codec(codec)
        except ValueError as exc:
            raise InvalidRequestError(f"unknown compression codec {codec!r}") from exc
        if not codec_available(self._codec):
            _import_codec(self._codec)  # raises the error naming the package to install
        if not _INT64_MIN <= producer_id <= _INT64_MAX:
            raise InvalidRequestError(f"producer_id {producer_id} does not fit an int64")
        if not _INT16_MIN <= producer_epoch <= _INT16_MAX:
            raise InvalidRequestError(f"producer_epoch {producer_epoch} does not fit an int16")
        if not _INT32_MIN <= base_sequence <= _INT32_MAX:
            raise InvalidRequestError(f"base_sequence {base_sequence} does not fit an int32")
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence
        self._attributes = 0  # bit 4: transactional (set_producer)
        self._parts: list[bytes | bytearray | memoryview] = []
        self._records_count = 0
        self._last_offset_delta = -1
        self._size_bytes = HEADER_SIZE
        self._base_timestamp_ms = 0
        self._max_timestamp_ms = 0

    @property
    def records_count(self) -> int:
        return self._records_count

    def set_producer(
        self, producer_id: int, producer_epoch: int, base_sequence: int, transactional: bool = False
    ) -> None:
        """Stamp an idempotent producer's identity before :meth:`build` (the producer
        learns the sequence only when the batch is sent, after its records were added);
        ``transactional``: the batch belongs to the producer's open transaction."""
        check_producer(producer_id, producer_epoch, base_sequence)
        self._attributes = TRANSACTIONAL_BIT if transactional else 0
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence

    @property
    def size_bytes_estimate(self) -> int:
        """Bytes of the batch so far, header included, before compression."""
        return self._size_bytes

    @property
    def codec(self) -> Codec:
        return self._codec

    def append(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
        offset_delta: int | None = None,
    ) -> int:
        """Add one record; returns its offset delta: its index in the batch, or
        ``offset_delta`` when given (increasing: a batch of chosen records keeps their
        offsets, with gaps, as a compacted batch does)."""
        # Hot path: no calls but len() for the common small fields (see module docstring).
        varint = _VARINT
        count = self._records_count
        if offset_delta is None:
            offset_delta = count
        elif offset_delta < (self._last_offset_delta + 1 if count else 0):
            raise InvalidRequestError(f"offset delta {offset_delta} does not increase")
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        if count:
            timestamp_delta = timestamp_ms - self._base_timestamp_ms
            if timestamp_ms > self._max_timestamp_ms:  # noqa: PLR1730 -- max() is a call
                self._max_timestamp_ms = timestamp_ms
        else:
            self._base_timestamp_ms = self._max_timestamp_ms = timestamp_ms
            timestamp_delta = 0
        prefix = (
            b"\x00"
            + (
                varint[timestamp_delta]
                if 0 <= timestamp_delta < _VARINT_CACHED
                else _encode_varint(timestamp_delta)
            )
            + (
                varint[offset_delta]
                if offset_delta < _VARINT_CACHED
                else _encode_varint(offset_delta)
            )
        )
        if key is None:
            key_length = _NULL
            key = b""
        else:
            size = len(key)
            key_length = varint[size] if size < _VARINT_CACHED else _encode_varint(size)
        if value is None:
            value_length = _NULL
            value = b""
        else:
            size = len(value)
            value_length = varint[size] if size < _VARINT_CACHED else _encode_varint(size)
        header_bytes = _encode_headers(headers) if headers else _NO_HEADERS
        size = (
            len(prefix)
            + len(key_length)
            + len(key)
            + len(value_length)
            + len(value)
            + len(header_bytes)
        )
        length = varint[size] if size < _VARINT_CACHED else _encode_varint(size)
        self._parts += (length, prefix, key_length, key, value_length, value, header_bytes)
        self._size_bytes += len(length) + size
        self._records_count = count + 1
        self._last_offset_delta = offset_delta
        return offset_delta

    def build(self, base_offset: int = 0, partition_leader_epoch: int = -1) -> bytes:
        """The finished batch: header, CRC-32C and (possibly compressed) records.

        The builder is left as it was, so building twice gives the same bytes.
        """
        if not self._records_count:
            raise InvalidRequestError("cannot build a record batch without records")
        records = b"".join(self._parts)
        codec = self._codec
        if codec is not Codec.NONE:
            compressed = _compress(codec, records)
            if len(compressed) < len(records):
                records = compressed
            else:
                codec = Codec.NONE
        out = bytearray(HEADER_SIZE)
        out += records
        return seal_batch(
            out,
            base_offset=base_offset,
            partition_leader_epoch=partition_leader_epoch,
            attributes=int(codec) | self._attributes,
            last_offset_delta=self._last_offset_delta,
            first_timestamp_ms=self._base_timestamp_ms,
            max_timestamp_ms=self._max_timestamp_ms,
            producer_id=self._producer_id,
            producer_epoch=self._producer_epoch,
            base_sequence=self._base_sequence,
            records_count=self._records_count,
        )


def encode_batch(
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    headers: Sequence[Headers] | None = None,
    codec: Codec = Codec.NONE,
    timestamp_ms: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """One batch of ``(key, value)`` pairs, all stamped ``timestamp_ms`` (default: now).

    ``headers``, when given, holds one header sequence per record, in the same order.
    """
    builder = BatchBuilder(
        codec=codec,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )
    if timestamp_ms is None:
        timestamp_ms = time.time_ns() // 1_000_000
    pairs = list(records)
    if headers is not None and len(headers) != len(pairs):
        raise InvalidRequestError(f"{len(headers)} header sequences given for {len(pairs)} records")
    for index, (key, value) in enumerate(pairs):
        builder.append(value, key, headers[index] if headers is not None else (), timestamp_ms)
    return builder.build()


# --- decoding ------------------------------------------------------------------------------


def decode_batches(
    buf: bytes | bytearray | memoryview, *, verify_crc: bool = True, start_offset: int = 0
) -> list[Record]:
    """Every record of the concatenated batches in ``buf`` whose offset is >= start_offset.

    Control batches (transaction markers) are skipped. A partial batch at the end of
    ``buf`` is ignored, since fetch responses cut the last batch at their size limit.
    Raises :class:`CorruptBatchError` on a CRC mismatch or a malformed batch.
    """
    return walk_batches(
        buf, _decode_batch_records, verify_crc=verify_crc, start_offset=start_offset
    )


BatchReader: TypeAlias = Callable[[bytes, int, BatchHeader, int, list[Record]], None]


def walk_batches(
    buf: bytes | bytearray | memoryview,
    read_batch: BatchReader,
    *,
    verify_crc: bool = True,
    start_offset: int = 0,
) -> list[Record]:
    """:func:`decode_batches`' walk over the batches, with each data batch's records
    appended by ``read_batch(data, position, header, start_offset, out)``: the one place
    both record codecs (this module's and protocol/fastrecords.py's) check and skip."""
    data = buf if isinstance(buf, bytes) else bytes(buf)
    view = memoryview(data)
    out: list[Record] = []
    position = 0
    while len(data) - position >= LOG_OVERHEAD:
        size_bytes = peek_length(data, position)[1]
        if position + size_bytes > len(data):
            break  # the truncated trailing batch of a fetch response
        if size_bytes < HEADER_SIZE:
            raise CorruptBatchError(
                f"batch at position {position} is {size_bytes} bytes, shorter than a header"
            )
        header = parse_header(data, position)
        if header.magic != MAGIC:
            raise CorruptBatchError(
                f"unsupported magic {header.magic} at position {position}: "
                "only RecordBatch v2 (magic 2) is supported",
                code=ErrorCode.UNSUPPORTED_VERSION,
            )
        if verify_crc:
            check_crc(view, position, header)
        if not header.is_control and header.last_offset >= start_offset:
            read_batch(data, position, header, start_offset, out)
        position += size_bytes
    return out


def _decode_batch_records(
    data: bytes, position: int, header: BatchHeader, start_offset: int, out: list[Record]
) -> None:
    """Append the records of the batch at ``position`` to ``out``."""
    if header.codec > MAX_CODEC:
        raise CorruptBatchError(f"unknown compression codec {header.codec}")
    start, end = position + HEADER_SIZE, position + header.size_bytes
    if header.codec != Codec.NONE:
        data = _decompress(Codec(header.codec), data[start:end])
        start, end = 0, len(data)
    count = header.records_count
    if count < 0 or count > end - start:
        raise CorruptBatchError(f"records_count {count} cannot fit the batch")
    try:
        fields, last = _scan_records(data, start, end, count)
    except IndexError as exc:
        raise CorruptBatchError(f"record overruns the batch at {header.base_offset}") from exc
    if last != end:
        raise CorruptBatchError(
            f"batch at offset {header.base_offset} has {end - last} bytes after its last record"
        )
    if header.attributes & TIMESTAMP_TYPE_BIT:
        # LOG_APPEND_TIME: the broker's max_timestamp stands for every record's timestamp.
        timestamps: Iterable[int] = repeat(header.max_timestamp, count)
    else:
        timestamps = map(add, repeat(header.base_timestamp), fields[1::_FIELDS])
    _make_records(fields, header.base_offset, timestamps, start_offset, out)


_FIELDS: Final = 5  # what _scan_records keeps per record
_NEW = object.__new__
# Record is frozen, so its generated __init__ sets each field through object.__setattr__
# from Python; setting the slot descriptors from map() in C costs a fraction of that.
_SLOT = vars(Record)  # member descriptors of the slots
# _make_records sets every field; a new field would be left unset, so say so loudly.
_RECORD_FIELDS: Final = ("offset", "timestamp_ms", "key", "value", "headers")
assert tuple(field.name for field in dataclasses.fields(Record)) == _RECORD_FIELDS
_SET_OFFSET: Final[Callable[[Record, int], None]] = _SLOT["offset"].__set__
_SET_TIMESTAMP: Final[Callable[[Record, int], None]] = _SLOT["timestamp_ms"].__set__
_SET_KEY: Final[Callable[[Record, bytes | None], None]] = _SLOT["key"].__set__
_SET_VALUE: Final[Callable[[Record, bytes | None], None]] = _SLOT["value"].__set__
_SET_HEADERS: Final[Callable[[Record, object], None]] = _SLOT["headers"].__set__


def make_records(
    offsets: list[int],
    timestamps: Iterable[int],
    keys: Iterable[bytes | None],
    values: Iterable[bytes | None],
    headers: Iterable[tuple[tuple[str, bytes | None], ...]],
) -> list[Record]:
    """Records from columns, set through the slot descriptors (see ``_SLOT``): the
    compiled decoder (protocol/fastrecords.py) builds its Records here too."""
    records = list(map(_NEW, repeat(Record, len(offsets))))
    deque(map(_SET_OFFSET, records, offsets), maxlen=0)
    deque(map(_SET_TIMESTAMP, records, timestamps), maxlen=0)
    deque(map(_SET_KEY, records, keys), maxlen=0)
    deque(map(_SET_VALUE, records, values), maxlen=0)
    deque(map(_SET_HEADERS, records, headers), maxlen=0)
    return records


def _make_records(
    fields: list[Any],
    base_offset: int,
    timestamps: Iterable[int],
    start_offset: int,
    out: list[Record],
) -> None:
    """Build Records from the flat fields of _scan_records, keeping offsets >= start_offset."""
    count = len(fields) // _FIELDS
    offsets = list(map(add, repeat(base_offset), fields[0::_FIELDS]))
    records = make_records(
        offsets, timestamps, fields[2::_FIELDS], fields[3::_FIELDS], fields[4::_FIELDS]
    )
    if count and min(offsets) < start_offset:
        out += [record for record in records if record.offset >= start_offset]
    else:
        out += records


def _scan_records(  # noqa: PLR0912, PLR0915 -- one flat loop is what makes this fast
    data: bytes, position: int, end: int, count: int
) -> tuple[list[Any], int]:
    """Parse ``count`` records from ``position`` into one flat list, five fields a record.

    Returns ``[offset_delta, timestamp_delta, key, value, headers, ...]`` and the position
    after the last record. Lengths are zigzag varints whose unsigned form is even for
    n >= 0 and 1 for -1 (null); any other odd value is a negative length, which is
    corrupt. Varints of one or two bytes are decoded inline; an IndexError means the
    records overran the buffer.
    """
    read_varint = _read_varint
    zigzag = _ZIGZAG
    fields: list[Any] = []
    for _ in range(count):
        byte = data[position]
        if byte < 0x80:
            record_end = position + 1 + (byte >> 1)
            position += 1
        else:
            second = data[position + 1]
            if second < 0x80:
                unsigned = (byte & 0x7F) | (second << 7)
                position += 2
            else:
                unsigned, position = _read_uvarint(data, position)
            record_end = position + (unsigned >> 1)
            byte = unsigned
        if byte & 1 or record_end > end:
            raise CorruptBatchError(f"bad record length before position {position}")
        byte = data[position + 1]  # position + 0 holds the attributes byte
        if byte < 0x80:
            timestamp_delta = zigzag[byte]
            position += 2
        else:
            timestamp_delta, position = read_varint(data, position + 1)
        byte = data[position]
        if byte < 0x80:
            offset_delta = zigzag[byte]
            position += 1
        else:
            second = data[position + 1]
            if second < 0x80:
                unsigned = (byte & 0x7F) | (second << 7)
                offset_delta = (unsigned >> 1) ^ -(unsigned & 1)
                position += 2
            else:
                offset_delta, position = read_varint(data, position)
        byte = data[position]
        if byte == 1:
            key = None
            position += 1
        elif byte & 1:
            raise CorruptBatchError(f"negative key length at position {position}")
        else:
            size, position = read_varint(data, position)
            key = data[position : position + size]
            position += size
        byte = data[position]
        if byte == 1:
            value = None
            position += 1
        elif byte & 1:
            raise CorruptBatchError(f"negative value length at position {position}")
        else:
            if byte < 0x80:
                size = byte >> 1
                position += 1
            else:
                second = data[position + 1]
                if second < 0x80:
                    size = ((byte & 0x7F) | (second << 7)) >> 1
                    position += 2
                else:
                    size, position = read_varint(data, position)
            value = data[position : position + size]
            position += size
        if data[position]:
            headers, position = _decode_headers(data, position)
            fields += (offset_delta, timestamp_delta, key, value, headers)
        else:
            position += 1
            fields += (offset_delta, timestamp_delta, key, value, ())
        if position != record_end:
            raise CorruptBatchError(f"record ending at {record_end} overruns its length")
    return fields, position


def _decode_headers(data: bytes, position: int) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, position = _read_varint(data, position)
    if count < 0:
        raise CorruptBatchError(f"negative header count {count}")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        size, position = _read_varint(data, position)
        if size < 0:
            raise CorruptBatchError(f"negative header key length {size}")
        try:
            name = data[position : position + size].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptBatchError(f"header key is not utf-8: {exc}") from exc
        position += size
        size, position = _read_varint(data, position)
        if size < -1:
            raise CorruptBatchError(f"negative header value length {size}")
        if size == -1:
            headers.append((name, None))
        else:
            headers.append((name, data[position : position + size]))
            position += size
    return tuple(headers), position
