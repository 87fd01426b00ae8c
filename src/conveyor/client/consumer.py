"""``Consumer`` (threads) and ``AsyncConsumer`` (asyncio): one implementation, two faces.

Both wrap :class:`_ConsumerCore`: a :class:`Fetcher` prefetching on an event loop into a
bounded :class:`FetchBuffer`, and a :class:`GroupClient` for committed offsets. The sync
consumer runs the fetcher on a private loop thread, the async one on the caller's loop;
``poll`` takes from the buffer on the caller's side and only waits differently.

Delivery is at-least-once: ``commit`` records the positions of what ``poll`` returned,
and auto-commit does so at the *start* of the next ``poll`` (and at ``close``), when the
application has finished with the previous messages, as Kafka's consumer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from conveyor.client.errors import ClientClosedError
from conveyor.client.fetch_buffer import FetchBuffer
from conveyor.client.fetcher import Fetcher, FetchSettings, OffsetReset
from conveyor.client.group import GroupClient
from conveyor.client.loop import LoopThread, close_at_exit, forget_at_exit
from conveyor.client.membership import Membership, MembershipSettings
from conveyor.client.metadata import MetadataClient
from conveyor.client.types import Message, TopicPartition
from conveyor.protocol.errors import ConveyorError
from conveyor.transport.client import AsyncHTTP, coordinator_set, default_url
from conveyor.transport.credentials import authorization_header
from conveyor.transport.tls import TLSConfig

log = logging.getLogger(__name__)
Delivery = Literal["at-least-once", "at-most-once"]


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """Consumer settings; see docs/client.md for the table with defaults and reasons."""

    url: str
    topics: tuple[str, ...]
    group: str = "default"
    auto_offset_reset: OffsetReset = "earliest"
    enable_auto_commit: bool = True
    auto_commit_interval_ms: int = 5_000
    max_poll_records: int = 500
    fetch_max_bytes: int = 1024 * 1024
    fetch_max_wait_ms: int = 500
    buffer_max_bytes: int = 64 * 1024 * 1024
    request_timeout_ms: int = 30_000
    metadata_max_age_ms: int = 30_000
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1_000
    tls: TLSConfig | None = None
    # consumer-group membership (docs/consumer-groups.md): on when group_id is set
    group_id: str | None = None
    client_id: str = ""
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 300_000
    delivery: Delivery = "at-least-once"
    # The Authorization header (from token, or user and password); None: the environment.
    authorization: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.delivery not in ("at-least-once", "at-most-once"):
            raise ValueError("delivery must be 'at-least-once' or 'at-most-once'")
        if self.group_id is not None and not self.group_id:
            raise ValueError("group_id must not be empty")
        if self.heartbeat_interval_ms < 1 or self.session_timeout_ms < 1:
            raise ValueError("heartbeat_interval_ms and session_timeout_ms must be positive")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ValueError("auto_offset_reset must be 'earliest' or 'latest'")
        if self.max_poll_records < 1 or self.fetch_max_bytes < 1:
            raise ValueError("max_poll_records and fetch_max_bytes must be positive")
        if not self.topics:
            raise ValueError("a consumer needs at least one topic")


def _topics(topics: str | Iterable[str] | None) -> tuple[str, ...]:
    if topics is None:
        return ()
    if isinstance(topics, str):
        return (topics,)
    return tuple(dict.fromkeys(topics))


class _ConsumerCore:
    """Everything the two consumers share except how they wait (module docstring)."""

    def __init__(self, config: ConsumerConfig) -> None:
        self.config = config
        self.buffer = FetchBuffer(
            buffer_max_bytes=config.buffer_max_bytes, fetch_max_bytes=config.fetch_max_bytes
        )
        coordinators = coordinator_set(config.url)
        self.http = AsyncHTTP(
            config.tls,
            timeout_s=config.request_timeout_ms / 1000 + 10,
            authorization=config.authorization,
            coordinators=coordinators,  # requests go to the active coordinator
        )
        url = coordinators.primary
        self.metadata = MetadataClient(
            self.http, url, auto_create=False, request_timeout_ms=config.request_timeout_ms
        )
        group_name = config.group_id or config.group
        self.group = GroupClient(self.http, url, group_name, config.request_timeout_ms)
        self.fetcher = Fetcher(
            settings=FetchSettings(
                topics=config.topics,
                auto_offset_reset=config.auto_offset_reset,
                fetch_max_bytes=config.fetch_max_bytes,
                fetch_max_wait_ms=config.fetch_max_wait_ms,
                request_timeout_ms=config.request_timeout_ms,
                metadata_max_age_ms=config.metadata_max_age_ms,
                retry_backoff_ms=config.retry_backoff_ms,
                retry_backoff_max_ms=config.retry_backoff_max_ms,
            ),
            buffer=self.buffer,
            metadata=self.metadata,
            group=self.group,
            http=self.http,
            managed=config.group_id is not None,
        )
        self.membership: Membership | None = None
        if config.group_id is not None:
            self.membership = Membership(
                MembershipSettings(
                    group=config.group_id,
                    topics=config.topics,
                    client_id=config.client_id,
                    session_timeout_ms=config.session_timeout_ms,
                    heartbeat_interval_ms=config.heartbeat_interval_ms,
                    max_poll_interval_ms=config.max_poll_interval_ms,
                    request_timeout_ms=config.request_timeout_ms,
                ),
                http=self.http,
                url=url,
                fetcher=self.fetcher,
                buffer=self.buffer,
                group=self.group,
            )
        self.next_auto_commit_s = time.monotonic() + config.auto_commit_interval_ms / 1000
        self.closed = False
        self.stopping = False

    def start(self) -> None:
        self.fetcher.start()
        if self.membership is not None:
            self.membership.start()

    @property
    def commits_after_processing(self) -> bool:
        """At-least-once with auto-commit: commit what poll returned, on the next poll."""
        return self.config.enable_auto_commit and self.config.delivery == "at-least-once"

    def poll_started(self) -> bool:
        """Called on the application's side at the start of each poll (and while it waits);
        True when the loop must run :meth:`before_poll` (a revocation or a lost session)."""
        membership = self.membership
        if membership is None:
            return False
        membership.poll_started()
        return bool(membership.revoking) or membership.session_lost() or bool(membership.refused)

    async def before_poll(self) -> None:
        membership = self.membership
        if membership is None:
            return
        if membership.refused is not None:  # e.g. a Kafka classic group of the same name
            raise membership.refused
        if membership.session_lost():
            membership.drop_all("no heartbeat answered for a session timeout")
        await membership.release_revoked(commit=self.commits_after_processing)

    async def commit_taken(self, messages: list[Message]) -> list[Message]:
        """At-most-once: commit the positions after ``messages`` before handing them out;
        if the commit fails they are not handed out (they may be read again elsewhere)."""
        if not messages or self.config.delivery != "at-most-once":
            return messages
        try:
            await self.commit()
        except ConveyorError as exc:
            log.warning("group %s: at-most-once commit failed, dropping: %s", self.group.group, exc)
            return []
        return messages

    def auto_commit_due(self) -> bool:
        if not self.commits_after_processing or time.monotonic() < self.next_auto_commit_s:
            return False
        self.next_auto_commit_s = time.monotonic() + self.config.auto_commit_interval_ms / 1000
        return True

    async def commit(self) -> None:
        offsets = self.buffer.uncommitted()
        if offsets and self.membership is not None:
            await self.membership.commit(offsets)
        elif offsets:
            await self.group.commit(offsets, self.fetcher.assignment)
            self.buffer.mark_committed(offsets)
            log.debug("group %s committed %s", self.config.group, offsets)

    async def auto_commit(self) -> None:
        try:
            await self.commit()
        except ConveyorError as exc:  # the next auto-commit (or close) tries again
            log.warning("group %s: auto-commit failed: %s", self.config.group, exc)

    async def shutdown(self) -> None:
        try:
            if self.membership is not None:
                await self.membership.close(commit=self.commits_after_processing)
            elif self.config.enable_auto_commit:
                await self.auto_commit()
        finally:
            await self.fetcher.close()
            await self.http.close()

    def rewind(self, unprocessed: list[Message]) -> None:
        """Seek back to the first of ``unprocessed`` per partition: they were returned but
        not handled (a callback raised), so they must be read again."""
        first: dict[TopicPartition, int] = {}
        for message in unprocessed:
            tp = TopicPartition(message.topic, message.partition)
            first[tp] = min(first.get(tp, message.offset), message.offset)
        for tp, offset in first.items():
            self.buffer.seek(tp, offset)

    def check_open(self) -> None:
        if self.closed:
            raise ClientClosedError("the consumer is closed")


def _config(url: str | None, topics: str | Iterable[str] | None, **settings: Any) -> ConsumerConfig:
    return ConsumerConfig(url=default_url(url), topics=_topics(topics), **settings)


class Consumer:
    """Reads ``topics``: as a member of consumer group ``group_id`` (its share of the
    partitions, docs/consumer-groups.md) or, without one, every partition, committing to
    ``group`` (see docs/client.md); not thread-safe except
    :meth:`stop`, like Kafka's consumer: use it from one thread."""

    def __init__(
        self,
        url: str | None = None,
        topics: str | Iterable[str] | None = None,
        *,
        group: str = "default",
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
        group_id: str | None = None,
        client_id: str = "",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        max_poll_interval_ms: int = 300_000,
        delivery: Delivery = "at-least-once",
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self._core = core = _ConsumerCore(
            _config(
                url,
                topics,
                group=group,
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
                group_id=group_id,
                client_id=client_id,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms,
                delivery=delivery,
                authorization=authorization_header(token, user, password),
            )
        )
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
    def group(self) -> str:
        return self._core.config.group_id or self._core.config.group

    @property
    def member_id(self) -> str | None:
        """This member's id in its group (``group_id`` consumers), None while it is not a
        member. A new id means the member was dropped (fenced, or its session lost) and
        joined again: its partitions restart from the committed offsets."""
        membership = self._core.membership
        return None if membership is None else membership.member_id

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Message]:
        """Messages available now, or within ``timeout`` seconds (else an empty list)."""
        core = self._core
        core.check_open()
        if core.auto_commit_due():
            self._io.run(core.auto_commit())
        limit = max_records or core.config.max_poll_records
        deadline = time.monotonic() + timeout
        while True:
            if core.poll_started():
                self._io.run(core.before_poll())
            messages = core.buffer.take(limit)
            if messages and core.config.delivery == "at-most-once":
                messages = self._io.run(core.commit_taken(messages))
            remaining_s = deadline - time.monotonic()
            if messages or remaining_s <= 0 or core.stopping:
                return messages
            core.buffer.wait_for_data(min(remaining_s, 0.1))

    def commit(self) -> None:
        """Commit the positions of everything ``poll`` has returned (the next offsets)."""
        self._core.check_open()
        self._io.run(self._core.commit())

    def caught_up(self) -> bool:
        """True when, as of the latest fetches, nothing is waiting to be polled."""
        return self._core.fetcher.ready and self._core.buffer.caught_up()

    def assignment(self) -> list[TopicPartition]:
        return self._core.buffer.assignment()

    def position(self, topic: str, partition: int) -> int | None:
        return self._core.buffer.position(TopicPartition(topic, partition))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._core.buffer.seek(TopicPartition(topic, partition), offset)

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
        return f"<Consumer {self.url} group={self.group} topics={list(self._core.config.topics)}>"


class AsyncConsumer:
    """The asyncio twin of :class:`Consumer`, with the same settings and semantics."""

    def __init__(
        self,
        url: str | None = None,
        topics: str | Iterable[str] | None = None,
        *,
        group: str = "default",
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
        group_id: str | None = None,
        client_id: str = "",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        max_poll_interval_ms: int = 300_000,
        delivery: Delivery = "at-least-once",
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self._core = _ConsumerCore(
            _config(
                url,
                topics,
                group=group,
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
                group_id=group_id,
                client_id=client_id,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms,
                delivery=delivery,
                authorization=authorization_header(token, user, password),
            )
        )
        self._data: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self._core.config.url

    def _started(self) -> _ConsumerCore:
        core = self._core
        core.check_open()
        if self._data is None:
            self._data = data = asyncio.Event()
            core.buffer.on_data = data.set
            core.buffer.on_space = core.fetcher.space_freed
            core.start()
        return core

    async def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Message]:  # noqa: ASYNC109 -- as Consumer.poll
        """Messages available now, or within ``timeout`` seconds (else an empty list)."""
        core = self._started()
        assert self._data is not None
        if core.auto_commit_due():
            await core.auto_commit()
        limit = max_records or core.config.max_poll_records
        deadline = time.monotonic() + timeout
        while True:
            self._data.clear()
            if core.poll_started():
                await core.before_poll()
            messages = await core.commit_taken(core.buffer.take(limit))
            remaining_s = deadline - time.monotonic()
            if messages or remaining_s <= 0 or core.stopping:
                return messages
            if not core.buffer.has_data():
                with contextlib.suppress(TimeoutError):  # wakes to notice stop()
                    await asyncio.wait_for(self._data.wait(), min(remaining_s, 0.1))

    async def commit(self) -> None:
        self._started()
        await self._core.commit()

    def caught_up(self) -> bool:
        return self._core.fetcher.ready and self._core.buffer.caught_up()

    def assignment(self) -> list[TopicPartition]:
        return self._core.buffer.assignment()

    def position(self, topic: str, partition: int) -> int | None:
        return self._core.buffer.position(TopicPartition(topic, partition))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._core.buffer.seek(TopicPartition(topic, partition), offset)

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
                    result = callback(message)
                    if inspect.isawaitable(result):
                        await result
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
        config = self._core.config
        return f"<AsyncConsumer {self.url} group={config.group_id or config.group}>"
