"""The coordinator service: the I/O shell around the pure decisions. No HTTP here.

It owns the metadata store, the clock and the broker expiry timer. Each mutating call
queues one decision from ``state.py`` with the transition writer (``writer.py``: group
commit), which writes its durable records to the store and only then makes the new state
current; the decisions are then logged with their reasons. Reads use the current state:
an immutable snapshot.

A service is *active* (it has a state and decides) or not. With SQLite it becomes active
at ``start`` and stays so; with etcd, ``leadership.py`` activates it when it wins the
election (``activate``, with the epoch and the own-clock lease check) and deactivates it
when the lease is lost, a write is fenced, or a write's outcome is unknown. While not
active every call raises ``NOT_COORDINATOR`` naming the active coordinator when known.

Lock order: none in this module; the writer serialises changes on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from conveyor.coordinator import control, views
from conveyor.coordinator import state as core
from conveyor.coordinator.classic_model import Limits
from conveyor.coordinator.consumer_groups import ConsumerGroups
from conveyor.coordinator.group_service import GroupManager
from conveyor.coordinator.kafka_groups import KafkaGroups
from conveyor.coordinator.metastore import MetadataStore, SqliteMetadataStore
from conveyor.coordinator.metrics import CoordinatorMetrics
from conveyor.coordinator.model import ClusterState
from conveyor.coordinator.share_group_service import ShareGroupManager
from conveyor.coordinator.state import Result, TopicDefaults
from conveyor.coordinator.txn_service import TransactionCoordinator
from conveyor.coordinator.validation import validate_topic_name
from conveyor.coordinator.writer import TransitionWriter
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterIsrRequest,
    AlterIsrResponse,
    AlterTopicConfigRequest,
    BrokerHeartbeat,
    BrokerId,
    ClusterStatus,
    CreateTopicRequest,
    DecommissionResponse,
    HeartbeatResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    Metadata,
    OffsetCommitRequest,
    OffsetFetchResponse,
    TopicDescription,
    TopicList,
)
from conveyor.protocol.txn import MARKERS_PATH, TxnMarkersRequest, TxnMarkersResponse
from conveyor.transport.client import AsyncHTTP
from conveyor.transport.clock import Clock, SystemClock
from conveyor.transport.credentials import authorization_header
from conveyor.transport.tls import TLSConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
Command = TypeVar("Command", HeartbeatResponse, AlterIsrResponse)


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    data_dir: Path
    session_timeout_ms: int = 6000  # a broker silent this long is declared dead
    heartbeat_interval_ms: int = 1000  # told to brokers; capped at a third of the timeout
    auto_create_topics: bool = True
    topic_defaults: TopicDefaults = field(default_factory=TopicDefaults)
    metadata_topics_max: int = 1000  # names in one metadata request
    # replicas of a broker dead this long are re-created elsewhere (a restart is cheaper
    # than a full copy, so wait a few session timeouts first)
    replica_restore_delay_ms: int = 30_000
    max_concurrent_moves: int = 2  # partitions copying a new replica at once
    # Kafka's classic groups (group.initial.rebalance.delay.ms, group.min/max.session...)
    classic_groups: Limits = field(default_factory=Limits)
    # KIP-848 members' session timeout (Kafka's group.consumer.session.timeout.ms, 45 s
    # there; 10 s here, the session Conveyor's own consumers have always had: docs/client.md)
    consumer_session_timeout_ms: int = 10_000
    # share groups (issue 23): partitions of __share_state, made with the first share group
    share_state_partitions: int = 16
    # how the coordinator calls brokers' internal routes (transaction markers, issue 21):
    # their TLS settings and the cluster's identity (None: from the environment)
    internal_tls: TLSConfig | None = None
    cluster_secret: str | None = None

    @property
    def broker_heartbeat_interval_ms(self) -> int:
        """What brokers are told: at most a third of the session timeout, so two lost
        heartbeats in a row do not get a healthy broker declared dead."""
        return max(10, min(self.heartbeat_interval_ms, self.session_timeout_ms // 3))

    @property
    def expiry_check_interval_ms(self) -> int:
        """How often the timer looks for silent brokers: a quarter of the timeout, so a dead
        broker is declared within 1.25 session timeouts, bounded to [20, 500] ms."""
        return max(20, min(500, self.session_timeout_ms // 4))


class CoordinatorService:
    def __init__(self, settings: CoordinatorSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self.metrics = CoordinatorMetrics(
            state=lambda: self.state,
            # a lambda: the groups, which count into these metrics, are made below
            group_members=lambda: self.groups.member_counts(),  # noqa: PLW0108
            heartbeat_interval_ms=settings.broker_heartbeat_interval_ms,
            clock=self._clock,
        )
        self._writer = TransitionWriter(self._check_active, self._applied, self._write_failed)
        self._store: MetadataStore | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self.groups = GroupManager(
            state=lambda: self.state,
            transition=self.transition,
            metrics=self.metrics,
            now_ms=self._clock.now_ms,
            classic_limits=settings.classic_groups,
        )
        # Kafka's group APIs over the same groups and offsets (kafka_http.py's routes)
        self.kafka_groups = KafkaGroups(
            self.groups,
            state=lambda: self.state,
            transition=self.transition,
            now_ms=self._clock.now_ms,
        )
        self.consumer_groups = ConsumerGroups(
            self.groups,
            state=lambda: self.state,
            session_timeout_ms=settings.consumer_session_timeout_ms,
        )
        # share groups (issue 23, docs/queues.md): another group type, its own memberships
        self.share_groups = ShareGroupManager(
            state=lambda: self.state,
            transition=self.transition,
            now_ms=self._clock.now_ms,
            defaults=settings.topic_defaults,
            state_partitions=settings.share_state_partitions,
        )
        # transactions (issue 21): markers go to brokers' internal routes as the cluster
        secret = settings.cluster_secret
        self._broker_http = AsyncHTTP(
            settings.internal_tls, authorization=authorization_header(secret) if secret else None
        )
        self.transactions = TransactionCoordinator(
            state=lambda: self.state,
            transition=self.transition,
            now_ms=self._clock.now_ms,
            groups=self.kafka_groups,
            send_markers=self._send_markers,
            coordinator_epoch=lambda: self.epoch,
        )
        # high availability (leadership.py): the epoch commands carry, the own-clock lease
        # check, what to do when a write fails, and the active coordinator's URL for
        # NOT_COORDINATOR answers while this one is not active
        self.epoch = 0
        self._lease_valid: Callable[[], bool] = _always
        self._on_store_failure: Callable[[ConveyorError], None] | None = None
        self.active_url: str | None = None
        self.standby = False  # set by leadership.py while another coordinator may be active
        self.metrics.role = lambda: (self.active and not self.standby, self.epoch)
        self._decided_ms = 0

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self, run_expiry: bool = True) -> None:
        """The single coordinator: open the SQLite store under ``data_dir`` and activate."""
        store = await SqliteMetadataStore.open(self.settings.data_dir)
        try:
            await self.activate(store, epoch=0, run_expiry=run_expiry)
        except BaseException:
            await store.close()
            raise

    async def activate(
        self,
        store: MetadataStore,
        epoch: int,
        *,
        lease_valid: Callable[[], bool] = lambda: True,
        on_store_failure: Callable[[ConveyorError], None] | None = None,
        run_expiry: bool = True,
    ) -> None:
        """Load the state from ``store`` and start deciding, at ``epoch``; ``lease_valid``
        is asked before every decision (false: NOT_COORDINATOR, nothing decided)."""
        loaded = await store.load()
        self._store, self.epoch, self.standby = store, epoch, False
        self._lease_valid, self._on_store_failure = lease_valid, on_store_failure
        # heartbeat times are soft: brokers get a full session from now to check in again
        self._writer.open(store, core.grant_grace(loaded, self._clock.now_ms()).state)
        self.groups.started(recover=bool(loaded.topics))
        log.info(
            "coordinator state loaded from %s: cluster_id=%s epoch=%d brokers=%d (alive %d) "
            "topics=%d partitions=%d committed_offsets=%d",
            store.location,
            loaded.cluster_id,
            epoch,
            len(loaded.brokers),
            len(loaded.alive_broker_ids()),
            len(loaded.topics),
            len(loaded.partitions),
            len(loaded.offsets),
        )
        if run_expiry:
            self._expiry_task = asyncio.create_task(self._expiry_loop(), name="broker-expiry")
            self._expiry_task.add_done_callback(_report_expiry_exit)
        self.transactions.start()  # completes the prepared transactions just loaded

    async def deactivate(self, reason: str) -> None:
        """Stop deciding now (the lease is lost, or a write failed): pending changes fail
        with NOT_COORDINATOR, the state and group memberships are dropped, the store is
        closed. Whoever is active next reloads everything from the store."""
        self.standby = True
        await self._stop_expiry()
        await self.transactions.stop()
        error = self.not_coordinator(reason)
        await self._writer.abort(error)
        self.groups.reset(error)
        self.consumer_groups.reset()
        self.share_groups.reset()
        store, self._store = self._store, None
        self._lease_valid, self._on_store_failure = _always, None
        if store is not None:
            await store.close()
        log.warning(
            "coordinator no longer active (epoch %d): %s",
            self.epoch,
            reason,
            extra={"ha_event": "inactive", "epoch": self.epoch},
        )

    async def close(self) -> None:
        """Stop the timer, wait for the writes queued, close the store (the last state
        stays readable)."""
        await self._stop_expiry()
        await self.transactions.stop()
        await self._writer.drain()
        await self._broker_http.close()
        store, self._store = self._store, None
        if store is not None:
            await store.close()
        log.info("coordinator store closed")

    async def _stop_expiry(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None

    @property
    def active(self) -> bool:
        return self._writer.state is not None and self._store is not None

    @property
    def state(self) -> ClusterState:
        state = self._writer.state
        if state is None:
            if self.standby:
                raise self.not_coordinator("this coordinator is a standby")
            raise RetriableError("the coordinator is loading its state", code=ErrorCode.NOT_READY)
        return state

    def not_coordinator(self, reason: str) -> RetriableError:
        details: dict[str, Any] = {}
        if self.active_url:
            details["active_url"] = self.active_url
        return RetriableError(
            f"not the active coordinator: {reason}"
            + (f"; the active one is {self.active_url}" if self.active_url else ""),
            code=ErrorCode.NOT_COORDINATOR,
            **details,
        )

    def _check_active(self) -> None:
        if not self._lease_valid():
            raise self.not_coordinator("its lease may have expired (by its own clock)")
        # wall time of the last decision allowed: what the "two active coordinators" check
        # compares with other coordinators' activations (chaos/ha.py)
        self._decided_ms = time.time_ns() // 1_000_000

    # ---- brokers ---------------------------------------------------------------------------

    async def heartbeat(self, heartbeat: BrokerHeartbeat) -> HeartbeatResponse:
        interval_ms = self.settings.broker_heartbeat_interval_ms
        self.share_groups.report(heartbeat.broker_id, heartbeat.share_partitions)
        return await self.transition(
            lambda s: self._stamped(
                core.handle_heartbeat(s, heartbeat, self._clock.now_ms(), interval_ms)
            )
        )

    async def expire_brokers(self) -> None:
        timeout_ms = self.settings.session_timeout_ms
        await self.transition(lambda s: core.expire_brokers(s, self._clock.now_ms(), timeout_ms))

    async def _expiry_loop(self) -> None:
        interval_ms = self.settings.expiry_check_interval_ms
        previous_ms = self._clock.now_ms()
        while True:
            await asyncio.sleep(interval_ms / 1000)
            now_ms = self._clock.now_ms()
            stalled_ms = now_ms - previous_ms - interval_ms
            previous_ms = now_ms
            try:
                if stalled_ms > self.settings.session_timeout_ms // 2:
                    # the brokers' heartbeats may be queued behind the stall: our fault
                    log.warning(
                        "coordinator stalled for %d ms: restarting broker sessions instead "
                        "of expiring them",
                        stalled_ms,
                    )
                    await self.transition(lambda s: core.grant_grace(s, self._clock.now_ms()))
                else:
                    await self.expire_brokers()
                    await self.maintain()
                await self.groups.expire()
                await self.share_groups.expire()
            except ConveyorError as exc:  # e.g. the database write failed: try next tick
                log.error("broker expiry check failed, retrying: %s", exc)

    async def maintain(self) -> None:
        """One level-triggered tick of replica moves and preferred leader elections."""
        delay_ms = self.settings.replica_restore_delay_ms
        moves_max = self.settings.max_concurrent_moves
        await self.transition(
            lambda s: control.maintain(s, self._clock.now_ms(), delay_ms, moves_max)
        )

    async def decommission(self, broker_id: BrokerId) -> DecommissionResponse:
        return await self.transition(lambda s: control.decommission_broker(s, broker_id))

    def decommission_status(self, broker_id: BrokerId) -> DecommissionResponse:
        return control.decommission_status(self.state, broker_id)

    # ---- replication control -----------------------------------------------------------------

    async def alter_isr(self, request: AlterIsrRequest) -> AlterIsrResponse:
        return await self.transition(lambda s: self._stamped(control.alter_isr(s, request)))

    def _stamped(self, result: Result[Command]) -> Result[Command]:
        """A command to a broker carries the epoch it was decided at: brokers refuse one
        older than an epoch they have seen (a deposed coordinator's)."""
        reply = msgspec.structs.replace(result.reply, coordinator_epoch=self.epoch)
        return dataclasses.replace(result, reply=reply)

    async def _send_markers(
        self, broker_url: str, request: TxnMarkersRequest
    ) -> TxnMarkersResponse:
        return await self._broker_http.call(
            "POST", broker_url + MARKERS_PATH, TxnMarkersResponse, body=request
        )

    async def init_producer_id(self, request: InitProducerIdRequest) -> InitProducerIdResponse:
        return await self.transition(lambda s: control.init_producer_id(s, request))

    # ---- topics ----------------------------------------------------------------------------

    async def metadata(self, topics: Sequence[str] | None, auto_create: bool) -> Metadata:
        """Routing data; unknown topics are created with the defaults when the caller asks
        (``auto_create``) and this coordinator allows it, else UNKNOWN_TOPIC."""
        if topics is not None:
            if len(topics) > self.settings.metadata_topics_max:
                raise InvalidRequestError(
                    f"{len(topics)} topics in one metadata request; the limit is "
                    f"{self.settings.metadata_topics_max}"
                )
            for name in topics:
                validate_topic_name(name)
            missing = sorted({n for n in topics if n not in self.state.topics})
            if missing and auto_create and not self.settings.auto_create_topics:
                raise InvalidRequestError(
                    f"unknown topic(s) {missing} (auto-creation is off on this coordinator)",
                    code=ErrorCode.UNKNOWN_TOPIC,
                    topics=missing,
                )
            if missing and auto_create:
                defaults = self.settings.topic_defaults
                await self.transition(
                    lambda s: core.auto_create_topics(s, topics, self._clock.now_ms(), defaults)
                )
        return views.metadata(self.state, topics)

    async def create_topic(self, request: CreateTopicRequest) -> TopicDescription:
        defaults = self.settings.topic_defaults
        return await self.transition(
            lambda s: core.create_topic(s, request, self._clock.now_ms(), defaults)
        )

    async def delete_topic(self, name: str) -> None:
        await self.transition(lambda s: core.delete_topic(s, name))

    async def add_partitions(self, name: str, request: AddPartitionsRequest) -> TopicDescription:
        return await self.transition(lambda s: core.add_partitions(s, name, request))

    async def alter_topic_config(
        self, name: str, request: AlterTopicConfigRequest
    ) -> TopicDescription:
        return await self.transition(lambda s: core.alter_topic_config(s, name, request))

    def list_topics(self) -> TopicList:
        return views.list_topics(self.state)

    def describe_topic(self, name: str) -> TopicDescription:
        return views.describe_topic(self.state, name)

    def cluster_status(self) -> ClusterStatus:
        return views.cluster_status(self.state)

    # ---- committed offsets -----------------------------------------------------------------

    async def commit_offsets(self, group: str, request: OffsetCommitRequest) -> OffsetFetchResponse:
        return await self.groups.commit(group, request)

    def fetch_offsets(self, group: str, topic: str | None) -> OffsetFetchResponse:
        return views.fetch_offsets(self.state, group, topic)

    # ---- the shell's one pattern -----------------------------------------------------------

    async def transition(self, decide: Callable[[ClusterState], Result[T]]) -> T:
        """Queue a decision on the current state; its reply once its durable records are
        in the store and the new state is current (the one way anything changes it;
        GroupManager commits through it). See ``writer.py`` (group commit).

        Shielded: once queued, a change is persisted and applied even if the caller goes
        away (a client disconnect cancels its handler), so memory never lags the store."""
        return await asyncio.shield(self._writer.submit(decide))

    def _applied(self, previous: ClusterState | None, results: list[Result[Any]]) -> None:
        now_ms = self._clock.now_ms()
        for result in results:
            self.metrics.on_transition(previous, result, now_ms)
            previous = result.state
            for decision in result.decisions:
                if self.epoch:  # several coordinators: say which epoch acted (chaos/ha.py)
                    extra = {"ha_event": "action", "epoch": self.epoch}
                    extra["decided_ms"] = self._decided_ms
                    log.info("%s epoch=%d", decision, self.epoch, extra=extra)
                else:
                    log.info("%s", decision)

    def _write_failed(self, error: ConveyorError) -> None:
        log.error("coordinator store write failed: %s", error)
        if self._on_store_failure is not None:
            self._on_store_failure(error)


def _always() -> bool:
    return True


def _report_expiry_exit(task: asyncio.Task[None]) -> None:
    """A bug in the expiry loop must not pass silently: without it no broker is ever
    declared dead and partitions stay on dead leaders."""
    if not task.cancelled() and task.exception() is not None:
        log.critical(
            "broker expiry stopped by a bug; dead brokers will not be detected",
            exc_info=task.exception(),
        )
