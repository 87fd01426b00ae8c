"""Walking stored batches in order: the one loop that reads a log in chunks and steps
over the whole batches in each (``PartitionLog.headers``, a share group's
receive in broker/share/delivery.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from conveyor.protocol.batch import LOG_OVERHEAD, BatchHeader, parse_header, peek_length

CHUNK_BYTES: Final = 1024 * 1024

# (offset, max bytes) -> whole stored batches from the one holding offset, b"" past the end
Read = Callable[[int, int], bytes]


def stored_batches(
    read: Read, offset: int, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[BatchHeader, memoryview]]:
    """(header, the batch's bytes) of each stored batch from the one holding ``offset``
    until ``read`` returns nothing more. The bytes are views into the chunk read (no
    copy); a caller that stops early stops the reading too."""
    while True:
        chunk = read(offset, chunk_bytes)
        view = memoryview(chunk)
        position = 0
        while len(chunk) - position >= LOG_OVERHEAD:
            _, size = peek_length(chunk, position)
            if position + size > len(chunk):
                break
            header = parse_header(chunk, position)
            yield header, view[position : position + size]
            offset = header.next_offset
            position += size
        if position == 0:
            return  # nothing there (or cannot happen with whole batches): never spin
