"""The producer's I/O: one asyncio task draining the accumulator into produce requests.

Runs on the sync ``Producer``'s private loop thread or on the ``AsyncProducer``'s loop.
One Kafka Produce request per leader carries every batch ready for it (``kafka_sender.py``:
v3-11, the highest the leader serves; up to ``max_request_size`` bytes), as Kafka's
producer sends: a drain hands out, with a broker's ready batch, the batches of its other
partitions still lingering (``Accumulator.drain``, Kafka's drain); each batch's task takes
its partition's turn, stamps and builds the batch and joins the request gathering for its
leader's connection, which is written once every batch the drains handed out has joined
a request or left (``_gather``, ``_left``). Each batch completes on its
partition's part of the broker's answer, or goes back to its place with exponential
backoff when the error is retriable, after asking the brokers where the leader went if
the error says leadership moved (a KIP-951 hint, v10+, moves the route at once). The
producer id and epoch come from InitProducerId (v0-4) to any broker, which asks the
coordinator; a transactional producer's come from its :class:`TransactionSession`
(``kafka_txn.py``), and its batches carry its ``transactional_id``.

In flight per partition (``max_in_flight``, Kafka's
``max.in.flight.requests.per.connection``): the accumulator hands out up to that many
batches of a partition, in order (``accumulator.py``). The order reaches the broker
because each partition's batches take turns (a FIFO lock, in drain order) from being
stamped with their sequence to being written on a connection; a broker appends one
connection's requests in the order written (``transport/kafka_server.py``). A batch is
written behind the ones in flight only on the same connection, under the same producer
identity, once a batch of the partition was acknowledged under it, and only if none
ahead was put back: else it is held (``Accumulator.hold``), to go once they are
answered (``inflight.py`` says why). A batch answered OUT_OF_ORDER_SEQUENCE while a
batch ahead is unanswered or put back is retried after it (Java's ``canRetry``); the
oldest batch answered so is data the broker lost, and fails. Transactional producers
keep one batch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from typing import Final, Literal

from conveyor.client import metrics as client_metrics
from conveyor.client.accumulator import Accumulator, Drained, ProducerBatch
from conveyor.client.errors import ClientClosedError, DeliveryTimeoutError, is_routing_error
from conveyor.client.futures import BatchCompletion, RecordFuture
from conveyor.client.inflight import after_error, may_write
from conveyor.client.kafka_metadata import KafkaMetadataClient
from conveyor.client.kafka_sender import (
    INIT_PRODUCER_ID_VERSIONS,
    KAFKA_ACKS,
    PRODUCE_VERSIONS,
    ProduceResults,
    partition_result,
    produce_answer,
    produce_requests,
)
from conveyor.client.transactions import TransactionSession
from conveyor.protocol.backoff import backoff_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.protocol.kafka.errors import conveyor_error
from conveyor.protocol.records import Codec
from conveyor.transport.kafka_client import KafkaConnection
from conveyor.transport.waits import wait_event

log = logging.getLogger(__name__)

AcksSetting = Literal["0", "1", "all"]
REQUEST_TIMEOUT_MARGIN_S: Final = 5.0  # the broker's own timeout_ms expires first
SEQUENCE_LIMIT: Final = 2**31  # sequences wrap to 0 after int32 max, as Kafka's
MAX_REQUEST_SIZE_DEFAULT: Final = 1024 * 1024  # Kafka's max.request.size


class _Request:
    """A Produce request gathering one broker's batches: (batch, payload, the partition's
    turn, the batch's answer) each, and their total size."""

    __slots__ = ("items", "size", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        self.items: list[Item] = []
        self.size = 0


class _Turn:
    """A partition's turn to be written, handed to its waiters in order (a FIFO lock whose
    ``try_take`` says without waiting whether it is free: a task about to wait leaves
    the count of tasks the gathered requests wait for, ``Sender._left``)."""

    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.held or self.waiters:
            return False
        self.held = True
        return True

    async def take(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over as the task was cancelled: pass it on
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # held stays True: the turn goes to this waiter
                return
        self.held = False


Item = tuple["ProducerBatch[BatchCompletion]", bytes, _Turn, "asyncio.Future[int]"]


def _release_turns(items: list[Item]) -> None:
    for _, _, turn, _ in items:
        turn.release()


def _hand_out(items: list[Item], results: ProduceResults | None, elapsed: float) -> None:
    """Give each batch its partition's part of the answer (None: acks=0, no answer, no
    offset)."""
    for batch, payload, _, future in items:
        if future.done():
            continue  # the batch's task was cancelled (the producer closed)
        if results is None:
            future.set_result(-1)
            continue
        try:
            base_offset = partition_result(results, batch.topic, batch.partition)
        except ConveyorError as exc:
            future.set_exception(exc)
        else:
            future.set_result(base_offset)
            client_metrics.batch_sent(batch.topic, batch.records_count, len(payload), elapsed)


def _fail(items: list[Item], exc: BaseException) -> None:
    """Hand a request's failure to each batch still waiting (a cancelled write: closed)."""
    if isinstance(exc, asyncio.CancelledError):
        exc = ClientClosedError("the producer was closed while sending")
    for *_, future in items:
        if not future.done():
            future.set_exception(exc)


def now_ms() -> int:
    """The producer's clock: wall-clock ms, which also stamps records (accumulator.py)."""
    return time.time_ns() // 1_000_000


class Sender:
    """Drains ``accumulator`` and sends its batches until :meth:`close` completes."""

    def __init__(
        self,
        *,
        accumulator: Accumulator[BatchCompletion, RecordFuture],
        metadata: KafkaMetadataClient,
        acks: AcksSetting,
        codec: Codec,
        request_timeout_ms: int,
        delivery_timeout_ms: int,
        retries: int,
        retry_backoff_ms: int,
        retry_backoff_max_ms: int,
        idempotent: bool = False,
        transaction: TransactionSession | None = None,
        max_request_size: int = MAX_REQUEST_SIZE_DEFAULT,
    ) -> None:
        # (max_in_flight is the accumulator's: it hands out the batches)
        self._acc = accumulator
        self.transaction = transaction  # a transactional producer's (client/transactions.py)
        self._metadata = metadata
        self._connections = metadata.connections  # the brokers' Kafka connections
        self._acks = acks
        self._kafka_acks = KAFKA_ACKS[acks]
        self._codec = codec
        self._request_timeout_ms = request_timeout_ms
        self._delivery_timeout_ms = delivery_timeout_ms
        self._retries = retries
        self._retry_backoff_ms = retry_backoff_ms
        self._retry_backoff_max_ms = retry_backoff_max_ms
        self._wake_event = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closing = False
        # Idempotence: the id the coordinator handed out (InitProducerId to any broker),
        # and the next sequence per partition. A batch gets its sequence when it is
        # built, once: retries resend the same bytes, so the leader recognises them.
        self._idempotent = idempotent
        self._producer_id = -1
        self._producer_epoch = -1
        self._sequences: dict[tuple[str, int], int] = {}
        self._bump_epoch = False  # a batch failed for good: its sequences left a gap
        self._init_lock = asyncio.Lock()
        self._generation = 0  # bumped with each new identity: sequences restart
        self._turns: dict[tuple[str, int], _Turn] = {}  # a partition's write order
        # the generation under which a batch of the partition was last acknowledged
        self._acked: dict[tuple[str, int], int] = {}
        # the Produce request gathering each broker's batches (_gather)
        self._gathering: dict[KafkaConnection, _Request] = {}
        self._unwritten: list[tuple[KafkaConnection, _Request]] = []  # gathered, in order
        # the batches of the drains so far whose tasks have not joined a request (nor
        # left: held, failed, or gone to wait for a turn or a metadata refresh); the
        # gathered requests are written once it is empty (_left)
        self._joining: set[ProducerBatch[BatchCompletion]] = set()
        self._max_request_size = max_request_size

    def _leader_of(self, topic: str, partition: int) -> str | None:
        return self._metadata.cache.leader_url(topic, partition)

    def wake(self) -> None:
        """Make the drain loop look again. Call on the sender's loop."""
        self._wake_event.set()

    def send_ready(self) -> None:
        """Start the batches ready now; wake the drain loop only if batches wait for a
        time (it sets its timer for them) or when closing. The sync producer's hop onto
        the loop and the end of each request call this rather than :meth:`wake`: at
        linger 0 a record leaves, and the partition's next batch follows an answer, one
        loop pass sooner, and the drain loop stays asleep (W3, docs/benchmarks.md "W3
        latency"). Call on the sender's loop, never under the accumulator's lock (``drain``
        takes it)."""
        drained = self._acc.drain(now_ms(), self._leader_of)
        self._start(drained)
        if drained.next_ms is not None or self._closing:
            self._wake_event.set()  # the drain loop sets its timer for them (or finishes)

    async def run(self) -> None:
        """The drain loop; returns when closing and every batch is done."""
        while True:
            self._wake_event.clear()
            drained = self._acc.drain(now_ms(), self._leader_of)
            finished = self._closing and self._acc.incomplete_count == 0
            self._start(drained)
            if finished:
                return
            timeout_s = None if drained.next_ms is None else max(0, drained.next_ms - now_ms())
            await wait_event(self._wake_event, None if timeout_s is None else timeout_s / 1000)

    def _start(self, drained: Drained[BatchCompletion]) -> None:
        for batch in drained.expired:
            if self._idempotent and batch.payload is not None:
                self._bump_epoch = True  # sent before: its sequences may never arrive
            batch.completion.fail(self._timeout_error(batch))
        self._joining.update(drained.ready)
        for batch in drained.ready:
            task = asyncio.create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    def begin_close(self) -> None:
        """Send everything buffered at once; :meth:`run` returns when all is done."""
        self._closing = True
        self._acc.close()
        self.wake()

    def abort(self) -> None:
        """Fail every batch that has not been sent and cancel the requests in flight."""
        aborted = self._acc.abort_all()
        for batch in aborted:
            batch.completion.fail(ClientClosedError("the producer was closed before sending"))
        for task in list(self._in_flight):
            task.cancel()

    async def _send(self, batch: ProducerBatch[BatchCompletion]) -> None:
        try:
            key = (batch.topic, batch.partition)
            turn = self._turns.get(key)
            if turn is None:
                turn = self._turns[key] = _Turn()
            if not turn.try_take():  # FIFO: the partition's batches are written in drain order
                self._left(batch)  # the batch ahead may be in a request not yet written
                await turn.take()
            try:
                answer = await self._write(batch, turn)
            except BaseException:
                turn.release()
                raise
            finally:
                self._left(batch)
            if answer is None:
                turn.release()
                return  # held: goes again once the batches ahead are answered
            # the request that carries the batch releases the turn once it is written
            base_offset = await answer
        except ConveyorError as exc:
            self._on_error(batch, exc)
        except Exception as exc:  # a bug or an unexpected reply: fail the batch, loudly
            log.exception("%s[%d]: unexpected error sending a batch", batch.topic, batch.partition)
            self._finish(batch, ConveyorError(f"unexpected error: {exc!r}"))
        except asyncio.CancelledError:
            self._finish(batch, ClientClosedError("the producer was closed while sending"))
            raise
        else:
            self._finish(batch, None, base_offset)
        finally:
            self.send_ready()  # the partition may send its next batch now

    def _left(self, batch: ProducerBatch[BatchCompletion]) -> None:
        """``batch``'s task joined a request or will not soon: once no task of the drains
        is still on its way, write the gathered requests (a batch that came late, after a
        turn or a refresh, finds none on its way and has its request written at once)."""
        self._joining.discard(batch)
        if not self._joining and self._unwritten:
            unwritten, self._unwritten = self._unwritten, []
            for connection, request in unwritten:
                task = asyncio.create_task(self._write_request(connection, request))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _producer_identity(self) -> tuple[int, int]:
        """The producer id and epoch, asked for once; a new epoch after a batch failed for
        good (sequences restart at 0 under it, so no gap blocks the partitions)."""
        async with self._init_lock:
            if self.transaction is not None:  # the transactional id's, fenced by init
                identity = await self.transaction.init()
                if identity != (self._producer_id, self._producer_epoch):
                    self._producer_id, self._producer_epoch = identity
                    self._sequences.clear()
                    self._generation += 1
                return identity
            if self._producer_id < 0 or self._bump_epoch:
                identity = await self._init_producer_id(self._producer_id, self._producer_epoch)
                self._producer_id, self._producer_epoch = identity
                self._sequences.clear()
                self._generation += 1
                self._bump_epoch = False
            return self._producer_id, self._producer_epoch

    async def _init_producer_id(self, producer_id: int, epoch: int) -> tuple[int, int]:
        """A new producer id, or the next epoch of ``producer_id`` (the coordinator's)."""
        connection = await self._metadata.any_connection()
        version = connection.version(ApiKey.INIT_PRODUCER_ID, *INIT_PRODUCER_ID_VERSIONS)
        fields: dict[str, object] = {"transactional_id": None, "transaction_timeout_ms": -1}
        if version >= 3:  # v3+ (KIP-360): bump the epoch of the id we hold
            fields |= {"producer_id": producer_id, "producer_epoch": epoch}
        request = new_request(ApiKey.INIT_PRODUCER_ID, version, **fields)
        reply = await connection.call(ApiKey.INIT_PRODUCER_ID, version, request)
        if reply.error_code:
            raise conveyor_error(reply.error_code, "InitProducerId")
        return reply.producer_id, reply.producer_epoch

    async def _stamp(self, batch: ProducerBatch[BatchCompletion]) -> None:
        producer_id, epoch = await self._producer_identity()
        if batch.builder is None:
            return
        key = (batch.topic, batch.partition)
        txn = self.transaction
        if txn is not None:
            await txn.add_partition(batch.topic, batch.partition)
        sequence = self._sequences.get(key, 0)
        batch.builder.set_producer(producer_id, epoch, sequence, transactional=txn is not None)
        self._sequences[key] = (sequence + batch.records_count) % SEQUENCE_LIMIT
        batch.sent_on = (self._generation, None)

    async def _write(
        self, batch: ProducerBatch[BatchCompletion], turn: _Turn
    ) -> asyncio.Future[int] | None:
        """Put ``batch`` (in the partition's ``turn``) in its broker's next Produce request
        and return the wait for its base offset; None when the batch was held (module
        docstring)."""
        if self._acc.ahead_in_flight(batch) is None:
            self._acc.hold(batch)  # unstamped: a batch ahead must take its sequence first
            return None
        if self._idempotent and batch.payload is None:
            await self._stamp(batch)
        if self._codec is Codec.NONE or batch.payload is not None:
            payload = batch.build()
        else:  # compression runs in C without the GIL: keep it off the loop
            payload = await asyncio.get_running_loop().run_in_executor(None, batch.build)
        leader_url = self._metadata.cache.leader_url(batch.topic, batch.partition)
        if leader_url is None:
            self._left(batch)  # the other batches need not wait for the refresh
            await self._metadata.refresh([batch.topic])
            leader_url = self._metadata.cache.leader_url(batch.topic, batch.partition)
            if leader_url is None:
                raise RetriableError(
                    f"{batch.topic}[{batch.partition}] has no leader",
                    code=ErrorCode.LEADER_NOT_AVAILABLE,
                )
        connection = await self._connections.get(leader_url)
        version = connection.version(ApiKey.PRODUCE, *PRODUCE_VERSIONS)
        generation = batch.sent_on[0] if isinstance(batch.sent_on, tuple) else 0
        # again, with no await from here to the write: the awaits above let answers in
        known = (
            not self._idempotent or self._acked.get((batch.topic, batch.partition)) == generation
        )
        if not may_write(
            self._acc.ahead_in_flight(batch), (generation, connection), producer_known=known
        ):
            self._acc.hold(batch)
            return None
        batch.sent_on = (generation, connection)
        return self._gather(connection, version, batch, payload, turn)

    def _gather(
        self,
        connection: KafkaConnection,
        version: int,
        batch: ProducerBatch[BatchCompletion],
        payload: bytes,
        turn: _Turn,
    ) -> asyncio.Future[int]:
        """Add ``batch`` to the Produce request gathering for ``connection`` and return the
        wait for the batch's base offset. The request is written (a task, one loop pass
        later) once every batch task of the drains so far has joined a request or left
        (:meth:`_left`): the batches one drain hands out share one request per broker,
        even when some compress in the executor. No await in here: ``turn`` passes to the
        request, which releases it once written."""
        request = self._gathering.get(connection)
        if request is None or (
            request.size + len(payload) > self._max_request_size and request.items
        ):
            request = self._gathering[connection] = _Request(version)
            self._unwritten.append((connection, request))
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        request.items.append((batch, payload, turn, answer))
        request.size += len(payload)
        return answer

    async def _write_request(self, connection: KafkaConnection, request: _Request) -> None:
        """Write ``request`` and hand each of its batches its answer."""
        if self._gathering.get(connection) is request:
            del self._gathering[connection]  # later batches gather the next request
        items = request.items
        txn = self.transaction
        body = produce_requests(
            request.version,
            [(batch.topic, batch.partition, payload) for batch, payload, _, _ in items],
            self._kafka_acks,
            self._request_timeout_ms,
            transactional_id=None if txn is None else txn.transactional_id,
        )
        try:
            try:
                if self._kafka_acks == 0:
                    await connection.send(ApiKey.PRODUCE, request.version, body)
                    answer = None
                else:
                    timeout_ms = self._request_timeout_ms + int(REQUEST_TIMEOUT_MARGIN_S * 1000)
                    answer = await connection.start_call(
                        ApiKey.PRODUCE,
                        request.version,
                        body,
                        timeout_ms=timeout_ms,
                        decode=produce_answer,
                    )
            finally:
                _release_turns(items)  # written (or not at all): the partitions go on
            if answer is None:
                _hand_out(items, None, 0.0)
                return
            started = time.monotonic()
            _hand_out(items, await answer, time.monotonic() - started)
        except BaseException as exc:
            _fail(items, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def close_transport(self) -> None:
        """Close the sender's own connections to the brokers."""
        await self._connections.close()

    def _on_error(self, batch: ProducerBatch[BatchCompletion], error: ConveyorError) -> None:
        batch.last_error = error
        routing = is_routing_error(error)
        outcome = after_error(
            error.code,
            retriable=error.retriable or routing,
            first_unanswered=self._acc.first_unanswered(batch),
        )
        if outcome == "stored":  # offsets unknown (inflight.py)
            self._finish(batch, None)
            return
        if outcome == "fail":
            log.warning("%s[%d]: batch failed: %s", batch.topic, batch.partition, error)
            self._finish(batch, error)
            return
        now = now_ms()
        delay_ms = backoff_ms(
            batch.attempts,
            base_ms=self._retry_backoff_ms,
            max_ms=self._retry_backoff_max_ms,
            draw=random.random(),
        )
        if batch.attempts >= self._retries or (
            now + delay_ms - batch.created_ms >= self._delivery_timeout_ms
        ):
            self._finish(batch, self._timeout_error(batch))
            return
        log.info(
            "%s[%d]: retry %d in %d ms: %s",
            batch.topic,
            batch.partition,
            batch.attempts + 1,
            delay_ms,
            error,
        )
        if routing:
            self._metadata.on_routing_error(batch.topic, batch.partition, error)
            if error.code is not ErrorCode.NOT_LEADER or "leader_url" not in error.details:
                self._refresh_soon(batch.topic)
        client_metrics.batch_retried(batch.topic, error.code.name)
        self._acc.retry(batch, now + delay_ms)

    def _refresh_soon(self, topic: str) -> None:
        version = self._metadata.cache.version

        async def refresh() -> None:
            # A failure is logged by the metadata client; the batch's retry asks again.
            with contextlib.suppress(ConveyorError):
                await self._metadata.refresh([topic], seen_version=version)

        task = asyncio.create_task(refresh())
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _finish(
        self,
        batch: ProducerBatch[BatchCompletion],
        error: ConveyorError | None,
        base_offset: int = -1,
    ) -> None:
        self._acc.complete(batch)
        if error is None and isinstance(batch.sent_on, tuple):
            self._acked[(batch.topic, batch.partition)] = batch.sent_on[0]
        if error is not None and self._idempotent and batch.payload is not None:
            self._bump_epoch = True  # this batch's sequences may never arrive
        if error is None:
            batch.completion.complete(base_offset)
        else:
            if self.transaction is not None:
                self.transaction.failed = error  # the transaction can only abort now
            batch.completion.fail(error)
            client_metrics.batch_failed(batch.topic, batch.records_count, error.code.name)

    def _timeout_error(self, batch: ProducerBatch[BatchCompletion]) -> ConveyorError:
        last = f"; last error: {batch.last_error}" if batch.last_error else ""
        return DeliveryTimeoutError(
            f"{batch.records_count} records for {batch.topic}[{batch.partition}] not "
            f"acknowledged after {batch.attempts + 1} attempts in "
            f"{self._delivery_timeout_ms} ms{last}"
        )
