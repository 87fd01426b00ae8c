"""storage/scan.py: the stored batches from an offset, read in chunks smaller than a
batch or holding several, each batch once and whole, and the walk ends at the log end."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.batch import CRC_START
from conveyor.protocol.records import BatchBuilder
from conveyor.storage import PartitionLog
from conveyor.storage.scan import stored_batches


def _batch(count: int, first: int) -> bytes:
    builder = BatchBuilder()
    for i in range(count):
        builder.append(b"v%d" % (first + i), timestamp_ms=1)
    return builder.build()


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=8),
    start_share=st.floats(0, 1),
    chunk_bytes=st.integers(1, 2000),
)
def test_every_batch_from_the_offset_once_and_whole(
    tmp_path_factory: object, sizes: list[int], start_share: float, chunk_bytes: int
) -> None:
    directory = Path(str(tmp_path_factory.mktemp("scan")))  # type: ignore[attr-defined]
    log = PartitionLog.open(directory / "p")
    try:
        stored: dict[int, bytes] = {}  # base offset -> the batch as built
        first = 0
        for size in sizes:
            stored[first] = _batch(size, first)
            log.append(stored[first])
            first += size
        start = min(int(start_share * first), first - 1)
        read = lambda o, m: log.read(o, m) if o < log.log_end_offset else b""  # noqa: E731
        walked = list(stored_batches(read, start, chunk_bytes))
        assert walked[0][0].base_offset <= start <= walked[0][0].last_offset
        assert [h.base_offset for h, _ in walked] == [
            o for o in stored if o >= walked[0][0].base_offset
        ]
        for header, data in walked:  # whole, and the bytes stored (from the CRC'd part on)
            assert bytes(data[CRC_START:]) == stored[header.base_offset][CRC_START:]
    finally:
        log.close()


def test_an_empty_read_ends_the_walk() -> None:
    assert list(stored_batches(lambda o, m: b"", 0)) == []
