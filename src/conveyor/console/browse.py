"""The message browser: a page of at most ``limit`` messages from one partition or all,
forwards or backwards from a position, filtered by key and value substrings, never
reading more than a bounded number of messages.

A page is planned per partition (where to start, how many messages it may examine), each
partition is read on its own (forward reads of the broker's JSON fetch, windows below the
position when going backwards), and the partitions' matches are merged by timestamp
(then partition, offset): a forward page takes the earliest ``limit``, a backward page the
latest. The cursors of the next and previous pages are per-partition offsets, so paging
is exact whatever the filters skipped. Reading is the only I/O, through the ``Fetch``
callable; the planning and merging functions are pure.

Bounds: each partition examines at most ``scan_max // partitions`` messages (at least
``limit``), so a page with a filter that matches nothing in a big topic stops after
``scan_max`` messages and says so (``Page.exhausted``), with a cursor to continue from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from conveyor.console.records import Message, matches, message
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import FetchResponse
from conveyor.transport.waits import gather_all

PAGE_SIZE_DEFAULT: Final = 50
PAGE_SIZE_MAX: Final = 500
FETCH_BYTES: Final = 1024 * 1024  # the broker's JSON fetch limit
WINDOW_MIN: Final = 64  # messages in the first window below a backward position
Direction = Literal["forward", "backward"]
Fetch = Callable[[int, int, int], Awaitable[FetchResponse]]  # (partition, offset, max_bytes)


@dataclass(frozen=True, slots=True)
class PartitionRange:
    partition: int
    log_start_offset: int
    high_watermark: int


@dataclass(frozen=True, slots=True)
class Filters:
    key: str = ""
    value: str = ""

    @property
    def active(self) -> bool:
        return bool(self.key or self.value)


@dataclass(slots=True)
class PartitionScan:
    """What one partition's read found: its matches in offset order, how many messages
    it examined, and the offsets it covered: ``[low, high)``."""

    partition: int
    low: int
    high: int
    matches: list[Message] = field(default_factory=list)
    scanned: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[Message]
    direction: Direction
    scanned: int
    scan_max: int
    exhausted: bool  # the scan bound stopped the read before the page was full
    next_cursor: dict[int, int]  # forward from here
    prev_cursor: dict[int, int]  # backward from here
    at_end: bool  # nothing after this page (below the high watermark)
    at_start: bool  # nothing before this page
    errors: dict[int, str] = field(default_factory=dict)


def clamp(offset: int, r: PartitionRange) -> int:
    return max(r.log_start_offset, min(offset, r.high_watermark))


def budget_per_partition(scan_max: int, partitions: int, limit: int) -> int:
    return max(limit, scan_max // max(1, partitions))


def first_window(r: PartitionRange, end: int, limit: int, budget: int) -> int:
    """The low offset of a backward read's first window below ``end``."""
    return max(r.log_start_offset, end - min(max(WINDOW_MIN, limit), budget))


def first_fetch(
    r: PartitionRange, position: int, direction: Direction, limit: int, budget: int
) -> int | None:
    """Where a partition's read for a page fetches first (None: it reads nothing)."""
    at = clamp(position, r)
    if direction == "forward":
        return at if at < r.high_watermark else None
    return first_window(r, at, limit, budget) if at > r.log_start_offset else None


def _order(msg: Message) -> tuple[int, int, int]:
    return (msg.timestamp_ms, msg.partition, msg.offset)


def merge(
    scans: Sequence[PartitionScan],
    ranges: Mapping[int, PartitionRange],
    direction: Direction,
    limit: int,
    scan_max: int,
) -> Page:
    """The page from each partition's scan (pure). Forward: the earliest ``limit``
    matches, next cursor after the last taken (or after what was examined, when none
    matched); backward: the latest ``limit``, previous cursor at the first taken."""
    found = sorted((m for s in scans for m in s.matches), key=_order)
    taken = found[:limit] if direction == "forward" else found[-limit:] if limit else []
    taken_by: dict[int, list[Message]] = {}
    for msg in taken:
        taken_by.setdefault(msg.partition, []).append(msg)
    next_cursor: dict[int, int] = {}
    prev_cursor: dict[int, int] = {}
    for scan in scans:
        mine = taken_by.get(scan.partition, [])
        all_matches = scan.matches
        if direction == "forward":
            prev_cursor[scan.partition] = scan.low
            if len(mine) < len(all_matches):  # matches left for the next page
                next_cursor[scan.partition] = all_matches[len(mine)].offset
            else:
                next_cursor[scan.partition] = scan.high
        else:
            next_cursor[scan.partition] = scan.high
            if len(mine) < len(all_matches):  # older matches left for the previous page
                prev_cursor[scan.partition] = (
                    all_matches[len(all_matches) - len(mine) - 1].offset + 1
                )
            else:
                prev_cursor[scan.partition] = scan.low
    at_end = all(next_cursor[p] >= ranges[p].high_watermark for p in next_cursor)
    at_start = all(prev_cursor[p] <= ranges[p].log_start_offset for p in prev_cursor)
    scanned = sum(s.scanned for s in scans)
    return Page(
        messages=sorted(taken, key=_order),
        direction=direction,
        scanned=scanned,
        scan_max=scan_max,
        exhausted=len(taken) < limit
        and not (at_end if direction == "forward" else at_start)
        and not any(s.error for s in scans),
        next_cursor=next_cursor,
        prev_cursor=prev_cursor,
        at_end=at_end,
        at_start=at_start,
        errors={s.partition: s.error for s in scans if s.error},
    )


class PartitionReader:
    """Reads one partition's messages between offsets through ``fetch``."""

    def __init__(self, topic: str, fetch: Fetch, filters: Filters, limit: int) -> None:
        self.topic = topic
        self.fetch = fetch
        self.filters = filters
        self.limit = limit

    @property
    def fetch_bytes(self) -> int:
        # Without filters a page needs few messages: do not make the broker decode 1 MiB.
        return FETCH_BYTES if self.filters.active else 256 * 1024

    async def forward(self, r: PartitionRange, start: int, budget: int) -> PartitionScan:
        scan = PartitionScan(r.partition, start, start)
        await self._read(scan, start, r.high_watermark, budget, stop_at_limit=True)
        return scan

    async def backward(self, r: PartitionRange, end: int, budget: int) -> PartitionScan:
        """Windows below ``end``, each twice the last, until ``limit`` matches, the
        budget, or the log start. A window never exceeds the budget left, so it is read
        whole and the scan covers ``[low, end)`` without gaps."""
        scan = PartitionScan(r.partition, end, end)
        window = max(WINDOW_MIN, self.limit)
        high = end
        while high > r.log_start_offset and len(scan.matches) < self.limit:
            room = budget - scan.scanned
            if room <= 0:
                break
            low = max(r.log_start_offset, high - min(window, room))  # first: first_window
            part = PartitionScan(r.partition, low, low)
            await self._read(part, low, high, high - low, stop_at_limit=False)
            scan.scanned += part.scanned
            if part.error is not None:
                scan.error = part.error
                break
            scan.matches = part.matches + scan.matches
            scan.low = low
            high, window = low, window * 2
        return scan

    async def _read(
        self, scan: PartitionScan, start: int, end: int, budget: int, stop_at_limit: bool
    ) -> None:
        offset = start
        while offset < end and scan.scanned < budget:
            if stop_at_limit and len(scan.matches) >= self.limit:
                break
            try:
                answer = await self.fetch(scan.partition, offset, self.fetch_bytes)
            except ConveyorError as exc:
                scan.error = f"{exc.code.name}: {exc.message}"
                break
            progressed = False
            for record in answer.records:
                if record.offset < offset:
                    continue  # the batch holding ``offset`` starts before it
                if record.offset >= end or scan.scanned >= budget:
                    break
                if stop_at_limit and len(scan.matches) >= self.limit:
                    break
                scan.scanned += 1
                offset = record.offset + 1
                progressed = True
                if matches(record, self.filters.key, self.filters.value):
                    scan.matches.append(message(self.topic, scan.partition, record))
            if not progressed:
                # Nothing readable here (compacted away, or an empty answer): skip to where
                # the broker says the next fetch starts, if that moves forward.
                if answer.next_offset > offset and not answer.records:
                    offset = min(answer.next_offset, end)
                    continue
                break
        scan.high = offset


async def read_page(
    reader: PartitionReader,
    ranges: Mapping[int, PartitionRange],
    positions: Mapping[int, int],
    direction: Direction,
    scan_max: int,
) -> Page:
    """Read every partition of ``positions`` at once and merge."""
    budget = budget_per_partition(scan_max, len(positions), reader.limit)
    tasks = []
    for partition, position in sorted(positions.items()):
        r = ranges[partition]
        at = clamp(position, r)
        if direction == "forward":
            tasks.append(reader.forward(r, at, budget))
        else:
            tasks.append(reader.backward(r, at, budget))
    scans = await gather_all(*tasks)
    return merge(scans, ranges, direction, reader.limit, scan_max)


class Prefetch:
    """Fetches started before a page knows its partitions' exact ranges (while their
    leaders are asked for them), at the offsets :func:`first_fetch` gives for the ranges
    the coordinator last heard of. A read whose first fetch is one of them takes its
    answer instead of asking again, so the offsets request and the first fetch overlap
    rather than running one after the other. A guess that missed (the partition moved
    on since the leader's last heartbeat) costs one unused fetch; what no read takes is
    cancelled by :meth:`close`."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._started: dict[tuple[int, int, int], asyncio.Task[FetchResponse]] = {}

    def start(self, partition: int, offset: int, max_bytes: int) -> None:
        task = asyncio.ensure_future(self._fetch(partition, offset, max_bytes))
        task.add_done_callback(_retrieve)
        self._started[(partition, offset, max_bytes)] = task

    async def fetch(self, partition: int, offset: int, max_bytes: int) -> FetchResponse:
        task = self._started.pop((partition, offset, max_bytes), None)
        if task is not None:
            try:
                return await task
            except ConveyorError:
                pass  # e.g. out of range on a stale guess: ask again with the real range
        return await self._fetch(partition, offset, max_bytes)

    def close(self) -> None:
        for task in self._started.values():
            task.cancel()
        self._started.clear()


def _retrieve(task: asyncio.Task[FetchResponse]) -> None:
    """Mark an unused guess's failure as seen (asyncio logs unretrieved exceptions)."""
    if not task.cancelled():
        task.exception()


def parse_cursor(text: str, partitions: Sequence[int]) -> dict[int, int] | None:
    """``"0:12,3:40"`` -> {0: 12, 3: 40}, for the given partitions only; None if malformed."""
    out: dict[int, int] = {}
    wanted = set(partitions)
    for item in text.split(","):
        if not item:
            continue
        left, sep, right = item.partition(":")
        if not sep or not left.isdigit() or not right.isdigit() or len(right) > 19:
            return None
        if int(left) in wanted:
            out[int(left)] = int(right)
    return out if set(out) == wanted else None


def format_cursor(cursor: Mapping[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(cursor.items()))
