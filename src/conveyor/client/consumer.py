"""``Consumer``: the thread-facing consumer (its asyncio twin is ``async_consumer.py``).

Both are thin faces over :class:`ConsumerCore` (``consumer_core.py``, where the semantics
are written down); this one runs the core's I/O on a private loop thread and blocks where
the async one awaits. Kafka's Python clients' names where they fit: ``subscribe``,
``assign``, ``pause``/``resume``, ``commit(offsets, asynchronous)``, ``committed``,
``beginning_offsets``/``end_offsets``, ``offsets_for_times``, ``seek_to_beginning``/
``seek_to_end``, rebalance callbacks ``on_assign``/``on_revoke``/``on_lost``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TypeVar

from conveyor.client.consumer_core import (
    Callbacks,
    ConsumerConfig,
    ConsumerCore,
    Delivery,
    Isolation,
    OffsetsArg,
    PartitionsArg,
    RebalanceCallback,
    make_config,
)
from conveyor.client.fetcher import OffsetReset
from conveyor.client.loop import LoopThread, close_at_exit, forget_at_exit
from conveyor.client.offsets import OffsetAndTimestamp
from conveyor.client.subscription import partitions_of, subscription
from conveyor.client.transport_choice import data_transport
from conveyor.client.types import ConsumerGroupMetadata, Message, PolledBatch, TopicPartition
from conveyor.transport.credentials import authorization_header
from conveyor.transport.tls import TLSConfig

log = logging.getLogger(__name__)

Taken = TypeVar("Taken", list[Message], PolledBatch)

__all__ = ["Consumer", "ConsumerConfig"]


class Consumer:
    """Reads ``topics`` (or ``pattern``) as a member of consumer group ``group_id`` (its
    share of the partitions, docs/consumer-groups.md), or without a group every partition
    of them, or the partitions given to :meth:`assign`; see docs/client.md. Not
    thread-safe except :meth:`stop`, like Kafka's consumer: use it from one thread."""

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
        self._core = core = ConsumerCore(config, Callbacks(on_assign, on_revoke, on_lost))
        self._io = LoopThread("conveyor-consumer-io")
        core.buffer.on_space = lambda: self._io.call_soon(core.fetcher.space_freed)

        async def start() -> None:
            core.start()

        self._io.run(start())
        close_at_exit(self)

    @property
    def url(self) -> str:
        return self._core.config.url

    @property
    def group_id(self) -> str | None:
        return self._core.config.group_id

    @property
    def group(self) -> str | None:
        """Deprecated: :attr:`group_id`."""
        return self._core.config.group_id

    @property
    def member_id(self) -> str | None:
        """This member's id in its group (``group_id`` consumers), None while it is not a
        member. A new id means the member was dropped (fenced, or its session lost) and
        joined again: its partitions restart from the committed offsets."""
        membership = self._core.membership
        return None if membership is None else membership.member_id

    # ---- what to read ----------------------------------------------------------------------

    def subscribe(
        self,
        topics: str | Iterable[str] | None = None,
        *,
        pattern: str | None = None,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Read ``topics`` (or every topic whose whole name matches ``pattern``) from now
        on, replacing the previous subscription; with a ``group_id``, as a member of the
        group. The callbacks, when given, replace the constructor's."""
        wanted = subscription(topics, pattern)
        callbacks = None
        if on_assign or on_revoke or on_lost:
            callbacks = Callbacks(on_assign, on_revoke, on_lost)
        self._io.run(self._core.subscribe(wanted, callbacks))

    def unsubscribe(self) -> None:
        """Stop reading: leave the group (committing first with auto-commit), drop the
        subscription or the assignment."""
        self._io.run(self._core.unsubscribe())

    def assign(self, partitions: PartitionsArg) -> None:
        """Read exactly these partitions, without group membership: ``(topic, partition)``
        pairs or :class:`TopicPartition`, or ``(topic, partition, offset)`` to start at
        ``offset`` (else the group's committed offset, else ``auto_offset_reset``)."""
        self._io.run(self._core.assign(partitions))

    def assignment(self) -> list[TopicPartition]:
        return self._core.buffer.assignment()

    def pause(self, partitions: PartitionsArg) -> None:
        """Stop fetching these partitions and returning their messages until resumed."""
        self._core.buffer.pause(partitions_of(partitions)[0])

    def resume(self, partitions: PartitionsArg) -> None:
        core = self._core
        core.buffer.resume(partitions_of(partitions)[0])
        self._io.call_soon(core.fetcher.resumed)

    def paused(self) -> list[TopicPartition]:
        return self._core.buffer.paused()

    # ---- reading ---------------------------------------------------------------------------

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Message]:
        """Messages available now, or within ``timeout`` seconds (else an empty list).
        Rebalance callbacks run here, on this thread, before messages are taken."""
        return self._poll(timeout, max_records, self._core.buffer.take, [])

    def poll_batch(
        self, timeout: float = 1.0, max_records: int | None = None, *, headers: bool = False
    ) -> PolledBatch:
        """:meth:`poll` as columns: one :class:`PolledBatch` (offsets, keys, values,
        timestamps, and headers if asked, with the partition of each run of rows) and
        no object per record. Positions, commits and callbacks as with ``poll``."""

        def take(limit: int) -> PolledBatch:
            return self._core.buffer.take_batch(limit, headers=headers)

        return self._poll(timeout, max_records, take, PolledBatch())

    def _poll(
        self, timeout: float, max_records: int | None, take: Callable[[int], Taken], empty: Taken
    ) -> Taken:
        core = self._core
        core.check_open()
        if core.auto_commit_due():
            self._io.run(core.auto_commit())
        limit = max_records or core.config.max_poll_records
        deadline = time.monotonic() + timeout
        while True:
            self._rebalance()
            taken = take(limit)
            if (
                taken
                and core.config.delivery == "at-most-once"
                and not self._io.run(core.commit_taken(len(taken)))
            ):
                taken = empty
            remaining_s = deadline - time.monotonic()
            if taken or remaining_s <= 0 or core.stopping:
                return taken
            core.buffer.wait_for_data(min(remaining_s, 0.1))

    def _rebalance(self) -> None:
        core = self._core
        if core.poll_started():
            revoked = core.revoking()
            if revoked and core.callbacks.on_revoke is not None:
                core.callbacks.on_revoke(sorted(revoked))
            self._io.run(core.before_poll(revoked))
        for callback, partitions in core.take_events():
            callback(partitions)

    def group_metadata(self) -> ConsumerGroupMetadata:
        """This member's group id, generation, member id and instance id now (Kafka's
        ``groupMetadata()``), for ``producer.send_offsets_to_transaction(offsets,
        consumer.group_metadata())``: the coordinator then refuses the offsets once the
        group has moved on from this member (KIP-447, docs/transactions.md). Take it
        after the ``poll`` whose records the transaction processed."""
        core = self._core

        async def read() -> ConsumerGroupMetadata:
            return core.group_metadata()

        return self._io.run(read())

    def caught_up(self) -> bool:
        """True when, as of the latest fetches, nothing is waiting to be polled."""
        return self._core.fetcher.ready and self._core.buffer.caught_up()

    def assignment_settled(self) -> bool:
        """A group member: joined, and no partition of its share still held by another
        member (a crashed one until its session times out); True without a group, or
        while a subscribed topic does not exist."""
        return self._core.assignment_settled()

    def waiting_for_topics(self) -> bool:
        """A group member whose last heartbeat found a subscribed topic missing."""
        return self._core.waiting_for_topics()

    def recheck_topics(self) -> None:
        """Ask the brokers now whether the subscribed topics exist (``pull``: one created
        since the last periodic look counts at once)."""
        self._io.run(self._core.recheck_topics())

    def position(self, topic: str, partition: int) -> int | None:
        return self._core.buffer.position(TopicPartition(topic, partition))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._core.buffer.seek(TopicPartition(topic, partition), offset)

    def seek_to_beginning(self, partitions: PartitionsArg | None = None) -> None:
        """Read these partitions (default: every assigned one) from their log start."""
        self._io.run(self._core.seek_to(partitions, "earliest"))

    def seek_to_end(self, partitions: PartitionsArg | None = None) -> None:
        """Read only what arrives from now on (their high watermarks)."""
        self._io.run(self._core.seek_to(partitions, "latest"))

    # ---- offsets ---------------------------------------------------------------------------

    def commit(
        self, offsets: OffsetsArg | None = None, asynchronous: bool = False
    ) -> concurrent.futures.Future[None] | None:
        """Commit ``offsets`` (partition -> next offset to read, or ``(topic, partition,
        offset)`` triples), or the positions of everything ``poll`` returned. With
        ``asynchronous`` it returns a future at once instead of waiting."""
        self._core.check_open()
        future = self._io.submit(self._core.commit(offsets))
        if asynchronous:
            return future
        future.result()
        return None

    def committed(self, partitions: PartitionsArg) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None: nothing committed)."""
        return self._io.run(self._core.committed(partitions))

    def beginning_offsets(self, partitions: PartitionsArg) -> dict[TopicPartition, int]:
        return self._io.run(self._core.list_offsets(partitions, "earliest"))

    def end_offsets(self, partitions: PartitionsArg) -> dict[TopicPartition, int]:
        """The high watermarks: the offset the next readable message will get."""
        return self._io.run(self._core.list_offsets(partitions, "latest"))

    def offsets_for_times(
        self, times: Mapping[TopicPartition | tuple[str, int], int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """Per partition, the first message at or after the time (ms) given for it."""
        return self._io.run(self._core.offsets_for_times(times))

    # ---- loops -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Message]:
        """Messages forever, until :meth:`stop` or :meth:`close`."""
        core = self._core
        while not core.stopping and not core.closed:
            yield from self.poll(timeout=0.5)

    def run(self, callback: Callable[[Message], object], *, poll_timeout: float = 0.5) -> None:
        """Call ``callback(message)`` for each message, in order per partition, until
        :meth:`stop`. If it raises, the failed and later messages are sought back to (so
        they are not committed) and the exception propagates."""
        core = self._core
        while not core.stopping and not core.closed:
            messages = self.poll(timeout=poll_timeout)
            for index, message in enumerate(messages):
                try:
                    callback(message)
                except BaseException:
                    core.rewind(messages[index:])
                    raise

    def stop(self) -> None:
        """Make ``run`` and iteration return soon; safe from any thread or a callback."""
        self._core.stopping = True

    def close(self, timeout: float = 30.0) -> None:
        """Commit (with auto-commit on), stop fetching, release connections. Idempotent."""
        core = self._core
        if core.closed:
            return
        core.closed = core.stopping = True
        forget_at_exit(self)
        try:
            self._io.run(core.shutdown(), timeout)
        finally:
            self._io.stop()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        topics = list(self._core.fetcher.topics)
        return f"<Consumer {self.url} group_id={self.group_id} topics={topics}>"
