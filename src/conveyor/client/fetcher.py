"""The consumer's I/O: a long-polling fetch task per assigned partition, and a supervisor.

Runs on the sync ``Consumer``'s private loop thread or on the ``AsyncConsumer``'s loop.
The supervisor refreshes metadata, turns the subscription (``subscription.py``: topics,
a pattern, or partitions assigned by hand) into the assignment (``group.py``; a group
member's comes from its heartbeats instead) and keeps one task per assigned partition.
Each task finds its starting position (the group's
committed offset, else the reset policy), then fetches from the partition's leader in a
loop: reserve buffer room, long-poll, decode, hand the messages to the
:class:`FetchBuffer`. Partitions fetch concurrently, so one slow or leaderless partition
never holds up the others. A NOT_LEADER (or a broker that is gone) wakes the supervisor
to refresh metadata; OFFSET_OUT_OF_RANGE resets the position by policy, with a warning.
The two requests themselves (Fetch, ListOffsets) are the wire's: ``kafka_fetcher.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Final, Literal

from conveyor.client import metrics as client_metrics
from conveyor.client.errors import is_routing_error
from conveyor.client.fetch_buffer import FetchBuffer
from conveyor.client.group import Assignment, OffsetStore, assign_all
from conveyor.client.metadata import MetadataClient
from conveyor.client.subscription import Subscription
from conveyor.client.types import TopicPartition
from conveyor.protocol.backoff import backoff_ms
from conveyor.protocol.batch import LOG_OVERHEAD, parse_header, peek_length
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.record_columns import ColumnsDecoder, decode_columns
from conveyor.transport.waits import settle_all, wait_event

log = logging.getLogger(__name__)

OffsetReset = Literal["earliest", "latest"]
MISSING_TOPIC_RETRY_MS: Final = 500  # how often to look again for a topic not yet created


@dataclass(frozen=True, slots=True)
class FetchSettings:
    auto_offset_reset: OffsetReset
    fetch_max_bytes: int
    fetch_max_wait_ms: int
    request_timeout_ms: int
    metadata_max_age_ms: int
    retry_backoff_ms: int
    retry_backoff_max_ms: int
    # read_committed (issue 21): below the last stable offset, aborted transactions dropped
    read_committed: bool = False


class Fetcher:
    """See the module docstring. ``start``/``close`` on the loop it runs on."""

    def __init__(
        self,
        *,
        settings: FetchSettings,
        buffer: FetchBuffer,
        metadata: MetadataClient,
        group: OffsetStore | None,
        subscription: Subscription,
        url: str = "",
        decode: ColumnsDecoder = decode_columns,
    ) -> None:
        self._settings = settings
        self._decode = decode  # the record codec's, into columns (client/recordcodec.py)
        self.subscription = subscription
        # managed: a group member's heartbeat loop sets the assignment (``apply``); else
        # the subscription does (every partition of its topics, or the assigned ones)
        self.managed = False
        self.topics: tuple[str, ...] = subscription.topics  # as resolved (a pattern's)
        self._url = url
        self._buffer = buffer
        self._metadata = metadata
        self._group = group
        self.assignment = Assignment(())
        self.ready = False  # the first assignment has been made (maybe empty)
        self._tasks: dict[TopicPartition, asyncio.Task[None]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._space = asyncio.Event()
        self._resumed = asyncio.Event()
        self._refresh = asyncio.Event()

    def space_freed(self) -> None:
        """The buffer has room again. Call on this fetcher's loop."""
        self._space.set()

    def resumed(self) -> None:
        """Paused partitions were resumed. Call on this fetcher's loop."""
        self._resumed.set()

    def subscribe(self, subscription: Subscription) -> None:
        """Read ``subscription`` from now on (the next refresh, at once)."""
        self.subscription = subscription
        self.topics = subscription.topics
        if subscription.manual is not None:
            self.apply(Assignment(subscription.manual))
        self._refresh.set()

    def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="conveyor-fetcher")

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        if self._supervisor is not None:
            tasks.append(self._supervisor)
        for task in tasks:
            task.cancel()
        await settle_all(*tasks)
        self._tasks.clear()

    # --- assignment ------------------------------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        while True:
            self._refresh.clear()
            try:
                await self._update_assignment()
                failures = 0
            except ConveyorError as exc:
                # retriable (no broker known yet, a coordinator changing): soon again; a
                # refusal (authorization, a bad request) waits the metadata age as before
                failures = failures + 1 if exc.retriable else 0
                log.warning("consumer metadata refresh failed: %s", exc)
            cache = self._metadata.cache
            missing = any(cache.is_missing(t) for t in self.topics)
            # a partition whose leader the last answer did not name (an election under
            # way, or a leader missing from the live brokers): no loop fetches it, so no
            # error asks again (issue 15: a reader stopped for the 30 s metadata age)
            missing = missing or any(
                cache.leader_url(tp.topic, tp.partition) is None
                for tp in self.assignment.partitions
            )
            interval_ms = refresh_interval_ms(self._settings, failures, missing, random.random())
            await asyncio.sleep(self._settings.retry_backoff_ms / 1000)  # bounds the rate
            await wait_event(self._refresh, interval_ms / 1000)

    async def _update_assignment(self) -> None:
        subscription = self.subscription
        if subscription.manual is not None:
            await self._metadata.refresh({tp.topic for tp in subscription.manual})
            return
        if subscription.by_pattern:
            self.topics = subscription.matching(await self._metadata.topic_names())
        else:
            self.topics = subscription.topics
        await self._metadata.refresh(self.topics)
        if self.managed or self.subscription is not subscription:
            return  # a member's assignment comes from its group; a new subscription, anew
        counts = {}
        for topic in self.topics:
            count = self._metadata.cache.partition_count(topic)
            if count:
                counts[topic] = count
        self.apply(assign_all(counts))

    async def recheck_topics(self) -> list[str]:
        """Ask for the subscribed topics' metadata now; the ones still missing (a failed
        ask leaves the last answer: the supervisor logs and retries its own)."""
        with contextlib.suppress(ConveyorError):
            await self._metadata.refresh(self.topics)
        return self.missing_topics()

    def missing_topics(self) -> list[str]:
        """The subscribed topics the last metadata answer said do not exist."""
        return [t for t in self.topics if self._metadata.cache.is_missing(t)]

    def apply(self, assignment: Assignment) -> None:
        """Fetch exactly ``assignment``'s partitions: stop the others (dropping what was
        prefetched for them), start the new ones at their committed offsets."""
        added = self._buffer.assign(assignment.partitions)
        for tp in [tp for tp in self._tasks if tp not in set(assignment.partitions)]:
            self._tasks.pop(tp).cancel()
            log.info("%s[%d]: no longer assigned", tp.topic, tp.partition)
        self.assignment = assignment
        committed = {topic: self._committed(topic) for topic in {tp.topic for tp in added}}
        for tp in added:
            self._tasks[tp] = asyncio.create_task(
                self._run_partition(tp, committed[tp.topic]), name=f"conveyor-fetch-{tp}"
            )
        self.ready = True

    def _committed(self, topic: str) -> asyncio.Future[dict[int, int]]:
        if self._group is None:  # no group: nothing committed, the reset policy decides
            done: asyncio.Future[dict[int, int]] = asyncio.get_running_loop().create_future()
            done.set_result({})
            return done
        return asyncio.ensure_future(self._group.fetch_offsets(topic))

    # --- one partition ---------------------------------------------------------------------

    async def _run_partition(
        self, tp: TopicPartition, committed: asyncio.Future[dict[int, int]]
    ) -> None:
        failures = 0
        while True:
            try:
                target = self._buffer.fetch_target(tp)
                if target is None:
                    await self._initialize(tp, committed)
                else:
                    await self._fetch(tp, *target)
                failures = 0
            except Exception as caught:
                exc = caught if isinstance(caught, ConveyorError) else _unexpected(tp, caught)
                if exc.code is ErrorCode.OFFSET_OUT_OF_RANGE and self._buffer.fetch_target(tp):
                    await self._reset(tp, exc)
                    continue
                self._on_error(tp, exc)
                delay_ms = backoff_ms(
                    failures,
                    base_ms=self._settings.retry_backoff_ms,
                    max_ms=self._settings.retry_backoff_max_ms,
                    draw=random.random(),
                )
                failures += 1
                await asyncio.sleep(delay_ms / 1000)

    def _on_error(self, tp: TopicPartition, exc: ConveyorError) -> None:
        if is_routing_error(exc):
            log.info("%s[%d]: %s; refreshing metadata", tp.topic, tp.partition, exc)
            self._metadata.on_routing_error(tp.topic, tp.partition, exc)
            self._refresh.set()
        elif exc.retriable:
            log.info("%s[%d]: fetch failed, will retry: %s", tp.topic, tp.partition, exc)
        else:
            log.error("%s[%d]: fetch failed: %s", tp.topic, tp.partition, exc)
            self._buffer.fail(exc)

    async def _initialize(
        self, tp: TopicPartition, committed: asyncio.Future[dict[int, int]]
    ) -> None:
        """Start at the group's committed offset, else where ``auto_offset_reset`` says."""
        if committed.done() and committed.exception() is not None and self._group is not None:
            offsets = await self._group.fetch_offsets(tp.topic)  # the shared fetch failed
        else:
            offsets = await committed
        offset = offsets.get(tp.partition)
        if offset is not None:
            if self._buffer.seek_if_unset(tp, offset, committed=offset):
                log.info("%s[%d]: starting at committed offset %d", tp.topic, tp.partition, offset)
            return
        offset = await self._reset_offset(tp)
        if self._buffer.seek_if_unset(tp, offset, committed=None):
            log.info(
                "%s[%d]: no committed offset, starting at %s offset %d",
                tp.topic,
                tp.partition,
                self._settings.auto_offset_reset,
                offset,
            )

    async def _reset(self, tp: TopicPartition, error: ConveyorError) -> None:
        offset = await self._reset_offset(tp)
        log.warning(
            "%s[%d]: %s; resetting to the %s offset %d",
            tp.topic,
            tp.partition,
            error,
            self._settings.auto_offset_reset,
            offset,
        )
        self._buffer.seek(tp, offset)

    async def _reset_offset(self, tp: TopicPartition) -> int:
        """Where ``tp`` starts by the reset policy (the wire's: ``kafka_fetcher.py``)."""
        raise NotImplementedError

    def _leader_url(self, tp: TopicPartition) -> str:
        leader_url = self._metadata.cache.leader_url(tp.topic, tp.partition)
        if leader_url is None:
            raise RetriableError(
                f"{tp.topic}[{tp.partition}] has no leader", code=ErrorCode.LEADER_NOT_AVAILABLE
            )
        return leader_url

    async def _reserve(self, size_bytes: int) -> None:
        while not self._buffer.try_reserve(size_bytes):
            self._space.clear()
            if self._buffer.try_reserve(size_bytes):  # room was made before the clear
                return
            await self._space.wait()

    async def _fetch(self, tp: TopicPartition, offset: int, generation: int) -> None:
        settings = self._settings
        while self._buffer.is_paused(tp):
            self._resumed.clear()
            if not self._buffer.is_paused(tp):
                break
            await self._resumed.wait()
            return  # the position may have moved meanwhile: ask the buffer again
        leader_url = self._leader_url(tp)
        await self._reserve(settings.fetch_max_bytes)
        reserved = settings.fetch_max_bytes
        try:
            body, visible, high_watermark = await self._fetch_bytes(leader_url, tp, offset)
            columns = self._decode(visible, start_offset=offset)
        except BaseException:
            self._buffer.release(reserved)
            raise
        client_metrics.records_fetched(tp.topic, len(columns), len(body))
        last = columns.offsets[-1] + 1 if columns else 0
        next_offset = max(offset, _next_offset(body), last)
        self._buffer.add(
            tp,
            generation,
            columns,
            next_offset=next_offset,
            size_bytes=len(body),
            reserved_bytes=reserved,
            high_watermark=high_watermark,
        )

    async def _fetch_bytes(
        self, leader_url: str, tp: TopicPartition, offset: int
    ) -> tuple[bytes, bytes, int | None]:
        """One long-poll from ``offset``: (the batches answered, those a reader may see,
        the end it may read to when the leader said it: the high watermark, or the last
        stable offset with read_committed). The wire's: ``kafka_fetcher.py``."""
        raise NotImplementedError

    async def close_transport(self) -> None:
        """Close the fetcher's own connections to the brokers (the wire's)."""


def refresh_interval_ms(settings: FetchSettings, failures: int, missing: bool, draw: float) -> int:
    """How long the supervisor waits before its next metadata refresh (pure): after
    ``failures`` retriable failed refreshes in a row, the retry backoff; while a subscribed topic is
    missing or an assigned partition has no known leader, ``MISSING_TOPIC_RETRY_MS``
    (as Kafka's consumer asks for metadata when a partition's leader is unknown); else
    ``metadata_max_age_ms``. A failed refresh
    must not wait the full age: before the first assignment no partition task exists to
    ask for another, and a consumer that started while the coordinator named no broker's
    Kafka listener yet (just after a takeover) read nothing for 30 s (docs/testing.md).

    >>> s = FetchSettings("earliest", 1, 1, 1, 30_000, 100, 1_000)
    >>> [refresh_interval_ms(s, f, False, 0.5) for f in (0, 1, 2, 9)]
    [30000, 100, 200, 1000]
    """
    if failures > 0:
        return backoff_ms(
            failures - 1,
            base_ms=settings.retry_backoff_ms,
            max_ms=settings.retry_backoff_max_ms,
            draw=draw,
        )
    return MISSING_TOPIC_RETRY_MS if missing else settings.metadata_max_age_ms


def _unexpected(tp: TopicPartition, error: Exception) -> ConveyorError:
    """A bug or a reply this client cannot read: surfaced through poll, not swallowed."""
    log.error("%s[%d]: unexpected fetch error", tp.topic, tp.partition, exc_info=error)
    return ConveyorError(f"unexpected error fetching {tp.topic}[{tp.partition}]: {error!r}")


def _next_offset(body: bytes) -> int:
    """The offset after the last whole batch in a fetch response (0 when there is none):
    where the next fetch starts even if the last batches held nothing to return."""
    position = 0
    next_offset = 0
    while len(body) - position >= LOG_OVERHEAD:
        _, size_bytes = peek_length(body, position)
        if position + size_bytes > len(body):
            break
        next_offset = parse_header(body, position).next_offset
        position += size_bytes
    return next_offset
