"""``Queue`` (threads) and ``AsyncQueue`` (asyncio): a share group as a work queue.

Any number of members read a topic together; each record is delivered to one member at a
time under a lock, and the member acknowledges it (docs/queues.md)::

    with conveyor.Queue("orders", "billing", mode="key_ordered") as queue:
        for message in queue.receive(max_records=100, timeout=1.0):
            handle(message)
            message.ack()            # or message.release(delay=5.0), message.reject("bad")
        queue.commit()               # acknowledgements confirmed (else: with the next receive)

    queue.subscribe(handle)          # acks on return, releases on an exception

Acknowledgements are batched: ``ack()`` records it, and it travels with the next
``receive`` (one request, one state write per partition), or with ``commit()``, or after
``ack_flush_ms`` on its own. ``commit()`` waits and returns the refused ones (a lock that
expired meanwhile: the record went to another member).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

from conveyor.client.errors import ClientClosedError
from conveyor.client.loop import LoopThread, close_at_exit, forget_at_exit
from conveyor.client.queue_core import AckFailure, Delivered, QueueCore, QueueSettings
from conveyor.client.types import Headers
from conveyor.protocol.share import ShareGroupConfig, ShareMode
from conveyor.transport.client import default_url
from conveyor.transport.credentials import authorization_header
from conveyor.transport.tls import TLSConfig

log = logging.getLogger(__name__)

__all__ = ["AckFailure", "AsyncQueue", "Queue", "QueueMessage"]


class QueueMessage:
    """A record delivered by a queue, locked for this member until acknowledged.

    ``delivery_count`` is 1 on a first delivery; ``lock_token`` identifies this delivery
    (what the REST API acknowledges with)."""

    __slots__ = ("_core", "_delivered", "_done")

    def __init__(self, core: QueueCore, delivered: Delivered) -> None:
        self._core = core
        self._delivered = delivered
        self._done = False

    @property
    def topic(self) -> str:
        return self._core.settings.topic

    @property
    def lock_token(self) -> str:
        return self._core.token(self._delivered)

    @property
    def partition(self) -> int:
        return self._delivered.partition

    @property
    def offset(self) -> int:
        return self._delivered.record.offset

    @property
    def key(self) -> bytes | None:
        return self._delivered.record.key

    @property
    def value(self) -> bytes | None:
        return self._delivered.record.value

    @property
    def headers(self) -> Headers:
        return self._delivered.record.headers

    @property
    def timestamp_ms(self) -> int:
        return self._delivered.record.timestamp_ms

    @property
    def delivery_count(self) -> int:
        return self._delivered.delivery_count

    def ack(self) -> None:
        """Done: never delivered again (once the acknowledgement is confirmed)."""
        self._settle("accept")

    def release(self, delay: float | None = None, reason: str | None = None) -> None:
        """Deliver again (to any member) now, after ``delay`` seconds, or after the group's
        retry backoff when None. Counts as a failed attempt (dead-lettered past
        ``max_delivery_attempts``)."""
        delay_ms = None if delay is None else max(0, round(delay * 1000))
        self._settle("release", delay_ms, reason)
        self._core.released(self._delivered)

    def reject(self, reason: str = "rejected") -> None:
        """Give up: to the group's dead-letter topic with ``reason`` in its headers."""
        self._settle("reject", None, reason)

    def _settle(self, kind: str, delay_ms: int | None = None, reason: str | None = None) -> None:
        if self._done:
            raise ValueError(f"message {self.partition}:{self.offset} was already acknowledged")
        self._done = True
        delivered = self._delivered
        self._core.pending.add(
            delivered.partition,
            delivered.record.offset,
            delivered.acquisition,
            kind,  # type: ignore[arg-type]
            delay_ms,
            None if reason is None else str(reason)[:1000],
        )

    def __repr__(self) -> str:
        return (
            f"QueueMessage(topic={self.topic!r}, partition={self.partition}, "
            f"offset={self.offset}, key={self.key!r}, delivery_count={self.delivery_count})"
        )


def _accept_all(core: QueueCore, messages: Iterable[QueueMessage]) -> None:
    entries = []
    for message in messages:
        if message._done:
            raise ValueError(
                f"message {message.partition}:{message.offset} was already acknowledged"
            )
        message._done = True
        delivered = message._delivered
        entries.append((delivered.partition, delivered.record.offset, delivered.acquisition))
    core.pending.add_many(entries, "accept")


def _settings(topic: str, group: str, url: str | None, **settings: Any) -> QueueSettings:
    return QueueSettings(url=default_url(url), topic=topic, group=group, **settings)


def _failure_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


def _batch_outcome(
    messages: list[QueueMessage], key_ordered: bool, run_one: Callable[[QueueMessage], None]
) -> None:
    """Shared by both ``subscribe`` loops: in key-ordered mode a failure skips the later
    messages of its key in this batch (the broker sends them back with it)."""
    failed_keys: set[bytes | None] = set()
    for message in messages:
        if key_ordered and message.key is not None and message.key in failed_keys:
            message._done = True
            continue
        try:
            run_one(message)
        except Exception as exc:
            log.info("queue: %r failed, released: %s", message, exc)
            message.release(reason=_failure_reason(exc))
            failed_keys.add(message.key)


class Queue:
    """A member of share group ``group`` reading ``topic`` (thread-safe for acks; call
    ``receive`` from one thread at a time)."""

    def __init__(
        self,
        topic: str,
        group: str,
        *,
        mode: ShareMode | None = None,
        url: str | None = None,
        config: ShareGroupConfig | None = None,
        client_id: str = "",
        session_timeout_ms: int = 10_000,
        request_timeout_ms: int = 30_000,
        ack_flush_ms: int = 100,
        prefetch: bool = True,
        tls: TLSConfig | None = None,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self._core = core = QueueCore(
            _settings(
                topic,
                group,
                url,
                mode=mode,
                config=config,
                client_id=client_id,
                session_timeout_ms=session_timeout_ms,
                request_timeout_ms=request_timeout_ms,
                ack_flush_ms=ack_flush_ms,
                prefetch=prefetch,
                tls=tls,
                authorization=authorization_header(token, user, password),
            )
        )
        self._io = LoopThread("conveyor-queue-io")
        self._stopping = False
        try:
            self._io.run(core.start())
        except BaseException:
            self._io.run(core.close())
            self._io.stop()
            raise
        close_at_exit(self)

    @property
    def member_id(self) -> str | None:
        return self._core.member_id

    @property
    def config(self) -> ShareGroupConfig | None:
        """The group's settings, as the coordinator answered."""
        return self._core.config

    @property
    def assigned_partitions(self) -> list[int]:
        return list(self._core.assigned)

    def receive(self, max_records: int = 100, timeout: float = 1.0) -> list[QueueMessage]:
        """Up to ``max_records`` records locked for this member, within ``timeout`` seconds
        (empty when none came); pending acknowledgements go along."""
        self._check_open()
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        core = self._core
        got = self._io.run(core.receive(max_records, timeout))
        return [QueueMessage(core, d) for d in got]

    def ack(self, messages: Iterable[QueueMessage]) -> None:
        """Accept many messages at once (one lock, not one per message)."""
        _accept_all(self._core, messages)

    def release(self, messages: Iterable[QueueMessage], delay: float | None = None) -> None:
        for message in messages:
            message.release(delay)

    def reject(self, messages: Iterable[QueueMessage], reason: str = "rejected") -> None:
        for message in messages:
            message.reject(reason)

    def commit(self, timeout: float | None = 30.0) -> list[AckFailure]:
        """Send the pending acknowledgements and wait; the refused ones (empty: all done)."""
        self._check_open()
        return self._io.run(self._core.commit(), timeout)

    def on_ack_error(self, callback: Callable[[AckFailure], None] | None) -> None:
        """Called (on the I/O thread) for each refused acknowledgement (default: a log)."""
        self._core.on_ack_error = callback

    def subscribe(
        self,
        callback: Callable[[QueueMessage], object],
        *,
        max_records: int = 100,
        timeout: float = 1.0,
    ) -> None:
        """Call ``callback`` for each record, in this thread, until :meth:`stop` or
        ``close``: a return acknowledges the record, an exception releases it (its text
        is the error a dead-letter header names)."""
        key_ordered = (self._core.config or ShareGroupConfig()).mode == "key_ordered"

        def run_one(message: QueueMessage) -> None:
            callback(message)
            if not message._done:
                message.ack()

        while not self._stopping and not self._core.closed:
            messages = self.receive(max_records, timeout)
            _batch_outcome(messages, key_ordered, run_one)

    def stop(self) -> None:
        """Make ``subscribe`` return after its current batch (any thread)."""
        self._stopping = True

    def close(self) -> None:
        """Send pending acknowledgements, give back unhandled records, leave the group."""
        if self._core.closed:
            return
        self._stopping = True
        forget_at_exit(self)
        try:
            self._io.run(self._core.close(), 60)
        finally:
            self._io.stop()

    def _check_open(self) -> None:
        if self._core.closed:
            raise ClientClosedError("the queue is closed")

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncQueue:
    """The asyncio twin of :class:`Queue`: ``await AsyncQueue.open(...)`` or
    ``async with AsyncQueue(...)``; ``receive``, ``commit``, ``subscribe`` and ``close``
    are coroutines; a message's ``ack``/``release``/``reject`` are not (they record)."""

    def __init__(
        self,
        topic: str,
        group: str,
        *,
        mode: ShareMode | None = None,
        url: str | None = None,
        config: ShareGroupConfig | None = None,
        client_id: str = "",
        session_timeout_ms: int = 10_000,
        request_timeout_ms: int = 30_000,
        ack_flush_ms: int = 100,
        prefetch: bool = True,
        tls: TLSConfig | None = None,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self._core = QueueCore(
            _settings(
                topic,
                group,
                url,
                mode=mode,
                config=config,
                client_id=client_id,
                session_timeout_ms=session_timeout_ms,
                request_timeout_ms=request_timeout_ms,
                ack_flush_ms=ack_flush_ms,
                prefetch=prefetch,
                tls=tls,
                authorization=authorization_header(token, user, password),
            )
        )
        self._started = False
        self._stopping = False

    async def start(self) -> AsyncQueue:
        if not self._started:
            self._started = True
            await self._core.start()
        return self

    @classmethod
    async def open(cls, topic: str, group: str, **settings: Any) -> AsyncQueue:
        return await cls(topic, group, **settings).start()

    @property
    def member_id(self) -> str | None:
        return self._core.member_id

    @property
    def config(self) -> ShareGroupConfig | None:
        return self._core.config

    async def receive(self, max_records: int = 100, timeout: float = 1.0) -> list[QueueMessage]:  # noqa: ASYNC109 -- as Queue.receive
        if self._core.closed:
            raise ClientClosedError("the queue is closed")
        await self.start()
        got = await self._core.receive(max_records, timeout)
        return [QueueMessage(self._core, d) for d in got]

    async def commit(self) -> list[AckFailure]:
        return await self._core.commit()

    def ack(self, messages: Iterable[QueueMessage]) -> None:
        """Accept many messages at once."""
        _accept_all(self._core, messages)

    def on_ack_error(self, callback: Callable[[AckFailure], None] | None) -> None:
        self._core.on_ack_error = callback

    async def subscribe(
        self,
        callback: Callable[[QueueMessage], object | Awaitable[object]],
        *,
        max_records: int = 100,
        timeout: float = 1.0,  # noqa: ASYNC109 -- as Queue.subscribe
    ) -> None:
        """As :meth:`Queue.subscribe`; ``callback`` may be a coroutine function."""
        await self.start()
        key_ordered = (self._core.config or ShareGroupConfig()).mode == "key_ordered"
        while not self._stopping and not self._core.closed:
            messages = await self.receive(max_records, timeout)
            failed_keys: set[bytes | None] = set()
            for message in messages:
                if key_ordered and message.key is not None and message.key in failed_keys:
                    message._done = True
                    continue
                try:
                    result = callback(message)
                    if inspect.isawaitable(result):
                        await result
                    if not message._done:
                        message.ack()
                except Exception as exc:
                    message.release(reason=_failure_reason(exc))
                    failed_keys.add(message.key)

    def stop(self) -> None:
        self._stopping = True

    async def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._core.close()

    async def __aenter__(self) -> AsyncQueue:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
