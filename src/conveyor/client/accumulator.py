"""The producer's record accumulator: partitioning and per-partition batching, pure (no
I/O, no clock, no event loop), thread-safe through a lock the shell passes in.

Records are appended to the open batch of their partition; a batch is closed ("sealed")
when the next record would take it past ``batch_size_bytes``, or when it has lingered
``linger_ms``, or at once while a flush or close is under way.

In flight: ``drain`` hands the sender a partition's batches in order, up to
``max_in_flight`` of them unanswered at once (Kafka's
``max.in.flight.requests.per.connection``; 5 is the most an idempotent producer may use,
the broker's dedup window). Only full batches pipeline: while a partition has a batch in
flight, its open batch keeps filling instead of going when its linger ends (Nagle's
rule, for batches), and goes once the answers are in or it fills up. A producer faster
than a round trip keeps up to ``max_in_flight`` full batches on the way (throughput, W1);
a slower one sends a request per round trip carrying all that came meanwhile, not a
request per linger (the brokers' CPU, W4 latency). A flush or close sends at once.

A batch put back (``retry`` after a failure, or ``hold`` when the sender could not write
it behind the others) is marked *alone*: it is drained again only when nothing of its
partition is in flight, and nothing follows it until it is answered. So after a failure
the partition drains, then resends its batches one by one in their order before
pipelining again: a retried batch is never overtaken, and with ``max_in_flight=1`` this
is the old one-request-per-partition rule. Answers may complete batches out of order
(``complete`` takes any in-flight batch); the log's order is the broker's, which sequence
numbers keep (``sender.py``).

The partition: ``partition`` if given; else Kafka's key partitioner (murmur2) for a key;
else the sticky partition (KIP-480), which moves on round-robin whenever its batch is full
or already drained.

Hot path: ``append`` runs once per record at hundreds of thousands of records a second,
so it is one method doing the partition lookup, the size check and the builder call,
with the lock taken once; everything else happens once per batch. The record's size is
subtracted from the batch's ``room_bytes`` using an upper bound of its framing, so no
call into the builder is needed until that room runs out.

Time comes in as ``now_ms``: the wall-clock milliseconds the record is also stamped with
(one clock read per record, not two). A clock that jumps backwards makes a batch ready at
once rather than lingering for the size of the jump.

Every public method takes the lock; ``wake_sender`` and ``on_space`` are called under it
and must not block.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, Generic, NamedTuple, TypeVar

from conveyor.client.append_runs import AppendRuns
from conveyor.client.partitioner import KeyPartitioner, StickyPartitioner
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.fastrecords import (
    ENCODE_ERRORS,
    NO_HEADERS,
    PYTHON,
    Builder,
    CompiledBatchBuilder,
    record_lane,
    shared_counts,
)
from conveyor.protocol.records import Codec

C = TypeVar("C")  # what a batch's records share to learn the outcome (BatchCompletion)
F = TypeVar("F")  # what append returns per record (RecordFuture)

RECORD_OVERHEAD_BYTES: Final = 32
"""Upper bound of a record's framing: six varints of at most 5 bytes, and a byte."""

HeaderPairs = Sequence[tuple[str, bytes | None]]
NodeOf = Callable[[str, int], object]  # a partition's leader (any value that compares)


class BufferFull(Exception):  # noqa: N818 -- a signal to the shell, not an error for users
    """A new batch is needed but ``buffer_memory_bytes`` of batches are already waiting."""


class AccumulatorClosed(Exception):  # noqa: N818 -- a signal to the shell
    """``append`` after ``close``."""


class ProducerBatch(Generic[C]):
    """One batch of one partition, from its first record until it is acknowledged."""

    __slots__ = (
        "alone",
        "append",
        "attempts",
        "builder",
        "completion",
        "created_ms",
        "in_flight",
        "lane",
        "last_error",
        "partition",
        "payload",
        "records_count",
        "retry_at_ms",
        "room_bytes",
        "sent_on",
        "size_bytes",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        builder: Builder,
        completion: C,
        *,
        now_ms: int,
        room_bytes: int,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.builder: Builder | None = builder
        self.append = builder.append  # bound once: saves two lookups per record
        # the compiled builder's record lane, once its first record is in (append's fast path)
        self.lane: CompiledBatchBuilder | None = None
        self.room_bytes = room_bytes  # a lower bound of what still fits (module docstring)
        self.completion = completion
        self.created_ms = now_ms
        self.attempts = 0  # produce requests that failed and were retried
        self.retry_at_ms = 0
        self.records_count = 0  # set at seal
        self.size_bytes = 0  # set at seal
        self.payload: bytes | None = None
        self.last_error: Exception | None = None  # why the last attempt failed, for reports
        self.in_flight = False  # drained and not yet completed, retried or held
        self.alone = False  # put back: goes again only with nothing else in flight
        self.sent_on: object = None  # the sender's note of where it was written

    def build(self) -> bytes:
        """The encoded batch, built once (retries resend the same bytes) and the builder's
        record pieces released, so a batch is held in memory once, not twice."""
        if self.payload is None:
            assert self.builder is not None, "a batch is built only after it is sealed"
            self.payload = self.builder.build()
            # every reference to the builder goes: its bound append and lane hold it too
            self.builder = self.lane = None
            del self.append  # a sealed batch takes no more records
        return self.payload

    def __repr__(self) -> str:
        return f"<ProducerBatch {self.topic}[{self.partition}] {self.records_count} records>"


def _headers_size(headers: HeaderPairs) -> int:
    """Upper bound of the encoded headers (UTF-8 takes at most 4 bytes a character)."""
    return sum(4 * len(name) + len(value or b"") + 10 for name, value in headers)


_NOTHING_OPEN: Final = ()  # a topic without open batches, as ``Accumulator._open`` reads it

APPEND_MANY_CHUNK: Final = 4096
"""Records ``append_many`` appends per lock hold: the sender's drain waits at most this."""


class _PartitionQueue(Generic[C]):
    __slots__ = ("in_flight", "open", "sealed")

    def __init__(self) -> None:
        self.sealed: deque[ProducerBatch[C]] = deque()  # in order; the in-flight ones too
        self.open: ProducerBatch[C] | None = None
        self.in_flight = 0  # batches of ``sealed`` in flight


class Drained(NamedTuple, Generic[C]):
    ready: list[ProducerBatch[C]]
    """Batches to send now, in order per partition, each now counted as in flight."""
    expired: list[ProducerBatch[C]]
    """Batches older than ``delivery_timeout_ms``: removed, the shell fails them."""
    next_ms: int | None
    """When a lingering or backing-off batch becomes ready (None: nothing waits)."""


class Accumulator(Generic[C, F]):
    """See the module docstring.

    ``new_completion(topic, partition)`` makes the object a batch's records share;
    ``new_future(completion, index)`` what ``append`` returns for a record;
    ``wake_sender()`` is called when a batch opens (at most once per ``drain``), so the
    sender can time its linger; ``on_space()`` when batches leave the buffer.
    """

    def __init__(
        self,
        *,
        batch_size_bytes: int,
        linger_ms: int,
        buffer_memory_bytes: int,
        delivery_timeout_ms: int,
        codec: Codec,
        lock: threading.Lock,
        new_completion: Callable[[str, int], C],
        new_future: Callable[[C, int], F],
        wake_sender: Callable[[], None],
        on_space: Callable[[], None],
        sticky_start: int = 0,
        new_builder: Callable[[Codec], Builder] = PYTHON.new_builder,
        max_in_flight: int = 1,
    ) -> None:
        if batch_size_bytes <= 0 or linger_ms < 0 or buffer_memory_bytes < batch_size_bytes:
            raise ValueError("need batch_size > 0, linger_ms >= 0, buffer_memory >= batch_size")
        if max_in_flight < 1:
            raise ValueError("need max_in_flight >= 1")
        self._max_in_flight = max_in_flight
        self._batch_size_bytes = batch_size_bytes
        self._linger_ms = linger_ms
        self._buffer_memory_bytes = buffer_memory_bytes
        self._delivery_timeout_ms = delivery_timeout_ms
        self._codec = codec
        self._new_builder = new_builder  # the record codec's (client/recordcodec.py)
        self._lock = lock
        self._acquire = lock.acquire
        self._release = lock.release
        self._new_completion = new_completion
        self._new_future = new_future
        self._wake_sender = wake_sender
        self._on_space = on_space
        self._counts = shared_counts()  # the lane's record counts (fastrecords.py)
        self._keys = KeyPartitioner()
        self._sticky = StickyPartitioner(sticky_start)
        self._queues: dict[tuple[str, int], _PartitionQueue[C]] = {}
        # the queues' open batches by topic, then partition (None: none open): one dict
        # lookup by a str and a list index on the hot path, not a tuple made and hashed
        self._open: dict[str, list[ProducerBatch[C] | None]] = {}
        self._incomplete: set[ProducerBatch[C]] = set()
        self._sealed_bytes = 0
        self._flushes = 0
        self._closing = False
        self._wake_pending = False

    # --- appending (the hot path) ----------------------------------------------------------

    def append(  # noqa: PLR0912, PLR0917 -- the hot path, kept flat; positional arguments
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: HeaderPairs,
        partition: int | None,
        partition_count: int,
        now_ms: int,
        timestamp_ms: int | None = None,
    ) -> F:
        """Append one record to its partition's batch and return its future. The record
        is stamped ``timestamp_ms`` (the producer's, Kafka's CreateTime), else ``now_ms``.

        Raises :class:`BufferFull` (nothing appended) when a new batch is needed and the
        buffer is full, :class:`AccumulatorClosed` after :meth:`close`.
        """
        # acquire/release rather than ``with``: half the cost, measured, on this path
        self._acquire()
        try:
            stamp = now_ms if timestamp_ms is None else timestamp_ms
            if partition is None:
                if key is None:
                    return self._append_sticky(
                        topic, value, headers, partition_count, now_ms, stamp
                    )
                # KeyPartitioner.partition inlined for the common case (a cached key)
                keys = self._keys
                partition = keys.last.get(key) if partition_count == keys.last_count else None
                if partition is None:
                    partition = keys.partition(key, partition_count)
            elif not 0 <= partition < partition_count:
                raise InvalidRequestError(
                    f"{topic} has partitions 0..{partition_count - 1}, not {partition}",
                    code=ErrorCode.UNKNOWN_PARTITION,
                )
            try:
                batch = self._open.get(topic, _NOTHING_OPEN)[partition]
            except IndexError:  # a partition past the last one a batch was opened for
                batch = None
            if batch is not None:
                size = RECORD_OVERHEAD_BYTES
                if value is not None:
                    size += len(value)
                if key is not None:
                    size += len(key)
                if headers:
                    size += _headers_size(headers)
                if size <= batch.room_bytes:
                    batch.room_bytes -= size
                    lane = batch.lane
                    if lane is None:
                        return self._new_future(
                            batch.completion, batch.append(value, key, headers, stamp)
                        )
                    # CompiledBatchBuilder.append inlined: its record lane (fastrecords.py)
                    index = lane.records_count
                    pairs = list(headers) if headers else NO_HEADERS
                    try:
                        lane.encode(index, stamp, key, value, pairs)
                    except ENCODE_ERRORS as exc:
                        raise InvalidRequestError(f"record cannot be encoded: {exc}") from exc
                    try:
                        lane.records_count = self._counts[index + 1]
                    except IndexError:  # past the shared ints: free of cost until then
                        lane.records_count = index + 1
                    if stamp > lane.max_timestamp_ms:  # noqa: PLR1730 -- max() is a call
                        lane.max_timestamp_ms = stamp
                    return self._new_future(batch.completion, index)
            appended = self._append_slow(topic, partition, key, value, headers, now_ms, True, stamp)
            assert appended is not None
            return self._new_future(appended[0].completion, appended[1])
        finally:
            self._release()

    def _append_sticky(  # noqa: PLR0917 -- the hot path
        self,
        topic: str,
        value: bytes | None,
        headers: HeaderPairs,
        count: int,
        now_ms: int,
        stamp: int,
    ) -> F:
        partition = self._sticky.partition(topic, count)
        appended = self._append_slow(topic, partition, None, value, headers, now_ms, False, stamp)
        if appended is None:  # that batch is full or drained: stick to the next partition
            partition = self._sticky.next(topic, count, partition)
            appended = self._append_slow(
                topic, partition, None, value, headers, now_ms, True, stamp
            )
        assert appended is not None
        return self._new_future(appended[0].completion, appended[1])

    def _append_slow(  # noqa: PLR0917 -- mirrors append
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: HeaderPairs,
        now_ms: int,
        new_batch_allowed: bool,
        stamp: int,
    ) -> tuple[ProducerBatch[C], int] | None:
        """Append where the fast path could not: the room estimate ran out, or there is
        no open batch. Returns the batch and the record's index in it; None when a new
        batch is needed and not allowed (sticky)."""
        if self._closing:
            raise AccumulatorClosed
        queue = self._queues.get((topic, partition))
        if queue is None:
            queue = self._queues[(topic, partition)] = _PartitionQueue()
        size = RECORD_OVERHEAD_BYTES + len(value or b"") + len(key or b"")
        size += _headers_size(headers) if headers else 0
        batch = queue.open
        if batch is not None:
            assert batch.builder is not None
            batch.room_bytes = self._batch_size_bytes - batch.builder.size_bytes_estimate
            if size <= batch.room_bytes:  # the estimate was too cautious: it fits
                batch.room_bytes -= size
                return batch, batch.append(value, key, headers, stamp)
            self._seal(queue)  # full: the record does not fit
        if not new_batch_allowed:
            return None
        if self._sealed_bytes >= self._buffer_memory_bytes:
            raise BufferFull
        builder = self._new_builder(self._codec)
        batch = ProducerBatch(
            topic,
            partition,
            builder,
            self._new_completion(topic, partition),
            now_ms=now_ms,
            room_bytes=self._batch_size_bytes - builder.size_bytes_estimate - size,
        )
        queue.open = batch
        opens = self._open.setdefault(topic, [])
        if len(opens) <= partition:
            opens += [None] * (partition + 1 - len(opens))
        opens[partition] = batch
        self._incomplete.add(batch)
        if not self._wake_pending:
            self._wake_pending = True
            self._wake_sender()
        # A record larger than batch_size still goes, alone in its batch (as in Kafka).
        index = builder.append(value, key, headers, stamp)
        batch.lane = record_lane(builder)
        return batch, index

    def append_many(  # noqa: PLR0912, PLR0915, PLR0917 -- the batch API's hot loop, kept flat
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        partitions: Sequence[int] | int | None,
        partition_count: int,
        now_ms: int,
        start: int,
        runs: AppendRuns[C],
        timestamp_ms: int | None = None,
        *,
        chunk_records: int = APPEND_MANY_CHUNK,
    ) -> int:
        """Append records ``start:`` of ``values`` (with ``keys``; no headers) as ``append``
        would each, without a future per record; returns the index after the last one
        appended. It stops after ``chunk_records`` records, so that the lock is not
        held long, and early when a new batch is needed and the buffer is full (the
        shell waits for room and calls again from the returned index).

        ``partitions``: one partition for all, or one per record (the shell checks their
        range first), or None (the key's, or sticky without keys). Where the records went
        is added to ``runs`` (``append_runs.py``): per batch touched, its completion, the
        index in it of the run's first record, and the count; records of one chunk are
        contiguous in their batch, since the lock is held while appending them, and a run
        goes on across chunks only when no other record came between.
        """
        end = min(len(values), start + chunk_records)
        stamp = now_ms if timestamp_ms is None else timestamp_ms
        fixed = partitions if isinstance(partitions, int) else None
        per_record = None if isinstance(partitions, int) else partitions
        if fixed is not None and not 0 <= fixed < partition_count:
            raise InvalidRequestError(
                f"{topic} has partitions 0..{partition_count - 1}, not {fixed}",
                code=ErrorCode.UNKNOWN_PARTITION,
            )
        key_partition = self._keys.partition
        no_keys: dict[bytes, int] = {}
        key_cache: Callable[[bytes], int | None] = (
            self._keys.last.get if self._keys.last_count == partition_count else no_keys.get
        )
        current: dict[int, ProducerBatch[C]] = {}  # valid while the lock is held
        counts = self._counts
        index = start
        self._acquire()
        try:
            if self._closing:
                raise AccumulatorClosed
            for index in range(start, end):
                value = values[index]
                key = None if keys is None else keys[index]
                if fixed is not None:
                    partition = fixed
                elif per_record is not None:
                    partition = per_record[index]
                elif key is not None:
                    cached = key_cache(key)  # KeyPartitioner.partition, inlined
                    if cached is None:
                        partition = key_partition(key, partition_count)
                        key_cache = self._keys.last.get
                    else:
                        partition = cached
                else:
                    partition = self._sticky.partition(topic, partition_count)
                batch = current.get(partition)
                size = RECORD_OVERHEAD_BYTES
                if value is not None:
                    size += len(value)
                if key is not None:
                    size += len(key)
                if batch is not None and size <= batch.room_bytes:
                    batch.room_bytes -= size
                    lane = batch.lane
                    if lane is None:
                        batch.append(value, key, (), stamp)
                        continue
                    # the record lane, as in append (CompiledBatchBuilder.append inlined)
                    at = lane.records_count
                    try:
                        lane.encode(at, stamp, key, value, NO_HEADERS)
                    except ENCODE_ERRORS as exc:
                        raise InvalidRequestError(f"record cannot be encoded: {exc}") from exc
                    try:
                        lane.records_count = counts[at + 1]
                    except IndexError:  # past the shared ints
                        lane.records_count = at + 1
                    if stamp > lane.max_timestamp_ms:  # noqa: PLR1730 -- max() is a call
                        lane.max_timestamp_ms = stamp
                    continue
                appended = self._append_many_slow(
                    topic,
                    partition,
                    partition_count,
                    key,
                    value,
                    now_ms,
                    stamp,
                    key is None and fixed is None and per_record is None,
                )
                if appended is None:
                    break  # BufferFull: the caller waits for room, then goes on from index
                batch, position = appended
                current[batch.partition] = batch
                runs.begin(batch, position)
            else:
                index = end
        finally:
            runs.end_chunk()
            self._release()
        return index

    def _append_many_slow(  # noqa: PLR0917 -- append_many's record
        self,
        topic: str,
        partition: int,
        partition_count: int,
        key: bytes | None,
        value: bytes | None,
        now_ms: int,
        stamp: int,
        sticky: bool,
    ) -> tuple[ProducerBatch[C], int] | None:
        """``append_many``'s first record to a batch; None when the buffer is full."""
        try:
            appended = self._append_slow(
                topic, partition, key, value, (), now_ms, not sticky, stamp
            )
            if appended is None:  # sticky, as in _append_sticky
                partition = self._sticky.next(topic, partition_count, partition)
                appended = self._append_slow(topic, partition, key, value, (), now_ms, True, stamp)
        except BufferFull:
            return None
        return appended

    def _seal(self, queue: _PartitionQueue[C]) -> None:
        batch = queue.open
        assert batch is not None and batch.builder is not None
        queue.open = None
        self._open[batch.topic][batch.partition] = None
        batch.records_count = batch.builder.records_count
        batch.size_bytes = batch.builder.size_bytes_estimate
        queue.sealed.append(batch)
        self._sealed_bytes += batch.size_bytes

    # --- the sender's side -----------------------------------------------------------------

    def drain(self, now_ms: int, node_of: NodeOf | None = None) -> Drained[C]:
        """Batches ready to send (see :class:`Drained`). Call after every wake-up.

        With ``node_of`` (a partition's leader), Kafka's drain: a broker that has a ready
        batch also takes every other partition's batch it leads that is still lingering,
        so one request carries them all (``sender.py``) rather than each partition
        sending its own when its linger ends."""
        ready: list[ProducerBatch[C]] = []
        expired: list[ProducerBatch[C]] = []
        next_ms: int | None = None
        lingering: list[tuple[tuple[str, int], _PartitionQueue[C]]] = []
        with self._lock:
            self._wake_pending = False
            hurry = self._flushes > 0 or self._closing
            for key, queue in self._queues.items():
                if queue.in_flight >= self._max_in_flight or (
                    queue.open is None and not queue.sealed
                ):
                    continue  # full, or nothing to send (nor to expire)
                if not queue.in_flight:  # never a batch in flight, nor one behind it
                    expired += self._expire(queue, now_ms)
                wait_ms = self._drain_queue(queue, now_ms, hurry, ready)
                if wait_ms is not None:
                    next_ms = wait_ms if next_ms is None else min(next_ms, wait_ms)
                    batch = queue.open
                    if (
                        node_of is not None
                        and batch is not None
                        and wait_ms == batch.created_ms + self._linger_ms
                    ):
                        lingering.append((key, queue))
            if ready and lingering:
                assert node_of is not None  # only then are lingering queues listed
                nodes = {node_of(batch.topic, batch.partition) for batch in ready}
                for (topic, partition), queue in lingering:
                    if node_of(topic, partition) in nodes:
                        self._drain_queue(queue, now_ms, True, ready)
            if expired:
                self._on_space()
        return Drained(ready, expired, next_ms)

    def _drain_queue(  # noqa: PLR0911 -- a return per reason the queue stops
        self, queue: _PartitionQueue[C], now_ms: int, hurry: bool, ready: list[ProducerBatch[C]]
    ) -> int | None:
        """Move the queue's sendable batches to ``ready`` (module docstring); returns when
        a lingering or backing-off batch of it becomes ready."""
        index = 0
        while queue.in_flight < self._max_in_flight:
            if index == len(queue.sealed):
                batch = queue.open
                if batch is None:
                    return None
                if queue.in_flight and not hurry:
                    return None  # still filling: it waits for the answers (they drain again)
                ready_ms = batch.created_ms + self._linger_ms
                if not (hurry or now_ms >= ready_ms or now_ms < batch.created_ms):
                    return ready_ms
                self._seal(queue)
            batch = queue.sealed[index]
            index += 1
            if batch.in_flight:
                continue
            if batch.alone and queue.in_flight:
                return None  # a completion drains again
            if batch.retry_at_ms > now_ms:
                return batch.retry_at_ms
            batch.in_flight = True
            queue.in_flight += 1
            ready.append(batch)
            if batch.alone:
                batch.alone = False
                return None  # nothing follows it until it is answered
        return None

    def _expire(self, queue: _PartitionQueue[C], now_ms: int) -> list[ProducerBatch[C]]:
        """Remove the queue's batches older than delivery_timeout_ms (called only with
        none of the queue's batches in flight)."""
        expired: list[ProducerBatch[C]] = []
        deadline_ms = now_ms - self._delivery_timeout_ms
        while queue.sealed and queue.sealed[0].created_ms <= deadline_ms:
            expired.append(self._remove(queue, queue.sealed[0]))
        if not queue.sealed and queue.open is not None and queue.open.created_ms <= deadline_ms:
            self._seal(queue)
            expired.append(self._remove(queue, queue.sealed[0]))
        return expired

    def _remove(self, queue: _PartitionQueue[C], batch: ProducerBatch[C]) -> ProducerBatch[C]:
        if queue.sealed[0] is batch:
            queue.sealed.popleft()
        else:  # answered before a batch ahead of it, which was put back
            queue.sealed.remove(batch)
        self._sealed_bytes -= batch.size_bytes
        self._incomplete.discard(batch)
        return batch

    def _in_flight_queue(self, batch: ProducerBatch[C]) -> _PartitionQueue[C]:
        queue = self._queues[(batch.topic, batch.partition)]
        assert batch.in_flight and queue.in_flight > 0, "not in flight"
        batch.in_flight = False
        queue.in_flight -= 1
        return queue

    def complete(self, batch: ProducerBatch[C]) -> None:
        """The in-flight ``batch`` is done (acknowledged or failed for good): forget it."""
        with self._lock:
            self._remove(self._in_flight_queue(batch), batch)
            self._on_space()

    def retry(self, batch: ProducerBatch[C], retry_at_ms: int) -> None:
        """Put the in-flight ``batch`` back in its place, to be drained again at
        ``retry_at_ms`` once nothing of its partition is in flight."""
        with self._lock:
            self._in_flight_queue(batch)
            batch.alone = True
            batch.retry_at_ms = retry_at_ms
            batch.attempts += 1

    def hold(self, batch: ProducerBatch[C]) -> None:
        """Put the in-flight ``batch`` back unsent (the sender could not write it behind
        the batches ahead of it): drained again once nothing of its partition is in
        flight, with no attempt counted."""
        with self._lock:
            self._in_flight_queue(batch)
            batch.alone = True

    def first_unanswered(self, batch: ProducerBatch[C]) -> bool:
        """Whether ``batch`` is the oldest batch of its partition not yet done (nothing
        ahead of it waits for an answer or a resend)."""
        with self._lock:
            queue = self._queues[(batch.topic, batch.partition)]
            return bool(queue.sealed) and queue.sealed[0] is batch

    def ahead_in_flight(self, batch: ProducerBatch[C]) -> list[ProducerBatch[C]] | None:
        """The batches ahead of ``batch`` in its partition (all in flight), or None when
        one of them is not in flight (put back): then ``batch`` must not be written."""
        with self._lock:
            ahead: list[ProducerBatch[C]] = []
            for other in self._queues[(batch.topic, batch.partition)].sealed:
                if other is batch:
                    return ahead
                if not other.in_flight:
                    return None
                ahead.append(other)
            raise AssertionError(f"{batch!r} is not queued")

    def abort_all(self) -> list[ProducerBatch[C]]:
        """Remove every batch not in flight (a forced close): the shell fails them."""
        aborted: list[ProducerBatch[C]] = []
        with self._lock:
            for queue in self._queues.values():
                if queue.open is not None:
                    self._seal(queue)
                for batch in [b for b in queue.sealed if not b.in_flight]:
                    aborted.append(self._remove(queue, batch))
            self._on_space()
        return aborted

    # --- flush, close, accounting ----------------------------------------------------------

    def begin_flush(self) -> list[C]:
        """Make every batch ready regardless of linger until ``end_flush``; returns the
        completions of all batches not yet done, which the flushing caller waits for."""
        with self._lock:
            self._flushes += 1
            return [batch.completion for batch in self._incomplete]

    def end_flush(self) -> None:
        with self._lock:
            assert self._flushes > 0
            self._flushes -= 1

    def close(self) -> None:
        """Refuse new records; from now on every batch is ready at once."""
        with self._lock:
            self._closing = True
            self._on_space()  # senders blocked on a full buffer must see the close

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def incomplete_count(self) -> int:
        """Batches appended to and not yet done (open, waiting, or in flight)."""
        return len(self._incomplete)

    def in_flight_count(self, topic: str, partition: int) -> int:
        """Batches of the partition sent and not yet answered."""
        with self._lock:
            queue = self._queues.get((topic, partition))
            return 0 if queue is None else queue.in_flight

    @property
    def buffered_bytes(self) -> int:
        """Bytes of sealed batches not yet done: what ``buffer_memory_bytes`` limits."""
        return self._sealed_bytes

    @property
    def has_room(self) -> bool:
        return self._sealed_bytes < self._buffer_memory_bytes
