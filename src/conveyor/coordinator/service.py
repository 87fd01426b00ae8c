"""The coordinator service: the I/O shell around the pure decisions. No HTTP here.

It owns the current :class:`ClusterState`, the SQLite store, the clock and the broker
expiry timer. Each mutating call runs one decision from ``state.py`` under a lock, writes
its durable records to SQLite (on a single worker thread, so the event loop never waits
for an fsync), and only then makes the new state current and logs the decisions with
their reasons. Reads use the current state without the lock: it is an immutable snapshot.

Lock order: there is one lock (``_lock``); the store thread takes none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from conveyor.coordinator import control, views
from conveyor.coordinator import state as core
from conveyor.coordinator.group_service import GroupManager
from conveyor.coordinator.metrics import CoordinatorMetrics
from conveyor.coordinator.model import ClusterState
from conveyor.coordinator.state import Result, TopicDefaults
from conveyor.coordinator.store import CoordinatorStore
from conveyor.coordinator.validation import validate_topic_name
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
from conveyor.transport.clock import Clock, SystemClock

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        self._lock = asyncio.Lock()
        # one thread: sqlite connections belong to the thread that made them
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coordinator-db")
        self._store: CoordinatorStore | None = None
        self._state: ClusterState | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self.groups = GroupManager(
            state=lambda: self.state,
            transition=self.transition,
            metrics=self.metrics,
            now_ms=self._clock.now_ms,
        )

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self, run_expiry: bool = True) -> None:
        """Open the store, load and check the state, start the expiry timer."""
        store = await self._in_store_thread(CoordinatorStore.open, self.settings.data_dir)
        self._store = store
        loaded = await self._in_store_thread(store.load)
        # heartbeat times are soft: brokers get a full session from now to check in again
        self._state = core.grant_grace(loaded, self._clock.now_ms()).state
        self.groups.started(recover=bool(loaded.topics))
        alive = len(loaded.alive_broker_ids())
        log.info(
            "coordinator state loaded from %s: cluster_id=%s brokers=%d (alive %d) topics=%d "
            "partitions=%d committed_offsets=%d",
            store.path,
            loaded.cluster_id,
            len(loaded.brokers),
            alive,
            len(loaded.topics),
            len(loaded.partitions),
            len(loaded.offsets),
        )
        if run_expiry:
            self._expiry_task = asyncio.create_task(self._expiry_loop(), name="broker-expiry")
            self._expiry_task.add_done_callback(_report_expiry_exit)

    async def close(self) -> None:
        """Stop the timer, wait for the write in progress, close the database."""
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        async with self._lock:  # a transition being persisted finishes first
            if self._store is not None:
                await self._in_store_thread(self._store.close)
                self._store = None
        self._executor.shutdown(wait=True)
        log.info("coordinator store closed")

    @property
    def state(self) -> ClusterState:
        if self._state is None:
            raise RetriableError("the coordinator is loading its state", code=ErrorCode.NOT_READY)
        return self._state

    # ---- brokers ---------------------------------------------------------------------------

    async def heartbeat(self, heartbeat: BrokerHeartbeat) -> HeartbeatResponse:
        interval_ms = self.settings.broker_heartbeat_interval_ms
        return await self.transition(
            lambda s: core.handle_heartbeat(s, heartbeat, self._clock.now_ms(), interval_ms)
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
        return await self.transition(lambda s: control.alter_isr(s, request))

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
        """Decide on the current state, persist the durable records, then make the new
        state current (the one way anything changes it; GroupManager commits through it).

        Shielded: once decided, a change is persisted and applied even if the caller goes
        away (a client disconnect cancels its handler), so memory never lags the disk."""
        return await asyncio.shield(self._decide_persist_apply(decide))

    async def _decide_persist_apply(self, decide: Callable[[ClusterState], Result[T]]) -> T:
        async with self._lock:
            result = decide(self.state)  # a typed error here means nothing changed
            durable = result.durable_records
            if durable:
                store = self._store
                if store is None:
                    raise RetriableError("the coordinator is stopping", code=ErrorCode.NOT_READY)
                await self._in_store_thread(store.write, durable)
            previous, self._state = self._state, result.state
            self.metrics.on_transition(previous, result, self._clock.now_ms())
        for decision in result.decisions:
            log.info("%s", decision)
        return result.reply

    async def _in_store_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _report_expiry_exit(task: asyncio.Task[None]) -> None:
    """A bug in the expiry loop must not pass silently: without it no broker is ever
    declared dead and partitions stay on dead leaders."""
    if not task.cancelled() and task.exception() is not None:
        log.critical(
            "broker expiry stopped by a bug; dead brokers will not be detected",
            exc_info=task.exception(),
        )
