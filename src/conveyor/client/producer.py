"""``Producer`` (threads) and ``AsyncProducer`` (asyncio): one implementation, two faces.

Both are a thin shell over :class:`_ProducerCore`: ``send`` converts the key and value,
picks the partition and appends to the accumulator under a lock; the :class:`Sender` task
does all network I/O. The sync producer runs that task on a private loop thread
(``loop.py``), the async one on the caller's loop. They differ only in how they wait:
for metadata of a new topic, for buffer space, for acknowledgements.

The hot path (``send`` of a known topic with room in the buffer) takes one lock, reads
the clock once, appends to a ``BatchBuilder`` and returns a two-slot ``RecordFuture``;
everything else (wake-ups, encoding, the Kafka Produce request) happens once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, NamedTuple

from conveyor.client.accumulator import Accumulator, AccumulatorClosed, BufferFull
from conveyor.client.errors import BufferFullError, ClientClosedError
from conveyor.client.futures import BatchCompletion, RecordFuture
from conveyor.client.hooks import (
    DeliveryCallback,
    Partitioner,
    SendHooks,
    Serializer,
    report_delivery,
)
from conveyor.client.kafka_metadata import KafkaMetadataClient, kafka_metadata_client
from conveyor.client.kafka_txn import KafkaTxnTransport
from conveyor.client.loop import LoopThread, close_at_exit, forget_at_exit
from conveyor.client.recordcodec import configured_codec
from conveyor.client.send_many import ManySend, SendManyFuture, prepare_many
from conveyor.client.sender import MAX_REQUEST_SIZE_DEFAULT, AcksSetting, Sender
from conveyor.client.transactions import TransactionSession
from conveyor.client.transport_choice import data_transport
from conveyor.client.types import (
    ConsumerGroupMetadata,
    Headers,
    HeadersArg,
    TopicPartition,
    to_bytes,
    to_headers,
)
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.records import Codec
from conveyor.transport.client import AsyncHTTP, coordinator_set, default_url
from conveyor.transport.credentials import authorization_header
from conveyor.transport.tls import TLSConfig
from conveyor.transport.waits import within

RETRIES_UNLIMITED: Final = 2**31 - 1
# Batches in flight per partition by default, with idempotence: Kafka's 5, for full
# batches only (the accumulator's rule: a batch still filling waits for the answers);
# without idempotence 1, so that a retried batch never lands after the one behind it.
# Any batch going at its linger with five in flight sent each broker a request per linger
# rather than one per round trip, which cost Conveyor's Python brokers more than the wait
# saved (W4 latency 2-3x worse: docs/benchmarks.md, "W4: batches in flight per
# partition"); full batches pipelined are W1's throughput ("Full batches pipeline").
MAX_IN_FLIGHT_DEFAULT: Final = 5
IDEMPOTENT_IN_FLIGHT_MAX: Final = 5  # the broker's dedup window (rules.PRODUCER_BATCHES_KEPT)
_time_ns: Final = time.time_ns
_CODECS: Final = {codec.name.lower(): codec for codec in Codec}


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """Producer settings; see docs/client.md for the table with defaults and reasons."""

    url: str
    acks: AcksSetting = "all"
    linger_ms: int = 5
    batch_size: int = 512 * 1024
    codec: Codec = Codec.NONE
    retries: int = RETRIES_UNLIMITED
    delivery_timeout_ms: int = 120_000
    request_timeout_ms: int = 30_000
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1_000
    buffer_memory_bytes: int = 32 * 1024 * 1024
    max_block_ms: int = 60_000
    tls: TLSConfig | None = None
    # None: on with acks=all (Kafka's default since 3.0): retries never duplicate a batch.
    idempotence: bool | None = None
    # a transactional producer (issue 21, docs/transactions.md): idempotent, acks=all
    transactional_id: str | None = None
    transaction_timeout_ms: int = 60_000
    # full batches of one partition sent before the first is answered (Kafka's name; at
    # most 5 with idempotence, the broker's dedup window; 1 in a transaction). None: 5 with
    # idempotence, 1 without (a retry must not overtake the batch behind it: key order)
    max_in_flight_requests_per_connection: int | None = None
    # bytes of batches one Produce request carries to a broker (Kafka's name and default;
    # a batch larger than this goes alone)
    max_request_size: int = MAX_REQUEST_SIZE_DEFAULT
    bootstrap_servers: str | None = None  # Kafka listeners to ask first; None: from url
    # The Authorization header (from token, or user and password); None: the environment.
    authorization: str | None = field(default=None, repr=False)

    @property
    def idempotent(self) -> bool:
        if self.transactional_id is not None:
            return True
        return self.acks == "all" if self.idempotence is None else self.idempotence


def normalize_acks(acks: str | int) -> AcksSetting:
    """``"all"``/``-1``, ``"1"``/``1`` or ``"0"``/``0``, as the broker's query spells it."""
    value = str(acks).lower()
    if value in ("all", "-1"):
        return "all"
    if value == "1":
        return "1"
    if value == "0":
        return "0"
    raise ValueError(f"acks must be 0, 1 or 'all', not {acks!r}")


def normalize_codec(codec: Codec | str | int) -> Codec:
    if isinstance(codec, str):
        if codec.lower() not in _CODECS:
            raise ValueError(f"unknown codec {codec!r}: one of {sorted(_CODECS)}")
        return _CODECS[codec.lower()]
    return Codec(codec)


class MetadataNeeded(Exception):  # noqa: N818 -- a signal between core and shell
    """The topic's partition count is not known yet: fetch metadata, then append."""


class _ProducerCore:
    """Everything the two producers share except how they wait (module docstring).

    ``wake_sender`` tells the sender that a batch opened: a thread-safe hop onto the I/O
    loop for the sync producer, a direct call for the async one.
    """

    def __init__(
        self,
        config: ProducerConfig,
        wake_sender: Callable[[], None],
        hooks: SendHooks | None = None,
    ) -> None:
        if config.linger_ms < 0 or config.batch_size <= 0 or config.retries < 0:
            raise ValueError("need linger_ms >= 0, batch_size > 0 and retries >= 0")
        if config.max_request_size <= 0:
            raise ValueError("max_request_size must be > 0")
        if config.transactional_id is not None and (
            config.acks != "all" or config.idempotence is False or not config.transactional_id
        ):
            raise ValueError("a transactional producer needs acks='all' and idempotence")
        max_in_flight = check_max_in_flight(config)
        self.config = config
        self.hooks = hooks or SendHooks()
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)  # notified when batches leave the buffer
        self.async_space: asyncio.Event | None = None  # the AsyncProducer's twin of space
        self.accumulator: Accumulator[BatchCompletion, RecordFuture] = Accumulator(
            batch_size_bytes=config.batch_size,
            linger_ms=config.linger_ms,
            buffer_memory_bytes=max(config.buffer_memory_bytes, config.batch_size),
            delivery_timeout_ms=config.delivery_timeout_ms,
            codec=config.codec,
            lock=self.lock,
            new_completion=BatchCompletion,
            new_future=RecordFuture,
            wake_sender=wake_sender,
            on_space=self._on_space,
            sticky_start=random.randrange(1 << 16),
            new_builder=configured_codec().new_builder,
            max_in_flight=max_in_flight,
        )
        coordinators = coordinator_set(config.url)
        self.http = AsyncHTTP(
            config.tls,
            timeout_s=config.request_timeout_ms / 1000 + 10,
            authorization=config.authorization,
            coordinators=coordinators,  # requests go to the active coordinator
        )
        # Metadata, produce and InitProducerId over the brokers' Kafka listeners; self.http
        # only asks the coordinator for their addresses when no bootstrap_servers is given.
        self.metadata: KafkaMetadataClient = kafka_metadata_client(
            self.http,
            coordinators.primary,
            config.bootstrap_servers,
            config.tls,
            config.authorization,
            config.request_timeout_ms,
            auto_create=True,
        )
        self.partition_counts = self.metadata.cache.partition_counts
        self.transaction = (
            None
            if config.transactional_id is None
            else TransactionSession(
                KafkaTxnTransport(self.metadata, config.request_timeout_ms),
                config.transactional_id,
                transaction_timeout_ms=config.transaction_timeout_ms,
                request_timeout_ms=config.request_timeout_ms,
            )
        )
        self.sender = Sender(
            accumulator=self.accumulator,
            metadata=self.metadata,
            acks=config.acks,
            codec=config.codec,
            request_timeout_ms=config.request_timeout_ms,
            delivery_timeout_ms=config.delivery_timeout_ms,
            retries=config.retries,
            retry_backoff_ms=config.retry_backoff_ms,
            retry_backoff_max_ms=config.retry_backoff_max_ms,
            idempotent=config.idempotent,
            transaction=self.transaction,
            max_request_size=config.max_request_size,
        )
        self.run_task: asyncio.Task[None] | None = None

    def txn(self) -> TransactionSession:
        if self.transaction is None:
            raise InvalidRequestError(
                "not a transactional producer: give transactional_id=",
                code=ErrorCode.INVALID_TXN_STATE,
            )
        return self.transaction

    def _check_transaction(self) -> None:
        if self.transaction is not None and not self.transaction.in_transaction:
            raise InvalidRequestError(
                "a transactional producer sends inside a transaction: begin_transaction() first",
                code=ErrorCode.INVALID_TXN_STATE,
            )

    def _on_space(self) -> None:  # under lock
        self.space.notify_all()
        if self.async_space is not None:
            self.async_space.set()

    def start(self) -> None:
        """Start the sender on the running loop."""
        self.run_task = asyncio.create_task(self.sender.run(), name="conveyor-sender")

    @property
    def closed(self) -> bool:
        return self.accumulator.closed

    def append(  # noqa: PLR0917 -- positional, as _Record unpacks into it
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None,
        timestamp_ms: int | None = None,
    ) -> RecordFuture:
        """Append one converted record. Raises MetadataNeeded or BufferFull: the shells
        wait in their own way and call again."""
        self._check_transaction()
        count = self.partition_counts.get(topic)
        if count is None:
            raise MetadataNeeded(topic)
        if partition is None and self.hooks.partitioner is not None:
            partition = self.hooks.choose_partition(topic, key, count, self.available(topic))
        try:
            return self.accumulator.append(
                topic,
                key,
                value,
                headers,
                partition,
                count,
                _time_ns() // 1_000_000,
                timestamp_ms,
            )
        except AccumulatorClosed:
            raise ClientClosedError("send() after close()") from None

    def append_many(self, many: ManySend) -> None:
        """Append the next chunk of ``many`` (``Accumulator.append_many``). Raises
        MetadataNeeded; when it stops short for a full buffer, the shell waits for room."""
        self._check_transaction()
        count = many.partition_count or self.partition_counts.get(many.topic)
        if count is None:
            raise MetadataNeeded(many.topic)
        if not many.partition_count:
            many.bind(count, self.hooks, self.available)
        try:
            many.next_index = self.accumulator.append_many(
                many.topic,
                many.values,
                many.keys,
                many.partitions,
                count,
                _time_ns() // 1_000_000,
                many.next_index,
                many.runs,
                many.timestamp_ms,
            )
        except AccumulatorClosed:
            raise ClientClosedError("send_many() after close()") from None

    def available(self, topic: str) -> list[int]:
        """The topic's partitions that have a leader now (for a custom partitioner)."""
        routes = self.metadata.cache.partitions(topic) or ()
        return [route.partition for route in routes if route.leader is not None]

    async def partition_count(self, topic: str, timeout_ms: int) -> int:
        """Partitions of ``topic``, fetching metadata (and so auto-creating the topic)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            try:
                routes = await self.metadata.routes(topic)
            except RetriableError:
                if time.monotonic() >= deadline:
                    raise
                continue  # the metadata client backs off between attempts
            if routes:
                return len(routes)
            raise InvalidRequestError(f"unknown topic {topic}", code=ErrorCode.UNKNOWN_TOPIC)

    async def shutdown(self, timeout_s: float | None) -> None:
        """Send what is buffered (up to ``timeout_s``), fail the rest, close connections."""
        self.accumulator.close()
        if self.run_task is not None:
            self.sender.begin_close()
            try:
                await within(asyncio.shield(self.run_task), timeout_s)
            except TimeoutError:
                self.sender.abort()
                await self.run_task
        await self.sender.close_transport()
        await self.http.close()


class _Record(NamedTuple):
    """A converted record on its way into the accumulator (``_ProducerCore.append``)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int | None
    timestamp_ms: int | None


def check_max_in_flight(config: ProducerConfig) -> int:
    """The batches of one partition the producer may have in flight: the setting, refused
    above 5 with idempotence (the broker keeps 5 batches per producer to recognise a
    retry, as Kafka's); 1 for a transactional producer (its sender adds each partition to
    the transaction before the partition's first batch, one batch at a time)."""
    wanted = config.max_in_flight_requests_per_connection
    if wanted is None:
        wanted = MAX_IN_FLIGHT_DEFAULT if config.idempotent else 1
    if wanted < 1:
        raise ValueError("max_in_flight_requests_per_connection must be >= 1")
    if config.idempotent and wanted > IDEMPOTENT_IN_FLIGHT_MAX:
        raise ValueError(
            f"max_in_flight_requests_per_connection must be <= {IDEMPOTENT_IN_FLIGHT_MAX} with "
            "idempotence (the broker's dedup window), as Kafka requires"
        )
    return 1 if config.transactional_id is not None else wanted


def _config(
    url: str | None,
    acks: str | int,
    codec: Codec | str | int,
    **settings: Any,
) -> ProducerConfig:
    return ProducerConfig(
        url=default_url(url),
        acks=normalize_acks(acks),
        codec=normalize_codec(codec),
        **settings,
    )


class Producer:
    """Sends records to Conveyor from any number of threads; see docs/client.md.

    ``send`` returns at once with a :class:`RecordFuture`; records are batched per
    partition for up to ``linger_ms`` or ``batch_size`` bytes and sent by a background
    I/O thread, up to ``max_in_flight_requests_per_connection`` requests in flight per
    partition; with idempotence (the default with acks=all) per-key order holds through
    retries.
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
        """See docs/client.md for the settings; the last four are ``client/hooks.py``."""
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
        # the core first: a bad setting must not leave a loop thread behind
        self._core = core = _ProducerCore(config, self._wake_sender, hooks)
        self._hooked = hooks.any
        self._io = LoopThread("conveyor-producer-io")
        self._partition_counts = core.partition_counts
        self._accumulator_append = core.accumulator.append

        async def start() -> None:
            core.start()

        self._io.run(start())
        self._closed = False
        close_at_exit(self)

    @property
    def url(self) -> str:
        return self._core.config.url

    def _wake_sender(self) -> None:
        # At most once a batch (see append), under the accumulator's lock: the hop starts
        # the batch on the I/O loop, where send_ready may take that lock.
        self._io.call_soon(self._core.sender.send_ready)

    def send(
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
        """Queue one record; the future resolves to its :class:`RecordMetadata`.

        Blocks only to fetch a new topic's metadata or while the buffer is full, each at
        most ``max_block_ms``. Key and value: bytes, or str (sent as UTF-8), or None (or
        anything the serializers take). ``timestamp_ms``: the record's own time (default:
        now); ``on_delivery(error, metadata)``: called once it is acknowledged or failed.
        """
        if self._hooked or timestamp_ms is not None or on_delivery is not None:
            return self._send_hooked(
                topic, value, key, headers, partition, timestamp_ms, on_delivery
            )
        if value is not None and type(value) is not bytes:
            value = to_bytes(value)
        if key is not None and type(key) is not bytes:
            key = to_bytes(key)
        header_pairs = to_headers(headers) if headers else ()
        # The hot path goes straight to the accumulator (_ProducerCore.append is the same
        # with checks a known topic does not need): one Python call fewer per record.
        count = self._partition_counts.get(topic)
        if count is not None:
            try:
                return self._accumulator_append(
                    topic, key, value, header_pairs, partition, count, _time_ns() // 1_000_000
                )
            except (BufferFull, AccumulatorClosed):
                pass
        return self._append_slowly(topic, key, value, header_pairs, partition)

    def _send_hooked(  # noqa: PLR0917 -- send's own arguments
        self,
        topic: str,
        value: Any,
        key: Any,
        headers: HeadersArg,
        partition: int | None,
        timestamp_ms: int | None,
        on_delivery: DeliveryCallback | None,
    ) -> RecordFuture:
        hooks = self._core.hooks
        key_bytes, value_bytes = hooks.serialize(key, value)
        header_pairs = to_headers(headers) if headers else ()
        future = self._append_slowly(
            topic, key_bytes, value_bytes, header_pairs, partition, timestamp_ms
        )
        report_delivery(future, on_delivery or hooks.on_delivery)
        return future

    def _append_slowly(  # noqa: PLR0917 -- send's own arguments
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None,
        timestamp_ms: int | None = None,
    ) -> RecordFuture:
        """``send`` when the topic is new or the buffer is full: wait, at most
        ``max_block_ms`` in all, then append."""
        core = self._core
        deadline = time.monotonic() + core.config.max_block_ms / 1000
        while True:
            self._wait_until_ready(topic, deadline)
            try:
                return core.append(topic, key, value, headers, partition, timestamp_ms)
            except (MetadataNeeded, BufferFull):
                continue  # another thread took the room first, or metadata was dropped

    def _wait_until_ready(self, topic: str, deadline: float) -> None:
        """Wait for ``topic``'s metadata and for room in the buffer, until ``deadline``."""
        core = self._core
        if topic not in core.partition_counts:
            self._io.run(core.partition_count(topic, core.config.max_block_ms))
        with core.lock:
            while not core.accumulator.has_room and not core.closed:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise BufferFullError(
                        f"buffer_memory_bytes={core.config.buffer_memory_bytes} stayed "
                        f"full for max_block_ms={core.config.max_block_ms}"
                    )
                core.space.wait(remaining_s)

    def send_many(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> SendManyFuture:
        """Queue every value (with ``keys[i]`` as its key, if given) with no future or
        object per record; returns one :class:`SendManyFuture` for them all. Records go
        where ``send`` would put each (``partition``, else the key's partition, else
        sticky), in the order given per partition. Blocks as ``send`` does, for metadata
        and for buffer space (each wait at most ``max_block_ms``). No headers; the
        ``on_delivery`` hook is not called (add a callback to the future instead).
        Partial failure is per run of records in one batch: docs/client.md."""
        core = self._core
        many = prepare_many(core.hooks, topic, values, keys, partition, timestamp_ms)
        deadline = time.monotonic() + core.config.max_block_ms / 1000
        while not many.finished:
            self._wait_until_ready(topic, deadline)
            with contextlib.suppress(MetadataNeeded):
                start = many.next_index
                core.append_many(many)
                if many.next_index > start:  # progress: the wait for room starts again
                    deadline = time.monotonic() + core.config.max_block_ms / 1000
        return many.future()

    def flush(self, timeout: float | None = None) -> None:
        """Send every buffered record at once and wait until each is acknowledged or has
        failed (failures are reported by the records' futures, not raised here)."""
        core = self._core
        pending = core.accumulator.begin_flush()
        try:
            self._io.call_soon(core.sender.wake)
            deadline = None if timeout is None else time.monotonic() + timeout
            for completion in pending:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not completion.wait(remaining):
                    raise TimeoutError(f"flush did not finish within {timeout}s")
        finally:
            core.accumulator.end_flush()

    # ---- transactions (issue 21, docs/transactions.md) ----------------------------------

    def init_transactions(self) -> None:
        """Take the transactional id (fencing older producers with it); ``begin`` does it
        if not done before."""
        self._io.run(self._core.txn().init())

    def begin_transaction(self) -> None:
        txn = self._core.txn()
        self._io.run(txn.init())
        txn.begin()

    def send_offsets_to_transaction(
        self,
        offsets: Mapping[TopicPartition | tuple[str, int], int],
        group: ConsumerGroupMetadata | str,
    ) -> None:
        """Commit ``offsets`` (the next offset to read, per partition) for the group with
        the transaction: visible to the group only if it commits. ``group`` is the
        consumer's ``group_metadata()`` (KIP-447: a consumer the group has moved on from,
        a zombie, is refused with ILLEGAL_GENERATION, UNKNOWN_MEMBER, FENCED_INSTANCE_ID or
        FENCED_MEMBER, and the transaction can then only abort), or a bare group id
        (unfenced, as before KIP-447)."""
        wanted = {(tp[0], tp[1]): offset for tp, offset in offsets.items()}
        self._io.run(self._core.txn().send_offsets(wanted, group))

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Send every record of the transaction, then commit it (raises if one failed:
        abort then)."""
        txn = self._core.txn()
        self.flush(timeout)
        self._io.run(txn.end(commit=True))

    def abort_transaction(self, timeout: float | None = None) -> None:
        txn = self._core.txn()
        self.flush(timeout)  # what was sent is aborted with the rest
        self._io.run(txn.end(commit=False))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Producer]:
        """``with producer.transaction(): ...``: commits at the end, aborts on an exception."""
        self.begin_transaction()
        try:
            yield self
        except BaseException:
            self.abort_transaction()
            raise
        self.commit_transaction()

    def close(self, timeout: float | None = None) -> None:
        """Send what is buffered (waiting up to ``timeout`` s, None: delivery_timeout_ms),
        fail what could not be sent, stop the I/O thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        forget_at_exit(self)
        if timeout is None:
            timeout = self._core.config.delivery_timeout_ms / 1000
        try:
            self._io.run(self._core.shutdown(timeout))
        finally:
            self._io.stop()

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Producer {self.url} acks={self._core.config.acks}>"
