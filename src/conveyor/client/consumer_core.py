"""What ``Consumer`` (threads) and ``AsyncConsumer`` (asyncio) share: one implementation.

A :class:`Fetcher` prefetches on an event loop into a bounded :class:`FetchBuffer`; a
:class:`OffsetStore` reads and writes the group's committed offsets; with a ``group_id``
and a subscription, a :class:`Membership` heartbeats and takes the group's share of the
partitions. The sync consumer runs all of it on a private loop thread, the async one on
the caller's loop; ``poll`` takes from the buffer on the caller's side.

``group_id`` has Kafka's meaning: the group whose committed offsets the consumer starts
from and commits to, and, when it subscribes (``topics``, ``pattern`` or ``subscribe``),
the group it joins. ``assign`` reads the named partitions with no membership (commits
still go to ``group_id``, as Kafka's). Without a ``group_id`` nothing can be committed.
The old ``group=NAME`` (every partition, commits to NAME, no membership) still works, with
a DeprecationWarning (docs/client.md).

Delivery is at-least-once: ``commit`` records the positions of what ``poll`` returned,
and auto-commit does so at the *start* of the next ``poll`` (and at ``close``), when the
application has finished with the previous messages, as Kafka's consumer does.
"""

from __future__ import annotations

import collections
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from conveyor.client.errors import ClientClosedError
from conveyor.client.fetch_buffer import FetchBuffer
from conveyor.client.fetcher import Fetcher, FetchSettings, OffsetReset
from conveyor.client.group import Assignment, OffsetStore
from conveyor.client.kafka_fetcher import KafkaFetcher
from conveyor.client.kafka_group import GroupCoordinator, KafkaGroupClient, KafkaHeartbeat
from conveyor.client.kafka_metadata import KafkaMetadataClient, kafka_metadata_client
from conveyor.client.kafka_offsets import KafkaOffsets
from conveyor.client.membership import HeartbeatSender, Membership, MembershipSettings
from conveyor.client.offsets import OffsetAndTimestamp
from conveyor.client.recordcodec import configured_codec
from conveyor.client.subscription import Subscription, partitions_of, subscription
from conveyor.client.types import ConsumerGroupMetadata, Message, TopicPartition
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.record_columns import columns_decoder
from conveyor.transport.client import AsyncHTTP, coordinator_set, default_url

log = logging.getLogger(__name__)
Delivery = Literal["at-least-once", "at-most-once"]
Isolation = Literal["read_uncommitted", "read_committed"]
PartitionsArg = Iterable[TopicPartition | tuple[str, int] | tuple[str, int, int]]
# Rebalance callbacks (confluent-kafka's names): called from poll with the partitions
# added (cooperative: only those), revoked, or lost (taken without a chance to commit).
RebalanceCallback = Callable[[list[TopicPartition]], object]
OffsetsArg = Mapping[TopicPartition | tuple[str, int], int] | Iterable[tuple[str, int, int]]


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """Consumer settings; see docs/client.md for the table with defaults and reasons."""

    url: str
    topics: tuple[str, ...] = ()
    pattern: str | None = None
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
    tls: Any = None  # TLSConfig | None
    bootstrap_servers: str | None = None  # Kafka listeners to ask first; None: from url
    group_id: str | None = None
    # False only for the deprecated ``group=``: commits to group_id, never a member
    membership: bool = True
    group_instance_id: str | None = None  # static membership (KIP-345)
    client_id: str = ""
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 300_000
    delivery: Delivery = "at-least-once"
    # read_committed: only committed transactions' records (issue 21, docs/transactions.md)
    isolation: Isolation = "read_uncommitted"
    # The Authorization header (from token, or user and password); None: the environment.
    authorization: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.delivery not in ("at-least-once", "at-most-once"):
            raise ValueError("delivery must be 'at-least-once' or 'at-most-once'")
        if self.group_id is not None and not self.group_id:
            raise ValueError("group_id must not be empty")
        if self.group_instance_id is not None and not self.group_instance_id:
            raise ValueError("group_instance_id must not be empty")
        if self.heartbeat_interval_ms < 1 or self.session_timeout_ms < 1:
            raise ValueError("heartbeat_interval_ms and session_timeout_ms must be positive")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ValueError("auto_offset_reset must be 'earliest' or 'latest'")
        if self.isolation not in ("read_uncommitted", "read_committed"):
            raise ValueError("isolation must be 'read_uncommitted' or 'read_committed'")
        if self.max_poll_records < 1 or self.fetch_max_bytes < 1:
            raise ValueError("max_poll_records and fetch_max_bytes must be positive")


def make_config(
    url: str | None,
    topics: str | Iterable[str] | None,
    group: str | None,
    group_id: str | None,
    **settings: Any,
) -> ConsumerConfig:
    """The consumer's config; ``group`` is the deprecated name (see the module docstring)."""
    membership = True
    if group is not None:
        warnings.warn(
            "Consumer(group=...) is deprecated: use group_id= (Kafka's meaning: with topics "
            "it joins the group; to read every partition without joining, use assign())",
            DeprecationWarning,
            stacklevel=3,
        )
        if group_id is None:
            group_id, membership = group, False
    names = () if topics is None else (topics,) if isinstance(topics, str) else tuple(topics)
    return ConsumerConfig(
        url=default_url(url),
        topics=tuple(dict.fromkeys(names)),
        group_id=group_id,
        membership=membership,
        **settings,
    )


@dataclass(slots=True)
class Callbacks:
    on_assign: RebalanceCallback | None = None
    on_revoke: RebalanceCallback | None = None
    on_lost: RebalanceCallback | None = None


@dataclass(frozen=True, slots=True)
class TransportParts:
    """The consumer's connections to the brokers' Kafka listeners (docs/client.md,
    "Transport"): routing, the group's committed offsets, offset questions and how a
    member's heartbeat goes."""

    metadata: KafkaMetadataClient
    group: OffsetStore | None
    offsets: KafkaOffsets
    heartbeat: Callable[[MembershipSettings], HeartbeatSender]


def _kafka_parts(config: ConsumerConfig, http: AsyncHTTP) -> TransportParts:
    timeout_ms = config.request_timeout_ms
    metadata = kafka_metadata_client(
        http,  # only to ask the coordinator for the brokers' addresses (no bootstrap_servers)
        coordinator_set(config.url).primary,
        config.bootstrap_servers,
        config.tls,
        config.authorization,
        timeout_ms,
        auto_create=False,
        client_id=config.client_id,  # Kafka's client.id: shown in group descriptions
    )
    coordinator = None
    group = None
    if config.group_id is not None:
        coordinator = GroupCoordinator(metadata, config.group_id, timeout_ms)
        group = KafkaGroupClient(coordinator, config.group_instance_id)

    def heartbeat(settings: MembershipSettings) -> HeartbeatSender:
        assert coordinator is not None  # a member has a group_id
        return KafkaHeartbeat(settings, coordinator, metadata)

    return TransportParts(
        metadata=metadata,
        group=group,
        offsets=KafkaOffsets(metadata, timeout_ms),
        heartbeat=heartbeat,
    )


class ConsumerCore:
    """Everything the two consumers share except how they wait (module docstring).
    Coroutines run on the fetcher's loop; the plain methods on the application's side."""

    def __init__(self, config: ConsumerConfig, callbacks: Callbacks | None = None) -> None:
        self.config = config
        self.callbacks = callbacks or Callbacks()
        self.buffer = FetchBuffer(
            buffer_max_bytes=config.buffer_max_bytes, fetch_max_bytes=config.fetch_max_bytes
        )
        coordinators = coordinator_set(config.url)
        self.http = AsyncHTTP(
            config.tls,
            timeout_s=config.request_timeout_ms / 1000 + 10,
            authorization=config.authorization,
            coordinators=coordinators,
        )
        url = self.url = coordinators.primary
        parts = _kafka_parts(config, self.http)
        self.transport = parts
        self.metadata = parts.metadata
        self.group = parts.group
        self.fetcher: Fetcher = KafkaFetcher(
            settings=FetchSettings(
                auto_offset_reset=config.auto_offset_reset,
                fetch_max_bytes=config.fetch_max_bytes,
                fetch_max_wait_ms=config.fetch_max_wait_ms,
                request_timeout_ms=config.request_timeout_ms,
                metadata_max_age_ms=config.metadata_max_age_ms,
                retry_backoff_ms=config.retry_backoff_ms,
                retry_backoff_max_ms=config.retry_backoff_max_ms,
                read_committed=config.isolation == "read_committed",
            ),
            metadata=parts.metadata,
            buffer=self.buffer,
            group=self.group,
            subscription=subscription(config.topics or None, config.pattern),
            url=url,
            decode=columns_decoder(configured_codec()),
        )
        self.membership: Membership | None = None
        # (kind, partitions) from the membership, delivered to the callbacks by poll
        self.events: collections.deque[tuple[str, tuple[TopicPartition, ...]]] = collections.deque()
        self.next_auto_commit_s = time.monotonic() + config.auto_commit_interval_ms / 1000
        self.started = False
        self.closed = False
        self.stopping = False

    @property
    def timeout_s(self) -> float:
        return self.config.request_timeout_ms / 1000

    # ---- lifecycle (on the loop) -----------------------------------------------------------

    def assignment_settled(self) -> bool:
        """A group member: joined, and no partition of its share still held by another
        member; True without a group, or while a subscribed topic does not exist."""
        membership = self.membership
        if membership is None:
            return True
        if membership.topics_missing:
            # settled while the metadata still says a topic is missing; once it exists
            # (recheck_topics), only when a heartbeat has brought its partitions' share
            return bool(self.fetcher.missing_topics())
        return membership.joined.is_set() and not membership.pending

    def waiting_for_topics(self) -> bool:
        """A group member whose last heartbeat found a subscribed topic missing."""
        return self.membership is not None and self.membership.topics_missing

    async def recheck_topics(self) -> None:
        """Ask the brokers now whether the subscribed topics exist (the periodic look
        may be up to ``MISSING_TOPIC_RETRY_MS`` old); one that does: heartbeat at once."""
        missing = await self.fetcher.recheck_topics()
        if self.membership is not None and not missing:
            self.membership.beat_soon()

    def group_metadata(self) -> ConsumerGroupMetadata:
        """This member's identity now (on the loop, where the membership changes), for
        ``send_offsets_to_transaction`` (KIP-447); not a member yet: unfenced values."""
        group = self.group
        if group is None:
            raise InvalidRequestError("group_metadata() needs a consumer with a group_id")
        membership = self.membership
        if membership is None or membership.member_id is None:
            instance_id = self.config.group_instance_id
            return ConsumerGroupMetadata(group.group, group_instance_id=instance_id)
        return ConsumerGroupMetadata(
            group.group,
            membership.generation,
            membership.member_id,
            membership.settings.instance_id,
        )

    def start(self) -> None:
        self.started = True
        self.fetcher.start()
        self._join_if_subscribed()

    def _join_if_subscribed(self) -> None:
        subscribed = self.fetcher.subscription
        if (
            self.membership is not None
            or self.group is None
            or not self.config.membership
            or subscribed.manual is not None
            or subscribed.empty
        ):
            return
        config = self.config
        settings = MembershipSettings(
            group=self.group.group,
            client_id=config.client_id,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            request_timeout_ms=config.request_timeout_ms,
            instance_id=config.group_instance_id,
        )
        self.membership = Membership(
            settings,
            sender=self.transport.heartbeat(settings),
            fetcher=self.fetcher,
            buffer=self.buffer,
            group=self.group,
            on_change=lambda kind, partitions: self.events.append((kind, partitions)),
        )
        self.fetcher.managed = True
        self.membership.start()

    async def shutdown(self) -> None:
        try:
            if self.membership is not None:
                await self.membership.close(commit=self.commits_after_processing)
            elif self.commits_after_processing:
                await self.auto_commit()
        finally:
            await self.fetcher.close()
            await self.fetcher.close_transport()
            await self.http.close()

    def check_open(self) -> None:
        if self.closed:
            raise ClientClosedError("the consumer is closed")

    # ---- what to read (on the loop) ----------------------------------------------------------

    async def subscribe(self, wanted: Subscription, callbacks: Callbacks | None) -> None:
        if self.fetcher.subscription.manual is not None:
            raise InvalidRequestError("subscribe() after assign(): call unsubscribe() first")
        if callbacks is not None:
            self.callbacks = callbacks
        self.fetcher.subscribe(wanted)
        if self.started:
            self._join_if_subscribed()

    async def assign(self, partitions: PartitionsArg) -> None:
        if self.membership is not None:
            raise InvalidRequestError("assign() while subscribed: call unsubscribe() first")
        chosen, starts = partitions_of(partitions)
        self.fetcher.managed = False
        self.fetcher.subscribe(Subscription(manual=chosen))
        for tp, offset in starts.items():
            self.buffer.seek(tp, offset)

    async def unsubscribe(self) -> None:
        """Leave the group (committing first with auto-commit) and stop reading."""
        if self.membership is not None:
            membership, self.membership = self.membership, None
            await membership.close(commit=self.commits_after_processing)
        self.fetcher.managed = False
        self.fetcher.subscribe(Subscription())
        self.fetcher.apply(Assignment(()))

    # ---- polling (the application's side) ------------------------------------------------

    def poll_started(self) -> bool:
        """Called at the start of each poll (and while it waits); True when the loop must
        run :meth:`before_poll` (a revocation or a lost session)."""
        membership = self.membership
        if membership is None:
            return False
        membership.poll_started()
        return bool(membership.revoking) or membership.session_lost() or bool(membership.refused)

    def revoking(self) -> frozenset[TopicPartition]:
        return frozenset() if self.membership is None else self.membership.revoking

    async def before_poll(self, revoked: frozenset[TopicPartition]) -> None:
        membership = self.membership
        if membership is None:
            return
        if membership.refused is not None:  # e.g. a Kafka classic group of the same name
            raise membership.refused
        if membership.session_lost():
            membership.drop_all("no heartbeat answered for a session timeout")
        await membership.release_revoked(self.commits_after_processing, revoked)

    def take_events(self) -> list[tuple[RebalanceCallback, list[TopicPartition]]]:
        """The rebalance callbacks due (assigned, lost), in order, to call from poll."""
        due = []
        while self.events:
            kind, partitions = self.events.popleft()
            callback = self.callbacks.on_assign
            if kind == "lost":
                callback = self.callbacks.on_lost or self.callbacks.on_revoke
            if callback is not None:
                due.append((callback, list(partitions)))
        return due

    @property
    def commits_after_processing(self) -> bool:
        """At-least-once with auto-commit: commit what poll returned, on the next poll."""
        return (
            self.group is not None
            and self.config.enable_auto_commit
            and self.config.delivery == "at-least-once"
        )

    async def commit_taken(self, count: int) -> bool:
        """At-most-once: commit the positions after the ``count`` records just taken,
        before they are handed out; False when that commit failed: they are not handed
        out then (they may be read again elsewhere)."""
        if not count or self.config.delivery != "at-most-once" or self.group is None:
            return True
        try:
            await self.commit()
        except ConveyorError as exc:
            log.warning("group %s: at-most-once commit failed, dropping: %s", self.group.group, exc)
            return False
        return True

    def auto_commit_due(self) -> bool:
        if not self.commits_after_processing or time.monotonic() < self.next_auto_commit_s:
            return False
        self.next_auto_commit_s = time.monotonic() + self.config.auto_commit_interval_ms / 1000
        return True

    def rewind(self, unprocessed: list[Message]) -> None:
        """Seek back to the first of ``unprocessed`` per partition: they were returned but
        not handled (a callback raised), so they must be read again."""
        first: dict[TopicPartition, int] = {}
        for message in unprocessed:
            tp = TopicPartition(message.topic, message.partition)
            first[tp] = min(first.get(tp, message.offset), message.offset)
        for tp, offset in first.items():
            self.buffer.seek(tp, offset)

    # ---- offsets (on the loop) ---------------------------------------------------------------

    def _group(self) -> OffsetStore:
        if self.group is None:
            raise InvalidRequestError(
                "committed offsets need a group_id: Consumer(group_id=...)",
                code=ErrorCode.INVALID_REQUEST,
            )
        return self.group

    async def commit(self, offsets: OffsetsArg | None = None) -> None:
        """Commit ``offsets`` (partition -> the next offset to read), or the positions of
        everything poll returned."""
        group = self._group()
        chosen = self.buffer.uncommitted() if offsets is None else _offsets(offsets)
        if not chosen:
            return
        if self.membership is not None:
            await self.membership.commit(chosen)
        else:
            await group.commit(chosen, self.fetcher.assignment)
            self.buffer.mark_committed(chosen)
        log.debug("group %s committed %s", group.group, chosen)

    async def auto_commit(self) -> None:
        try:
            await self.commit()
        except ConveyorError as exc:  # the next auto-commit (or close) tries again
            log.warning("group %s: auto-commit failed: %s", self.config.group_id, exc)

    async def committed(self, partitions: PartitionsArg) -> dict[TopicPartition, int | None]:
        group = self._group()
        chosen, _ = partitions_of(partitions)
        by_topic = {topic: await group.fetch_offsets(topic) for topic in {t for t, _ in chosen}}
        return {tp: by_topic[tp.topic].get(tp.partition) for tp in chosen}

    async def list_offsets(
        self, partitions: PartitionsArg, which: Literal["earliest", "latest"]
    ) -> dict[TopicPartition, int]:
        chosen, _ = partitions_of(partitions)
        offsets = self.transport.offsets
        if which == "earliest":
            return await offsets.earliest(chosen)
        return await offsets.latest(chosen, self.config.isolation == "read_committed")

    async def offsets_for_times(
        self, times: Mapping[TopicPartition | tuple[str, int], int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        wanted = {TopicPartition(tp[0], int(tp[1])): int(ms) for tp, ms in times.items()}
        return await self.transport.offsets.for_times(wanted)

    async def seek_to(
        self, partitions: PartitionsArg | None, which: Literal["earliest", "latest"]
    ) -> None:
        chosen = self.buffer.assignment() if partitions is None else partitions_of(partitions)[0]
        for tp, offset in (await self.list_offsets(chosen, which)).items():
            self.buffer.seek(tp, offset)


def _offsets(offsets: OffsetsArg) -> dict[TopicPartition, int]:
    if isinstance(offsets, Mapping):
        return {TopicPartition(tp[0], int(tp[1])): int(o) for tp, o in offsets.items()}
    return {TopicPartition(t, int(p)): int(o) for t, p, o in offsets}
