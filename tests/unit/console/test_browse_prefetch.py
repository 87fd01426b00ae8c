"""The message browser's first fetches: the offset a page's read fetches first is what
``first_fetch`` predicts (so a guess made from the coordinator's reported offsets is taken
when the range has not moved), a taken guess is not fetched again, a failed one is, and
what no read takes is cancelled. ``fetch`` here is an in-memory partition (a pure unit)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.console.browse import (
    Direction,
    Filters,
    PartitionRange,
    PartitionReader,
    Prefetch,
    first_fetch,
    read_page,
)
from conveyor.console.records import render
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.messages import FetchedRecord, FetchResponse


class Log:
    """One partition's records ``[start, end)``; a fetch returns up to 7 from ``offset``."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.calls: list[int] = []

    async def fetch(self, partition: int, offset: int, max_bytes: int) -> FetchResponse:
        self.calls.append(offset)
        await asyncio.sleep(0)
        if not self.start <= offset <= self.end:
            raise ConveyorError("out of range", code=ErrorCode.OFFSET_OUT_OF_RANGE)
        last = min(self.end, offset + 7)
        return FetchResponse(
            topic="t",
            partition=partition,
            high_watermark=self.end,
            log_start_offset=self.start,
            log_end_offset=self.end,
            next_offset=last,
            records=[
                FetchedRecord(offset=o, timestamp_ms=o, key=None, value=f"v{o}")
                for o in range(offset, last)
            ],
        )


@settings(max_examples=150)
@given(
    start=st.integers(0, 50),
    length=st.integers(0, 300),
    position=st.integers(0, 400),
    direction=st.sampled_from(["forward", "backward"]),
    limit=st.integers(1, 80),
    scan_max=st.integers(1, 500),
)
def test_first_fetch_is_where_the_read_starts(  # noqa: PLR0917 (hypothesis' arguments)
    start: int, length: int, position: int, direction: Direction, limit: int, scan_max: int
) -> None:
    log = Log(start, start + length)
    r = PartitionRange(0, log.start, log.end)
    reader = PartitionReader("t", log.fetch, Filters(), limit)
    asyncio.run(read_page(reader, {0: r}, {0: position}, direction, scan_max))
    budget = max(limit, scan_max)
    expected = first_fetch(r, position, direction, limit, budget)
    assert (log.calls[0] if log.calls else None) == expected


def test_a_taken_guess_is_not_fetched_again_and_the_rest_are_cancelled() -> None:
    async def body() -> None:
        log = Log(0, 100)
        prefetch = Prefetch(log.fetch)
        reader = PartitionReader("t", prefetch.fetch, Filters(), 50)
        prefetch.start(0, 36, reader.fetch_bytes)  # right for the newest 64 of [0, 100)
        prefetch.start(1, 5, reader.fetch_bytes)  # a partition no read asks
        page = await read_page(reader, {0: PartitionRange(0, 0, 100)}, {0: 100}, "backward", 1000)
        calls = list(log.calls)
        prefetch.close()
        assert [m.offset for m in page.messages] == list(range(50, 100))
        assert calls.count(36) == 1  # fetched once, by the guess
        assert not prefetch._started  # closed: nothing left running

    asyncio.run(body())


def test_a_failed_guess_is_asked_again() -> None:
    async def body() -> None:
        log = Log(10, 20)
        prefetch = Prefetch(log.fetch)
        prefetch.start(0, 30, 1024)  # beyond the end: fails
        await asyncio.sleep(0.01)
        log.end = 40  # the partition grew meanwhile: the same offset is readable now
        answer = await prefetch.fetch(0, 30, 1024)
        assert [r.offset for r in answer.records] == list(range(30, 37))
        assert log.calls == [30, 30]

    asyncio.run(body())


def test_hex_is_made_only_when_shown() -> None:
    shown = render("abc", "utf8")
    assert shown.hex == "00000000  61 62 63" + " " * 39 + "  |abc|"
