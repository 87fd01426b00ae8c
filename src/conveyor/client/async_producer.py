"""``AsyncProducer``: the asyncio face of the producer (``producer.py`` has the shared
core and the thread-safe ``Producer``). It runs the sender task on the caller's loop and
waits with ``await`` where ``Producer`` blocks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from types import TracebackType
from typing import Any

from conveyor.client.accumulator import BufferFull
from conveyor.client.errors import BufferFullError, ClientClosedError
from conveyor.client.futures import RecordFuture
from conveyor.client.hooks import (
    DeliveryCallback,
    Partitioner,
    SendHooks,
    Serializer,
    report_delivery,
)
from conveyor.client.producer import (
    RETRIES_UNLIMITED,
    MetadataNeeded,
    _config,
    _ProducerCore,
    _Record,
)
from conveyor.client.send_many import SendManyFuture, prepare_many
from conveyor.client.sender import MAX_REQUEST_SIZE_DEFAULT
from conveyor.client.transport_choice import data_transport
from conveyor.client.types import (
    ConsumerGroupMetadata,
    HeadersArg,
    RecordMetadata,
    TopicPartition,
    to_headers,
)
from conveyor.protocol.records import Codec
from conveyor.transport.credentials import authorization_header
from conveyor.transport.tls import TLSConfig
from conveyor.transport.waits import gather_all, wait_event, within


class AsyncProducer:
    """The asyncio twin of :class:`Producer`, with the same settings and semantics.

    ``await send(...)`` returns the :class:`RecordMetadata` once acknowledged; to pipeline,
    ``await enqueue(...)`` (waits only for buffer space) or ``send_nowait(...)`` (never
    waits) return an awaitable per record, and ``await flush()`` waits for all of them.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        acks: str | int = "all",
        linger_ms: int = 5,
        batch_size: int = 512 * 1024,
        codec: Codec | str = Codec.NONE,
        retries: int = RETRIES_UNLIMITED,
        delivery_timeout_ms: int = 120_000,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1_000,
        buffer_memory_bytes: int = 32 * 1024 * 1024,
        max_block_ms: int = 60_000,
        tls: TLSConfig | None = None,
        idempotence: bool | None = None,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        max_in_flight_requests_per_connection: int | None = None,
        max_request_size: int = MAX_REQUEST_SIZE_DEFAULT,
        transport: str | None = None,
        bootstrap_servers: str | None = None,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        key_serializer: Serializer | None = None,
        value_serializer: Serializer | None = None,
        partitioner: Partitioner | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        data_transport(transport)  # only Kafka: "http" raises KafkaOnlyError
        hooks = SendHooks(key_serializer, value_serializer, partitioner, on_delivery)
        config = _config(
            url,
            acks,
            codec,
            linger_ms=linger_ms,
            batch_size=batch_size,
            retries=retries,
            delivery_timeout_ms=delivery_timeout_ms,
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            buffer_memory_bytes=buffer_memory_bytes,
            max_block_ms=max_block_ms,
            tls=tls,
            idempotence=idempotence,
            transactional_id=transactional_id,
            transaction_timeout_ms=transaction_timeout_ms,
            max_in_flight_requests_per_connection=max_in_flight_requests_per_connection,
            max_request_size=max_request_size,
            bootstrap_servers=bootstrap_servers,
            authorization=authorization_header(token, user, password),
        )
        self._core = _ProducerCore(config, self._wake, hooks)
        self._batch_opened = False
        # Records to a topic whose metadata is still loading wait in tasks; while any do,
        # later records to that topic queue behind them, so that send order is kept.
        self._staged: dict[str, int] = {}

    @property
    def url(self) -> str:
        return self._core.config.url

    def _started(self) -> _ProducerCore:
        core = self._core
        if core.run_task is None:
            if core.closed:
                raise ClientClosedError("send() after close()")
            core.async_space = asyncio.Event()
            core.start()
        return core

    def _wake(self) -> None:
        self._core.sender.wake()
        self._batch_opened = True

    def send_nowait(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        headers: HeadersArg = None,
        partition: int | None = None,
        *,
        timestamp_ms: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> Awaitable[RecordMetadata]:
        """Queue one record without suspending; await the result for its metadata.

        Raises :class:`BufferFullError` at once when the buffer is full (``enqueue``
        waits instead). Call it from a coroutine that awaits now and then, or the
        sender never gets to run. The first records to a topic whose metadata is not
        loaded yet are queued in a task (the returned awaitable), in order.
        """
        core = self._started()
        key_bytes, value_bytes = core.hooks.serialize(key, value)
        header_pairs = to_headers(headers) if headers else ()
        record = _Record(topic, key_bytes, value_bytes, header_pairs, partition, timestamp_ms)
        callback = on_delivery or core.hooks.on_delivery
        if not self._staged.get(topic):
            try:
                future = core.append(*record)
            except BufferFull:
                raise BufferFullError("the producer's buffer is full: await enqueue()") from None
            except MetadataNeeded:
                pass
            else:
                report_delivery(future, callback)
                return future
        return asyncio.ensure_future(self._staged_send(record, callback))

    async def _staged_send(
        self, record: _Record, callback: DeliveryCallback | None
    ) -> RecordMetadata:
        topic = record.topic
        self._staged[topic] = self._staged.get(topic, 0) + 1
        try:
            future = await self._enqueue(record)
        finally:
            self._staged[topic] -= 1
        report_delivery(future, callback)
        return await future

    async def enqueue(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        headers: HeadersArg = None,
        partition: int | None = None,
        *,
        timestamp_ms: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> RecordFuture:
        """Queue one record, waiting for metadata or buffer space if needed; returns the
        record's future (await it for the metadata) without waiting for the broker."""
        core = self._started()
        key_bytes, value_bytes = core.hooks.serialize(key, value)
        header_pairs = to_headers(headers) if headers else ()
        future = await self._enqueue(
            _Record(topic, key_bytes, value_bytes, header_pairs, partition, timestamp_ms)
        )
        report_delivery(future, on_delivery or core.hooks.on_delivery)
        return future

    async def _enqueue(self, record: _Record) -> RecordFuture:
        core = self._started()
        deadline = time.monotonic() + core.config.max_block_ms / 1000
        while True:
            try:
                future = core.append(*record)
                break
            except MetadataNeeded:
                await core.partition_count(record.topic, core.config.max_block_ms)
            except BufferFull:
                await self._wait_for_room(deadline)
        if self._batch_opened:
            self._batch_opened = False
            await asyncio.sleep(0)  # a batch opened (so one may have filled): let it go
        return future

    async def _wait_for_room(self, deadline: float) -> None:
        core = self._core
        assert core.async_space is not None
        while not core.accumulator.has_room and not core.closed:
            core.async_space.clear()
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise BufferFullError(
                    f"buffer stayed full for max_block_ms={core.config.max_block_ms}"
                )
            if not await wait_event(core.async_space, remaining_s):
                continue

    async def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> SendManyFuture:
        """Queue every value as :meth:`Producer.send_many` does, waiting (not blocking)
        for metadata and buffer space; returns the call's future at once after, which
        ``await`` turns into its :class:`SendManyResult`. The loop gets a turn between
        chunks of records, so the sender sends the batches already full meanwhile."""
        core = self._started()
        many = prepare_many(core.hooks, topic, values, keys, partition, timestamp_ms)
        deadline = time.monotonic() + core.config.max_block_ms / 1000
        while not many.finished:
            try:
                start = many.next_index
                core.append_many(many)
            except MetadataNeeded:
                await core.partition_count(topic, core.config.max_block_ms)
                continue
            if many.next_index > start:
                deadline = time.monotonic() + core.config.max_block_ms / 1000
            if not core.accumulator.has_room:
                await self._wait_for_room(deadline)
            elif self._batch_opened or not many.finished:
                self._batch_opened = False
                await asyncio.sleep(0)  # let the sender take the batches that filled
        return many.future()

    async def send(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        headers: HeadersArg = None,
        partition: int | None = None,
        *,
        timestamp_ms: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> RecordMetadata:
        """Send one record and wait for its acknowledgement."""
        future = await self.enqueue(
            topic,
            value,
            key,
            headers,
            partition,
            timestamp_ms=timestamp_ms,
            on_delivery=on_delivery,
        )
        return await future

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 -- as Producer.flush
        """Send everything buffered now and wait until each record is done."""
        core = self._core
        pending = core.accumulator.begin_flush()
        try:
            core.sender.wake()
            waits = [completion.wait_async() for completion in pending]
            if waits:
                await within(gather_all(*waits), timeout)
        finally:
            core.accumulator.end_flush()

    # ---- transactions (issue 21): as Producer's ------------------------------------------

    async def init_transactions(self) -> None:
        await self._started().txn().init()

    async def begin_transaction(self) -> None:
        txn = self._started().txn()
        await txn.init()
        txn.begin()

    async def send_offsets_to_transaction(
        self,
        offsets: Mapping[TopicPartition | tuple[str, int], int],
        group: ConsumerGroupMetadata | str,
    ) -> None:
        """As :meth:`Producer.send_offsets_to_transaction` (``group``: the consumer's
        ``group_metadata()``, fenced, or a bare group id)."""
        wanted = {(tp[0], tp[1]): offset for tp, offset in offsets.items()}
        await self._started().txn().send_offsets(wanted, group)

    async def commit_transaction(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 -- as Producer's
        txn = self._started().txn()
        await self.flush(timeout)
        await txn.end(commit=True)

    async def abort_transaction(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 -- as Producer's
        txn = self._started().txn()
        await self.flush(timeout)
        await txn.end(commit=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncProducer]:
        """``async with producer.transaction(): ...``: commits, or aborts on an exception."""
        await self.begin_transaction()
        try:
            yield self
        except BaseException:
            await self.abort_transaction()
            raise
        await self.commit_transaction()

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 -- as Producer.close
        """Send what is buffered (up to ``timeout`` s), then close. Idempotent."""
        if timeout is None:
            timeout = self._core.config.delivery_timeout_ms / 1000
        await self._core.shutdown(timeout)

    async def __aenter__(self) -> AsyncProducer:
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
        return f"<AsyncProducer {self.url} acks={self._core.config.acks}>"
