"""What a share-partition needs to know of the records it reads from the log.

Pure: bytes in, :class:`~.state.Span` out. From each stored batch: which offsets hold a
record (a control batch holds none; a compacted batch may skip some), and, only when
needed, each record's key (key-ordered mode) and not-before header (delayed delivery).

Most batches need no record decoding: the header says whether the batch is dense
(``records_count == last_offset_delta + 1``), and a byte search for the not-before header's
name (C speed, on the decompressed records) rules delayed records out. Only key-ordered
mode, sparse batches and batches that mention the header are decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from conveyor.broker.share.keyindex import key_id
from conveyor.broker.share.state import Span
from conveyor.protocol.batch import HEADER_SIZE, LOG_OVERHEAD, parse_header, peek_length
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.records import Codec, Record, decode_batches, decompress_records
from conveyor.protocol.share import NOT_BEFORE_HEADER

_MARKER: Final = NOT_BEFORE_HEADER.encode()
NOT_BEFORE_DIGITS_MAX: Final = 16


def parse_not_before(value: bytes | None) -> int:
    """The header's value: decimal milliseconds since the epoch; anything else is 0
    (deliver at once: a bad header must not hold a record back forever)."""
    if value is None or not 0 < len(value) <= NOT_BEFORE_DIGITS_MAX or not value.isdigit():
        return 0
    return int(value)


Decoded = Callable[[int, list[Record]], None]


def scan(
    data: bytes | memoryview, key_ordered: bool, on_decoded: Decoded | None = None
) -> list[Span]:
    """One span per whole batch of ``data`` (stored batches, already validated);
    ``on_decoded(base_offset, records)`` is told of each batch decoded on the way."""
    spans: list[Span] = []
    buffer = bytes(data)
    position = 0
    while len(buffer) - position >= LOG_OVERHEAD:
        _, size_bytes = peek_length(buffer, position)
        if size_bytes < HEADER_SIZE or position + size_bytes > len(buffer):
            break
        spans.append(_span(buffer, position, size_bytes, key_ordered, on_decoded))
        position += size_bytes
    return spans


def _span(
    buffer: bytes, position: int, size_bytes: int, key_ordered: bool, on_decoded: Decoded | None
) -> Span:
    header = parse_header(buffer, position)
    first, last = header.base_offset, header.last_offset
    if header.is_control:
        return Span(first, last, offsets=[])
    dense = header.records_count == header.last_offset_delta + 1
    records = buffer[position + HEADER_SIZE : position + size_bytes]
    codec = header.attributes & 0x07
    if codec:
        try:
            records = decompress_records(Codec(codec), records)
        except (ConveyorError, ValueError):
            records = b""  # decoded below, which reports the problem the same way
            dense = False
    delayed = _MARKER in records
    if dense and not delayed and not key_ordered:
        return Span(first, last)
    try:
        decoded = decode_batches(buffer[position : position + size_bytes], verify_crc=False)
    except ConveyorError:
        # A batch this broker cannot decode (a codec it lacks): deliver it whole, as the
        # consumer decodes it; no keys, no delays.
        return Span(first, last)
    if on_decoded is not None:
        on_decoded(first, decoded)
    offsets = [r.offset for r in decoded]
    not_before = tuple(
        (r.offset, parse_not_before(value))
        for r in decoded
        if delayed
        for name, value in r.headers
        if name == NOT_BEFORE_HEADER and parse_not_before(value)
    )
    keys = [key_id(r.key, r.offset) for r in decoded] if key_ordered else None
    return Span(first, last, offsets=None if dense else offsets, keys=keys, not_before=not_before)
