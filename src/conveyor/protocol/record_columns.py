"""Decoded records as columns: one list per field (offsets, timestamps, keys, values,
headers) instead of an object per record, for the consumer's ``poll_batch`` and as what
its ``poll`` builds ``Message`` tuples from (client/fetch_buffer.py).

Both record codecs decode into columns here through the one batch walk both use
(:func:`~conveyor.protocol.records.walk_batches`: same CRC checks, same skipping of
control batches, of a truncated last batch, of offsets below the fetch offset). The
compiled path reads aiokafka's Cython records with ``map(attrgetter)``, C loops with no
Python bytecode per record. Keys and values are ``bytes`` objects the extension copied
out of the fetched buffer: it exposes no positions, so views into that buffer would need
a Python-level parse of every record's framing, which costs more than the copy at the
sizes that matter for throughput (docs/client.md, "Batch APIs").
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat, starmap
from operator import attrgetter
from typing import Any, Final

from conveyor.protocol import fastrecords
from conveyor.protocol.batch import BatchHeader
from conveyor.protocol.errors import CorruptBatchError
from conveyor.protocol.fastrecords import COMPILED, RecordCodec, compiled_available
from conveyor.protocol.records import Codec, Record, decode_batches, walk_batches

__all__ = ["RecordColumns", "columns_decoder", "decode_columns", "decode_columns_compiled"]

HeaderPairs = tuple[tuple[str, bytes | None], ...]
_OFFSET: Final = attrgetter("offset")
_TIMESTAMP: Final = attrgetter("timestamp")
_TIMESTAMP_MS: Final = attrgetter("timestamp_ms")
_KEY: Final = attrgetter("key")
_VALUE: Final = attrgetter("value")
_HEADERS: Final = attrgetter("headers")
# Records read from the extension at a time. Holding a whole batch's (thousands) alive at
# once gets them promoted to the garbage collector's older generations before they die,
# and the full collections that follow walk every column kept: measured 1.24 us a record
# decoding 1M x 100 B that way, 0.41 us with the collector off.
_RECORDS_PER_STEP: Final = 128
_CRECORDS: Final = fastrecords._CRECORDS  # the extension fastrecords loaded, or None


class RecordColumns:
    """Records of one partition as parallel lists, in offset order. ``headers[i]`` is a
    sequence of (name, value) pairs, empty when the record has none."""

    __slots__ = ("headers", "keys", "offsets", "timestamps_ms", "values")

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.timestamps_ms: list[int] = []
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.headers: list[Any] = []

    def __len__(self) -> int:
        return len(self.offsets)

    def add_records(self, records: list[Record]) -> None:
        """Append records decoded as objects (the pure-Python codec's output)."""
        self.offsets += map(_OFFSET, records)
        self.timestamps_ms += map(_TIMESTAMP_MS, records)
        self.keys += map(_KEY, records)
        self.values += map(_VALUE, records)
        self.headers += map(_HEADERS, records)

    def has_headers(self, start: int = 0, stop: int | None = None) -> bool:
        return any(self.headers[start:stop])


def decode_columns(
    buf: bytes | bytearray | memoryview, *, verify_crc: bool = True, start_offset: int = 0
) -> RecordColumns:
    """:func:`~conveyor.protocol.records.decode_batches` as columns (pure Python)."""
    columns = RecordColumns()
    columns.add_records(decode_batches(buf, verify_crc=verify_crc, start_offset=start_offset))
    return columns


def decode_columns_compiled(
    buf: bytes | bytearray | memoryview, *, verify_crc: bool = True, start_offset: int = 0
) -> RecordColumns:
    """:func:`decode_columns` with uncompressed batches read by aiokafka's extension."""
    crecords = _CRECORDS
    if crecords is None:
        return decode_columns(buf, verify_crc=verify_crc, start_offset=start_offset)
    columns = RecordColumns()

    def read(data: bytes, position: int, header: BatchHeader, start: int, _: list[Record]) -> None:
        end = position + header.size_bytes
        if header.codec != Codec.NONE:
            columns.add_records(
                decode_batches(data[position:end], verify_crc=False, start_offset=start)
            )
            return
        try:
            # iter() once (the extension asserts it is not iterated twice), then steps
            # of __next__ calls made from C
            next_record = iter(crecords.DefaultRecordBatch(data[position:end])).__next__
            left = header.records_count
            while left > 0:
                records = list(starmap(next_record, repeat((), min(left, _RECORDS_PER_STEP))))
                left -= _RECORDS_PER_STEP
                if header.base_offset < start:
                    records = [record for record in records if record.offset >= start]
                _add(columns, records)
        except CorruptBatchError:
            raise
        except Exception as exc:
            raise CorruptBatchError(
                f"malformed batch at offset {header.base_offset}: {exc}"
            ) from exc

    walk_batches(buf, read, verify_crc=verify_crc, start_offset=start_offset)
    return columns


def _add(columns: RecordColumns, records: list[Any]) -> None:
    """Append aiokafka's records to the columns, each field in a C loop."""
    columns.offsets += map(_OFFSET, records)
    columns.timestamps_ms += map(_TIMESTAMP, records)
    columns.keys += map(_KEY, records)
    columns.values += map(_VALUE, records)
    headers = list(map(_HEADERS, records))  # a list of pairs per record, most empty
    columns.headers += headers if any(headers) else repeat((), len(headers))


ColumnsDecoder = Callable[..., RecordColumns]


def columns_decoder(codec: RecordCodec) -> ColumnsDecoder:
    """The columns decoder of ``codec`` (client/recordcodec.py's configured one)."""
    if codec is COMPILED and compiled_available():
        return decode_columns_compiled
    return decode_columns
