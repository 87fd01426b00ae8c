"""LogSegment.read's batch walk (one 27-byte unpack per batch, issue 19) answers exactly as
the walk over whole parsed headers it replaced, on segments with random bytes damaged:
the same batches, or the same CorruptDataError."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.batch import CRC_START, HEADER_SIZE, LOG_OVERHEAD, MAGIC, parse_header
from conveyor.protocol.batch import crc32c as batch_crc32c
from conveyor.protocol.errors import CorruptDataError
from conveyor.storage.segment import LogSegment
from tests.unit.storage.test_segment import BASE, Filled

COUNTS = [1, 5, 2, 10, 3, 1, 4]
END = BASE + sum(COUNTS)


def reference_read(segment: LogSegment, offset: int, max_bytes: int, upper_offset: int) -> bytes:
    """The read as it was: every header parsed whole (protocol/batch.py's BatchHeader)."""
    found = segment.locate(offset)
    if found is None:
        return b""
    position, first = found
    if first.last_offset >= upper_offset:
        return b""
    want = min(max(max_bytes, first.size_bytes), segment.size_bytes - position)
    data = os.pread(segment.fd, want, position)
    view = memoryview(data)
    cut, expected = 0, first.base_offset
    while cut + HEADER_SIZE <= len(data):
        header = parse_header(view, cut)
        size = header.size_bytes
        follows = (
            header.base_offset >= expected
            if segment.gaps_allowed
            else header.base_offset == expected
        )
        if (
            header.magic != MAGIC
            or header.batch_length < HEADER_SIZE - LOG_OVERHEAD
            or cut + size > len(data)
            or header.last_offset >= upper_offset
            or not follows
            or header.next_offset > segment.next_offset
        ):
            break
        if batch_crc32c(view[cut + CRC_START : cut + size]) != header.crc:
            if cut == 0:
                raise CorruptDataError("crc")
            break
        cut += size
        expected = header.next_offset
    if cut == 0:
        raise CorruptDataError("unreadable")
    return data if cut == len(data) else data[:cut]


def _outcome(read: object, *args: int) -> bytes | str:
    try:
        return read(*args)  # type: ignore[operator,no-any-return]
    except CorruptDataError:
        return "corrupt"


@settings(max_examples=150, deadline=None)
@given(
    damage=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=3),
    offset=st.integers(BASE, END),
    max_bytes=st.integers(1, 4096),
    upper=st.integers(BASE, END + 2),
    gaps=st.booleans(),
)
def test_the_lean_walk_answers_as_the_parsed_one(
    damage: list[tuple[int, int]], offset: int, max_bytes: int, upper: int, gaps: bool
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        filled = Filled(Path(directory), COUNTS)
        segment = filled.segment
        try:
            size = segment.size_bytes
            with segment.log_path.open("r+b") as f:
                for where, xor in damage:
                    f.seek(where % size)
                    byte = f.read(1)
                    f.seek(where % size)
                    f.write(bytes([byte[0] ^ xor]))
            segment.gaps_allowed = gaps
            try:
                expected = _outcome(reference_read, segment, offset, max_bytes, upper)
            except Exception as exc:  # the lookup itself refused (both call it): the same
                expected = type(exc).__name__
            try:
                got = _outcome(segment.read, offset, max_bytes, upper)
            except Exception as exc:
                got = type(exc).__name__
            assert got == expected
        finally:
            segment.close()
