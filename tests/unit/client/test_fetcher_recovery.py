"""The consumer's supervisor after a failed metadata refresh (issue 15's first flaky HA
test): it must retry on the retry backoff, not after ``metadata_max_age_ms``.

Just after a coordinator takeover the coordinator named no broker's Kafka listener yet,
so the consumer's first bootstrap failed (retriable LEADER_NOT_AVAILABLE); with no
partition assigned nothing else asked for a refresh, and the supervisor slept the full
30 s metadata age: ``read_all`` in tests/ha/test_failover.py read nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from conveyor.client.fetch_buffer import FetchBuffer
from conveyor.client.fetcher import Fetcher, FetchSettings, refresh_interval_ms
from conveyor.client.metadata import MetadataClient
from conveyor.client.subscription import subscription
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import AuthorizationError, ErrorCode, RetriableError
from conveyor.protocol.messages import Metadata
from conveyor.transport.client import AsyncHTTP
from tests.unit.client.test_metadata import topic

SETTINGS = FetchSettings(
    auto_offset_reset="earliest",
    fetch_max_bytes=1024,
    fetch_max_wait_ms=100,
    request_timeout_ms=1000,
    metadata_max_age_ms=30_000,
    retry_backoff_ms=50,
    retry_backoff_max_ms=200,
)


def test_a_failed_refresh_is_retried_on_the_backoff_not_the_metadata_age() -> None:
    assert refresh_interval_ms(SETTINGS, 0, False, 0.5) == 30_000
    assert refresh_interval_ms(SETTINGS, 0, True, 0.5) == 500  # a topic not yet created
    assert [refresh_interval_ms(SETTINGS, f, False, 0.5) for f in (1, 2, 3, 9)] == [
        50,
        100,
        200,
        200,
    ]
    # a failure wins over a missing topic: the answer itself did not come
    assert refresh_interval_ms(SETTINGS, 1, True, 0.5) == 50


class NoListenerFirst(MetadataClient):
    """Answers as the coordinator did right after a takeover (no Kafka listener known),
    ``failing`` times, then with the topic."""

    def __init__(self, failing: int) -> None:
        super().__init__(AsyncHTTP(), "http://coordinator", auto_create=False)
        self.failing = failing
        self.asked = 0

    async def _fetch(self, topics: list[str]) -> Metadata:
        self.asked += 1
        if self.asked <= self.failing:
            raise RetriableError(
                "no broker of http://coordinator has a Kafka listener yet",
                code=ErrorCode.LEADER_NOT_AVAILABLE,
            )
        return Metadata(cluster_id="c", brokers=[], topics=[topic(t, 2) for t in topics])


class Idle(Fetcher):
    """Positions start at 0 and fetches wait: only the supervisor is under test."""

    async def _reset_offset(self, tp: TopicPartition) -> int:
        return 0

    async def _fetch_bytes(
        self, leader_url: str, tp: TopicPartition, offset: int
    ) -> tuple[bytes, bytes, int | None]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def assigned_after(metadata: MetadataClient, topics: Iterable[str]) -> float:
    """Seconds until the fetcher has an assignment (the supervisor's first success)."""
    fetcher = Idle(
        settings=SETTINGS,
        buffer=FetchBuffer(buffer_max_bytes=4096, fetch_max_bytes=1024),
        metadata=metadata,
        group=None,
        subscription=subscription(list(topics), None),
    )
    started = time.monotonic()
    fetcher.start()
    try:
        async with asyncio.timeout(10):  # far below the 30 s metadata age
            while True:
                if fetcher.assignment.partitions:
                    return time.monotonic() - started
                await asyncio.sleep(0.01)
    finally:
        await fetcher.close()


def test_a_consumer_whose_first_bootstrap_names_no_listener_recovers_on_its_own() -> None:
    metadata = NoListenerFirst(failing=3)
    asyncio.run(assigned_after(metadata, ["t"]))
    assert metadata.asked == 4


class Refused(NoListenerFirst):
    def __init__(self) -> None:
        super().__init__(failing=0)
        self.first = asyncio.Event()

    async def _fetch(self, topics: list[str]) -> Metadata:
        self.asked += 1
        self.first.set()
        raise AuthorizationError("not allowed to describe t")


def test_a_refusal_is_not_retried_on_the_backoff() -> None:
    """Not retriable (here authorization): the next try after the metadata age, as before,
    not a warning a second."""

    async def scenario() -> int:
        metadata = Refused()
        fetcher = Idle(
            settings=SETTINGS,
            buffer=FetchBuffer(buffer_max_bytes=4096, fetch_max_bytes=1024),
            metadata=metadata,
            group=None,
            subscription=subscription(["t"], None),
        )
        fetcher.start()
        try:
            async with asyncio.timeout(10):
                await metadata.first.wait()
            # an absence, so a window: the backoff (50-200 ms) would ask 5 more times
            await asyncio.sleep(1.0)
        finally:
            await fetcher.close()
        return metadata.asked

    assert asyncio.run(scenario()) == 1
