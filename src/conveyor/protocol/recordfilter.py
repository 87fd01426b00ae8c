"""Rewriting a stored batch with some of its records removed: the log cleaner's tool.

As Kafka's cleaner does (``MemoryRecords.filterTo``), a filtered batch keeps its identity:
the same base offset and *last offset delta* (so the producer's last sequence number, and
the offset after the batch, survive), the same timestamps, producer id, epoch, base
sequence and leader epoch. Only ``records_count``, the records and the CRC change. Each
kept record's bytes are copied unchanged: its offset and timestamp deltas stay relative to
the same base, so every surviving record keeps its offset. A batch that keeps nothing but
must stay (the last batch of an idempotent producer) becomes an empty header: no records,
``records_count`` 0, no compression, as Kafka's ``writeEmptyHeader``.

Worked example: a batch at base offset 10 holding keys a, b, a (offsets 10, 11, 12) where
the cleaner keeps only the latest per key: the result is a batch at base offset 10, last
offset delta 2, records_count 2, holding b@11 and a@12; a consumer fetching offset 10 gets
it and moves on to 13.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from conveyor.protocol.batch import (
    CODEC_MASK,
    CRC_START,
    HEADER_SIZE,
    HEADER_STRUCT,
    LOG_OVERHEAD,
    BatchHeader,
    crc32c,
    parse_header,
)
from conveyor.protocol.errors import CorruptBatchError, ErrorCode, InvalidRequestError
from conveyor.protocol.records import Codec, compress_records, decompress_records, read_varint

_INDEXES_MAX = 1000  # keyless records named in an INVALID_RECORD answer at most


class RecordView(NamedTuple):
    """One record of a batch, as the cleaner needs it: no value, only whether it is null.
    (A NamedTuple: a cleaning builds one per record, hundreds of thousands a second.)"""

    offset: int
    key: bytes | None
    is_tombstone: bool  # a null value: "delete this key"
    start: int  # its bytes in the uncompressed records region
    end: int


_ZIGZAG: Final = tuple((byte >> 1) ^ -(byte & 1) for byte in range(0x80))  # 1-byte varints


def scan_batch(batch: bytes, header: BatchHeader) -> tuple[bytes, list[RecordView]]:
    """The uncompressed records region of one whole batch and each record's place in it.
    Raises CorruptBatchError when the records do not parse. One- byte varints (nearly
    all of them) are decoded inline, as ``records._scan_records`` does."""
    if header.codec > 4:
        raise CorruptBatchError(f"unknown compression codec {header.codec}")
    region = decompress_records(Codec(header.codec), batch[HEADER_SIZE : header.size_bytes])
    try:
        views, position = _scan(region, header.base_offset, header.records_count)
    except IndexError as exc:
        raise CorruptBatchError(f"records of batch {header.base_offset} overrun it") from exc
    if position != len(region):
        raise CorruptBatchError(
            f"batch at offset {header.base_offset} has {len(region) - position} bytes after "
            "its records"
        )
    return region, views


def _scan(  # noqa: PLR0912 -- one flat loop is what makes this fast
    region: bytes, base_offset: int, count: int
) -> tuple[list[RecordView], int]:
    zigzag, varint, new = _ZIGZAG, read_varint, RecordView
    views: list[RecordView] = []
    position, end = 0, len(region)
    for _ in range(count):
        byte = region[position]
        if byte < 0x80:
            length, cursor = zigzag[byte], position + 1
        elif region[position + 1] < 0x80:  # two bytes: records of 64 B to 8 KiB
            unsigned = (byte & 0x7F) | (region[position + 1] << 7)
            length, cursor = (unsigned >> 1) ^ -(unsigned & 1), position + 2
        else:
            length, cursor = varint(region, position)
        record_end = cursor + length
        if length < 1 or record_end > end:
            raise CorruptBatchError(f"record at {position} overruns its batch")
        cursor += 1  # the attributes byte
        if region[cursor] < 0x80:  # the timestamp delta, not needed
            cursor += 1
        else:
            cursor = varint(region, cursor)[1]
        byte = region[cursor]
        if byte < 0x80:
            offset_delta, cursor = zigzag[byte], cursor + 1
        else:
            offset_delta, cursor = varint(region, cursor)
        byte = region[cursor]
        if byte < 0x80:
            key_length, cursor = zigzag[byte], cursor + 1
        else:
            key_length, cursor = varint(region, cursor)
        key = None
        if key_length >= 0:
            key = region[cursor : cursor + key_length]
            cursor += key_length
        # The value length: only its sign matters, which a zigzag varint keeps in the low
        # bit of its first byte (-1, a null value, is the single byte 0x01).
        tombstone = bool(region[cursor] & 1)
        if cursor >= record_end:
            raise CorruptBatchError(f"record at {position} overruns its length")
        views.append(new(base_offset + offset_delta, key, tombstone, position, record_end))
        position = record_end
    return views, position


def require_keys(batches: bytes | memoryview) -> None:
    """Refuse a produce to a compacted topic holding a record without a key (Kafka's
    LogValidator does the same): compaction keeps the latest record *per key*, so a
    keyless one would be removed at the first cleaning. INVALID_RECORD carries, in
    ``record_indexes``, the index of each keyless record in the request (Kafka's
    ``record_errors``); CorruptBatchError when the batches do not parse."""
    data = bytes(batches)
    position, index, keyless = 0, 0, []
    while len(data) - position >= HEADER_SIZE:
        header = parse_header(data, position)
        end = position + header.size_bytes
        if header.size_bytes < HEADER_SIZE or end > len(data):
            raise CorruptBatchError(f"batch at position {position} overruns the request")
        if not header.is_control:
            keyless += [index + i for i in _keyless(data, position, header)]
            index += header.records_count
        position = end
    if keyless:
        raise InvalidRequestError(
            f"a compacted topic (cleanup_policy compact) takes only records with a key: "
            f"{len(keyless)} of {index} have none (the first at index {keyless[0]})",
            code=ErrorCode.INVALID_RECORD,
            record_indexes=keyless[:_INDEXES_MAX],
        )


def _keyless(data: bytes, position: int, header: BatchHeader) -> list[int]:
    """Indexes of the batch's records with a null key: only lengths are read (the produce
    path of a compacted topic runs this on every batch)."""
    region = data[position + HEADER_SIZE : position + header.size_bytes]
    if header.codec:
        if header.codec > 4:
            raise CorruptBatchError(f"unknown compression codec {header.codec}")
        region = decompress_records(Codec(header.codec), region)
    zigzag, varint, end = _ZIGZAG, read_varint, len(region)
    found, cursor = [], 0
    try:
        for index in range(header.records_count):
            # The record's length, inline for one and two bytes (records of 64 B - 8 KiB,
            # the usual case): a call per varint made this check cost 3x as much.
            byte = region[cursor]
            if byte < 0x80:
                length, body = zigzag[byte], cursor + 1
            elif region[cursor + 1] < 0x80:
                raw = (byte & 0x7F) | (region[cursor + 1] << 7)
                length, body = (raw >> 1) ^ -(raw & 1), cursor + 2
            else:
                length, body = varint(region, cursor)
            record_end = body + length
            at = body + 1  # past the attributes byte
            while region[at] >= 0x80:  # the timestamp delta: skipped, not decoded
                at += 1
            at += 1
            while region[at] >= 0x80:  # the offset delta
                at += 1
            at += 1
            if region[at] == 1:  # a key length of -1, one zigzag byte: a null key
                found.append(index)
            if length < 1 or record_end > end:
                raise CorruptBatchError(f"record {index} overruns its batch")
            cursor = record_end
    except IndexError as exc:
        raise CorruptBatchError(f"records of batch {header.base_offset} overrun it") from exc
    return found


def rebuild_batch(
    batch: bytes, header: BatchHeader, region: bytes, kept: list[RecordView]
) -> bytes:
    """``batch`` holding only ``kept`` (a subset of its records, in order), with the same
    offsets; the original bytes when nothing was removed."""
    if len(kept) == header.records_count:
        return batch[: header.size_bytes]
    attributes = header.attributes
    if kept:
        body = b"".join(region[r.start : r.end] for r in kept)
        records = compress_records(Codec(header.codec), body)
    else:
        attributes &= ~CODEC_MASK
        records = b""
    out = bytearray(
        HEADER_STRUCT.pack(
            header.base_offset,
            HEADER_SIZE - LOG_OVERHEAD + len(records),
            header.partition_leader_epoch,
            header.magic,
            0,  # the CRC, set below
            attributes,
            header.last_offset_delta,
            header.base_timestamp,
            header.max_timestamp,
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            len(kept),
        )
    )
    out += records
    out[CRC_START - 4 : CRC_START] = crc32c(memoryview(out)[CRC_START:]).to_bytes(4, "big")
    return bytes(out)
