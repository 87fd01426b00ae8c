"""The bytes of a receive's answer: what a member gets for the records it acquired.

Mostly the stored batches as they are (unordered members acquire whole batches, so the
broker neither decodes nor copies records). When a member owns only a few records of
the batches holding them (key-ordered mode spreads a batch's keys over many members;
redeliveries are scattered), sending whole batches would make every member decode
records it does not own, over and over: a 5,000-record batch for 10 records. Then the
answer is one new batch of just the acquired records, with their own offsets, keys,
values, headers and timestamps (``BatchBuilder`` with explicit offset deltas, as a
compacted batch has), built from records decoded once and kept in a bounded cache.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from conveyor.protocol.batch import BatchHeader
from conveyor.protocol.records import BatchBuilder, Record, decode_batches
from conveyor.storage.scan import Read, stored_batches

SPARSE_SHARE: Final = 0.5  # below this share of owned records, build a compact batch
CACHE_RECORDS_MAX: Final = 50_000


class DecodedCache:
    """Decoded records of stored batches, by base offset; least recently used first out,
    at most ``CACHE_RECORDS_MAX`` records."""

    def __init__(self, records_max: int = CACHE_RECORDS_MAX) -> None:
        self._batches: OrderedDict[int, list[Record]] = OrderedDict()
        self._count = 0
        self._max = records_max

    def get(self, header: BatchHeader, data: bytes | memoryview) -> list[Record]:
        found = self._batches.get(header.base_offset)
        if found is not None:
            self._batches.move_to_end(header.base_offset)
            return found
        records = decode_batches(data, verify_crc=False)
        self.put(header.base_offset, records)
        return records

    def put(self, base_offset: int, records: list[Record]) -> None:
        if base_offset in self._batches:
            return
        self._batches[base_offset] = records
        self._count += len(records)
        while self._count > self._max and self._batches:
            _, dropped = self._batches.popitem(last=False)
            self._count -= len(dropped)

    def clear(self) -> None:
        self._batches.clear()
        self._count = 0


def covering_batches(
    read: Read, ranges: list[tuple[int, int]]
) -> list[tuple[BatchHeader, memoryview]]:
    """The stored batches holding ``ranges`` (sorted), each once, in offset order."""
    out: list[tuple[BatchHeader, memoryview]] = []
    included_until = -1
    for first, last in ranges:
        offset = max(first, included_until)
        if offset > last:
            continue  # covered by the batch that ended the previous range
        for header, data in stored_batches(read, offset):
            if header.base_offset > last:
                break
            if header.last_offset >= offset:
                out.append((header, data))
                included_until = header.last_offset + 1
            if header.last_offset >= last:
                break  # the range is covered: read no further chunk
    return out


def answer_bytes(read: Read, ranges: list[tuple[int, int]], cache: DecodedCache) -> bytes:
    """Stored batches, or one compact batch when the member owns few of their records."""
    batches = covering_batches(read, ranges)
    owned = sum(last - first + 1 for first, last in ranges)
    stored = sum(header.records_count for header, _ in batches)
    if not batches or owned >= SPARSE_SHARE * stored:
        return b"".join(data for _, data in batches)
    wanted = {o for first, last in ranges for o in range(first, last + 1)}
    base = min(wanted)
    builder = BatchBuilder()
    for header, data in batches:
        if header.is_control:
            continue
        for record in cache.get(header, data):
            if record.offset in wanted:
                builder.append(
                    record.value,
                    record.key,
                    record.headers,
                    record.timestamp_ms,
                    offset_delta=record.offset - base,
                )
    if not builder.records_count:
        return b""
    return builder.build(base_offset=base)
