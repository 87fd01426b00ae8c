"""The Kafka fetcher when a partition's leader moves while a Fetch to the old one is out
(issue 15: the queue chaos campaign's dead-letter reader stopped reading a dead-letter
partition at the first batch of a new leader epoch, for the rest of the run, and called
itself caught up; the dead letters were in the log: ``queue-lost``/``dlq-missing``).

Both brokers' loops then answer the partition from the same position. The old leader's
answer, in first, moves the position; the new leader's, from the old position, is dropped
(it does not start where the partition stands), but its loop had already sent the next
Fetch from where that dropped answer ended, past records never delivered. Every answer
after it started there too, was dropped in turn, and the loop never came back.

Second way (after the first was fixed, 1 run in 20): the leader died and the refresh its
error asked for named no leader (the election under way). No loop fetches a partition
without a leader, so no error asked again, and the supervisor waited the metadata age.

The wire is faked (each broker answers from its own log, the first Fetch held until the
test lets it go); the fetcher's loops, buffer and supervisor are the real ones.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from conveyor.client.fetch_buffer import FetchBuffer
from conveyor.client.fetch_plan import Target
from conveyor.client.fetcher import FetchSettings
from conveyor.client.kafka_fetcher import Answer, KafkaFetcher
from conveyor.client.subscription import subscription
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ErrorCode, RetriableError
from conveyor.protocol.records import BatchBuilder

TP = TopicPartition("t", 0)
SETTINGS = FetchSettings(
    auto_offset_reset="earliest",
    fetch_max_bytes=64 * 1024,
    fetch_max_wait_ms=20,
    request_timeout_ms=1_000,
    metadata_max_age_ms=20,  # the supervisor looks again (and starts loops) this often
    retry_backoff_ms=10,
    retry_backoff_max_ms=50,
)


def batch(base_offset: int, count: int) -> bytes:
    builder = BatchBuilder()
    for offset in range(base_offset, base_offset + count):
        builder.append(f"v{offset}".encode(), None, (), 0)
    return builder.build(base_offset=base_offset)


@dataclass
class Cache:
    leader: str | None

    def leader_url(self, topic: str, partition: int) -> str | None:
        return self.leader

    def partition_count(self, topic: str) -> int:
        return 1

    def is_missing(self, topic: str) -> bool:
        return False


@dataclass
class Metadata:
    """What the fetcher asks of its metadata client: the leader, which the test moves."""

    cache: Cache
    connections: object = None
    answers: list[str | None] = field(default_factory=list)  # the next refreshes' leaders
    refreshed: int = 0

    async def refresh(self, topics: object) -> None:
        self.refreshed += 1
        if self.answers:
            self.cache.leader = self.answers.pop(0)

    def on_routing_error(self, topic: str, partition: int, error: object) -> None:
        return None


@dataclass
class Wire:
    """Each broker's log (record count, one batch per answer) and the first Fetch of
    each broker held until released; ``asked`` records every (broker, offset) fetched."""

    logs: dict[str, int]
    dead: set[str] = field(default_factory=set)
    held: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    arrived: dict[str, asyncio.Event] = field(default_factory=dict)
    asked: list[tuple[str, int]] = field(default_factory=list)

    def hold(self, broker: str) -> None:
        self.held[broker] = asyncio.get_running_loop().create_future()
        self.arrived[broker] = asyncio.Event()

    async def fetch(self, broker: str, named: list[Target]) -> dict[TopicPartition, Answer]:
        (target,) = named
        self.asked.append((broker, target.offset))
        held = self.held.get(broker)
        if held is not None:
            self.arrived[broker].set()
            await held
            del self.held[broker]
        elif broker in self.dead:
            raise RetriableError(f"{broker}: connection refused", code=ErrorCode.NETWORK_ERROR)
        end = self.logs[broker]
        if target.offset >= end:
            await asyncio.sleep(0.005)  # a long poll that found nothing
            return {TP: (b"", b"", end)}
        body = batch(target.offset, end - target.offset)
        return {TP: (body, body, end)}


class Fetcher(KafkaFetcher):
    def __init__(
        self,
        wire: Wire,
        metadata: Metadata,
        buffer: FetchBuffer,
        settings: FetchSettings = SETTINGS,
    ) -> None:
        super().__init__(
            settings=settings,
            buffer=buffer,
            metadata=metadata,  # type: ignore[arg-type]
            group=None,
            subscription=subscription(["t"], None),
        )
        self.wire = wire
        self.answered = asyncio.Event()  # an answer reached the buffer (taken or dropped)

    def _fetched(self, target: Target, answer: Any, reserved: int) -> None:
        super()._fetched(target, answer, reserved)
        self.answered.set()

    async def next_answer(self) -> None:
        self.answered.clear()
        await self.answered.wait()

    async def _fetch_many(
        self, leader: str, named: list[Target], wait_ms: int, max_bytes: int
    ) -> dict[TopicPartition, Any]:
        return await self.wire.fetch(leader, named)

    async def _reset_offset(self, tp: TopicPartition) -> int:
        return 0


async def read_offsets(fetcher: Fetcher, buffer: FetchBuffer, read: list[int], count: int) -> None:
    """Take what the fetcher buffers until ``count`` records are read (the caller's
    timeout bounds it)."""
    while len(read) < count:
        read += [m.offset for m in buffer.take(100)]
        await fetcher.next_answer()


async def read_after_leader_move() -> tuple[list[int], list[tuple[str, int]]]:
    # the old leader "a" answers records 0-1 (its high watermark when it answered); the
    # new leader "b" has 0-3
    wire = Wire(logs={"a": 2, "b": 4})
    wire.hold("a")
    wire.hold("b")
    metadata = Metadata(Cache(leader="a"))
    buffer = FetchBuffer(buffer_max_bytes=1024 * 1024, fetch_max_bytes=64 * 1024)
    fetcher = Fetcher(wire, metadata, buffer)
    fetcher.start()
    read: list[int] = []
    try:
        async with asyncio.timeout(10):
            await wire.arrived["a"].wait()  # a Fetch from 0 out to the old leader
            metadata.cache.leader = "b"  # the leader moves; the supervisor sees it soon
            await wire.arrived["b"].wait()  # the new leader's loop fetches from 0 too
            wire.held["a"].set_result(None)  # the old leader answers first: 0-1
            while (buffer.fetch_target(TP) or (0, 0))[0] != 2:
                await fetcher.next_answer()
            wire.held["b"].set_result(None)  # then the new one, from 0: 0-3
        async with asyncio.timeout(2):  # about 100 long polls of this wire
            await read_offsets(fetcher, buffer, read, 4)
    except TimeoutError:
        pass
    finally:
        await fetcher.close()
    return read, wire.asked


def test_records_after_a_dropped_answer_are_fetched_from_the_position() -> None:
    read, asked = asyncio.run(read_after_leader_move())
    assert read == [0, 1, 2, 3], f"fetches: {asked[:12]}"


async def read_after_a_leaderless_answer() -> tuple[list[int], int]:
    """The leader "a" dies after answering records 0-1; the refresh that error asks for
    names no leader (an election under way), the next one names "b"."""
    wire = Wire(logs={"a": 2, "b": 4}, dead={"a"})
    wire.hold("a")
    metadata = Metadata(Cache(leader="a"))
    buffer = FetchBuffer(buffer_max_bytes=1024 * 1024, fetch_max_bytes=64 * 1024)
    settings = replace(SETTINGS, metadata_max_age_ms=30_000)  # as the consumer's default
    fetcher = Fetcher(wire, metadata, buffer, settings)
    fetcher.start()
    read: list[int] = []
    try:
        async with asyncio.timeout(10):
            await wire.arrived["a"].wait()
            metadata.answers = [None, "b"]
            wire.held["a"].set_result(None)  # 0-1; every later Fetch to "a" is refused
            await read_offsets(fetcher, buffer, read, 4)  # far below the 30 s metadata age
    except TimeoutError:
        pass
    finally:
        await fetcher.close()
    return read, metadata.refreshed


def test_a_partition_without_a_known_leader_asks_again_soon() -> None:
    """Issue 15 again: no loop fetches a partition whose leader the metadata does not
    name, so no error asks for another refresh; the supervisor waited the metadata age
    (30 s) and the dead-letter reader sat at the old leader's end for the rest of the
    run, calling itself caught up."""
    read, refreshed = asyncio.run(read_after_a_leaderless_answer())
    assert read == [0, 1, 2, 3], f"{refreshed} refreshes"
