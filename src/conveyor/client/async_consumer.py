"""``AsyncConsumer``: the asyncio twin of :class:`Consumer`, over the same
:class:`ConsumerCore` (``consumer_core.py``) on the caller's loop, with the same names and
semantics; rebalance callbacks and ``run``'s callback may be coroutine functions."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TypeVar

from conveyor.client.consumer_core import (
    Callbacks,
    ConsumerCore,
    Delivery,
    Isolation,
    OffsetsArg,
    PartitionsArg,
    RebalanceCallback,
    make_config,
)
from conveyor.client.fetcher import OffsetReset
from conveyor.client.offsets import OffsetAndTimestamp
from conveyor.client.subscription import partitions_of, subscription
from conveyor.client.transport_choice import data_transport
from conveyor.client.types import ConsumerGroupMetadata, Message, PolledBatch, TopicPartition
from conveyor.transport.credentials import authorization_header
from conveyor.transport.tls import TLSConfig
from conveyor.transport.waits import wait_event

Taken = TypeVar("Taken", list[Message], PolledBatch)


async def _call(callback: Callable[..., object], *args: object) -> None:
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


class AsyncConsumer:
    """The asyncio twin of :class:`Consumer`, with the same settings and semantics."""

    def __init__(
        self,
        url: str | None = None,
        topics: str | Iterable[str] | None = None,
        *,
        group_id: str | None = None,
        pattern: str | None = None,
        group: str | None = None,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
        group_instance_id: str | None = None,
        auto_offset_reset: OffsetReset = "earliest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
        max_poll_records: int = 500,
        fetch_max_bytes: int = 1024 * 1024,
        fetch_max_wait_ms: int = 500,
        buffer_max_bytes: int = 64 * 1024 * 1024,
        request_timeout_ms: int = 30_000,
        metadata_max_age_ms: int = 30_000,
        tls: TLSConfig | None = None,
        transport: str | None = None,
        bootstrap_servers: str | None = None,
        client_id: str = "",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        max_poll_interval_ms: int = 300_000,
        delivery: Delivery = "at-least-once",
        isolation: Isolation = "read_uncommitted",
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        data_transport(transport)  # only Kafka: "http" raises KafkaOnlyError
        config = make_config(
            url,
            topics,
            group,
            group_id,
            pattern=pattern,
            group_instance_id=group_instance_id,
            auto_offset_reset=auto_offset_reset,
            enable_auto_commit=enable_auto_commit,
            auto_commit_interval_ms=auto_commit_interval_ms,
            max_poll_records=max_poll_records,
            fetch_max_bytes=fetch_max_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
            buffer_max_bytes=buffer_max_bytes,
            request_timeout_ms=request_timeout_ms,
            metadata_max_age_ms=metadata_max_age_ms,
            tls=tls,
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            delivery=delivery,
            isolation=isolation,
            authorization=authorization_header(token, user, password),
        )
        self._core = ConsumerCore(config, Callbacks(on_assign, on_revoke, on_lost))
        self._data: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self._core.config.url

    @property
    def group_id(self) -> str | None:
        return self._core.config.group_id

    def _started(self) -> ConsumerCore:
        core = self._core
        core.check_open()
        if self._data is None:
            self._data = data = asyncio.Event()
            core.buffer.on_data = data.set
            core.buffer.on_space = core.fetcher.space_freed
            core.start()
        return core

    # ---- what to read ----------------------------------------------------------------------

    async def subscribe(
        self,
        topics: str | Iterable[str] | None = None,
        *,
        pattern: str | None = None,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        wanted = subscription(topics, pattern)
        callbacks = None
        if on_assign or on_revoke or on_lost:
            callbacks = Callbacks(on_assign, on_revoke, on_lost)
        await self._started().subscribe(wanted, callbacks)

    async def unsubscribe(self) -> None:
        await self._started().unsubscribe()

    async def assign(self, partitions: PartitionsArg) -> None:
        await self._started().assign(partitions)

    def assignment(self) -> list[TopicPartition]:
        return self._core.buffer.assignment()

    def pause(self, partitions: PartitionsArg) -> None:
        self._core.buffer.pause(partitions_of(partitions)[0])

    def resume(self, partitions: PartitionsArg) -> None:
        self._core.buffer.resume(partitions_of(partitions)[0])
        self._core.fetcher.resumed()

    def paused(self) -> list[TopicPartition]:
        return self._core.buffer.paused()

    # ---- reading ---------------------------------------------------------------------------

    async def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Message]:  # noqa: ASYNC109 -- as Consumer.poll
        """Messages available now, or within ``timeout`` seconds (else an empty list)."""
        return await self._poll(timeout, max_records, self._core.buffer.take, [])

    async def poll_batch(
        self,
        timeout: float = 1.0,  # noqa: ASYNC109 -- as Consumer.poll_batch
        max_records: int | None = None,
        *,
        headers: bool = False,
    ) -> PolledBatch:
        """:meth:`Consumer.poll_batch`: records as columns, no object per record."""

        def take(limit: int) -> PolledBatch:
            return self._core.buffer.take_batch(limit, headers=headers)

        return await self._poll(timeout, max_records, take, PolledBatch())

    async def _poll(
        self,
        timeout: float,  # noqa: ASYNC109 -- poll's
        max_records: int | None,
        take: Callable[[int], Taken],
        empty: Taken,
    ) -> Taken:
        core = self._started()
        assert self._data is not None
        if core.auto_commit_due():
            await core.auto_commit()
        limit = max_records or core.config.max_poll_records
        deadline = time.monotonic() + timeout
        while True:
            self._data.clear()
            await self._rebalance()
            taken = take(limit)
            if taken and not await core.commit_taken(len(taken)):
                taken = empty
            remaining_s = deadline - time.monotonic()
            if taken or remaining_s <= 0 or core.stopping:
                return taken
            if not core.buffer.has_data():
                await wait_event(self._data, min(remaining_s, 0.1))  # wakes to notice stop()

    async def _rebalance(self) -> None:
        core = self._core
        if core.poll_started():
            revoked = core.revoking()
            if revoked and core.callbacks.on_revoke is not None:
                await _call(core.callbacks.on_revoke, sorted(revoked))
            await core.before_poll(revoked)
        for callback, partitions in core.take_events():
            await _call(callback, partitions)

    def group_metadata(self) -> ConsumerGroupMetadata:
        """As :meth:`Consumer.group_metadata` (read on this loop, where it changes)."""
        return self._started().group_metadata()

    def caught_up(self) -> bool:
        return self._core.fetcher.ready and self._core.buffer.caught_up()

    def assignment_settled(self) -> bool:
        return self._core.assignment_settled()

    def position(self, topic: str, partition: int) -> int | None:
        return self._core.buffer.position(TopicPartition(topic, partition))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._core.buffer.seek(TopicPartition(topic, partition), offset)

    async def seek_to_beginning(self, partitions: PartitionsArg | None = None) -> None:
        await self._started().seek_to(partitions, "earliest")

    async def seek_to_end(self, partitions: PartitionsArg | None = None) -> None:
        await self._started().seek_to(partitions, "latest")

    # ---- offsets ---------------------------------------------------------------------------

    async def commit(
        self, offsets: OffsetsArg | None = None, asynchronous: bool = False
    ) -> asyncio.Task[None] | None:
        """As :meth:`Consumer.commit`; ``asynchronous`` returns the commit's task."""
        task = asyncio.ensure_future(self._started().commit(offsets))
        if asynchronous:
            return task
        await task
        return None

    async def committed(self, partitions: PartitionsArg) -> dict[TopicPartition, int | None]:
        return await self._started().committed(partitions)

    async def beginning_offsets(self, partitions: PartitionsArg) -> dict[TopicPartition, int]:
        return await self._started().list_offsets(partitions, "earliest")

    async def end_offsets(self, partitions: PartitionsArg) -> dict[TopicPartition, int]:
        return await self._started().list_offsets(partitions, "latest")

    async def offsets_for_times(
        self, times: Mapping[TopicPartition | tuple[str, int], int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        return await self._started().offsets_for_times(times)

    # ---- loops -----------------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[Message]:
        core = self._core
        while not core.stopping and not core.closed:
            for message in await self.poll(timeout=0.5):
                yield message

    async def run(
        self,
        callback: Callable[[Message], Awaitable[object] | object],
        *,
        poll_timeout: float = 0.5,
    ) -> None:
        """As :meth:`Consumer.run`; ``callback`` may be a plain function or a coroutine."""
        core = self._core
        while not core.stopping and not core.closed:
            messages = await self.poll(timeout=poll_timeout)
            for index, message in enumerate(messages):
                try:
                    await _call(callback, message)
                except BaseException:
                    core.rewind(messages[index:])
                    raise

    def stop(self) -> None:
        self._core.stopping = True

    async def close(self) -> None:
        core = self._core
        if core.closed:
            return
        core.closed = core.stopping = True
        if self._data is None:  # never started: nothing to commit, only the session
            await core.http.close()
            return
        await core.shutdown()

    async def __aenter__(self) -> AsyncConsumer:
        self._started()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncConsumer {self.url} group_id={self.group_id}>"
