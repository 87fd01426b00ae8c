"""The broker's request handling, independent of any transport.

:class:`BrokerService` takes decoded requests and returns wire types or raises typed
:class:`ConveyorError`; HTTP (``http.py``) and the Kafka listener (``kafka/``) are
adapters over the same operations. Error precedence for a partition request: invalid
input (400) before the partition lookup (404 unknown topic or partition, 421 not leader,
503 leader not available), before the write. Nothing is written when a request fails
before ``append``.

Every decision about a replica (may it take this write, what is acknowledged, what may a
consumer see) is the broker core's (``core.py``, pure); the service asks it, does the
I/O (the log append and read), tells it what happened (``LeaderAppended``) and waits for
its answers (``AnswerProduce``) through the :class:`CoreDriver`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from conveyor.broker import core
from conveyor.broker import producers as producer_state
from conveyor.broker.config import BrokerConfig, coordinators_of
from conveyor.broker.coordinator_txn import CoordinatorTransactions
from conveyor.broker.corestate import CoreConfig
from conveyor.broker.driver import CoreDriver
from conveyor.broker.fetchmemory import FetchMemory
from conveyor.broker.heartbeat import HeartbeatLink
from conveyor.broker.jsonrecords import build_batch
from conveyor.broker.metadata import MetadataCache
from conveyor.broker.metrics import BrokerMetrics
from conveyor.broker.peers import Peers
from conveyor.broker.reconcile import check_cluster_id
from conveyor.broker.replica import Replica, check_produce
from conveyor.broker.replica_server import ReplicaServer
from conveyor.broker.replicas import ReplicaManager, facts, load_meta, store_meta
from conveyor.broker.router import Router
from conveyor.broker.rules import check_offset, clamp, coordinator_epoch_after
from conveyor.broker.security import refresh_security
from conveyor.broker.share.setup import LeaderOps, build_share
from conveyor.broker.timelookup import first_record_at, max_timestamp_record
from conveyor.broker.txn_verify import TxnVerifier, transactional_data
from conveyor.broker.wakeup import wait_any
from conveyor.protocol.errors import (
    BatchTooLargeError,
    ConveyorError,
    DiskFullError,
    ErrorCode,
    InvalidRequestError,
    RetriableError,
)
from conveyor.protocol.messages import (
    Acks,
    BrokerDataMeta,
    BrokerHeartbeat,
    BrokerId,
    DeletedRecords,
    Epoch,
    HeartbeatResponse,
    HostedPartition,
    HostedPartitions,
    JsonProduceRequest,
    Offset,
    PartitionOffsets,
    ProduceResponse,
    RoutedProduceResponse,
)
from conveyor.protocol.recordfilter import require_keys
from conveyor.protocol.replica import (
    AppendFailed,
    DeleteRecordsArrived,
    HeartbeatAnswered,
    LeaderAppended,
    Producers,
    ProducerWrite,
    RetryArrived,
    ShuttingDown,
    TopicPartition,
)
from conveyor.protocol.topics import validate_topic_name
from conveyor.storage import Flusher, PartitionLog
from conveyor.storage.cleaner import LogCleaner
from conveyor.storage.txnindex import AbortedTxn
from conveyor.transport.auth import BrokerSecurity
from conveyor.transport.client import AsyncHTTP
from conveyor.transport.clock import Clock, SystemClock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FetchResult:
    batches: bytes
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    leader_epoch: int
    last_stable_offset: int = -1
    aborted: tuple[AbortedTxn, ...] = ()  # read_committed: aborted transactions in range


@dataclass(frozen=True, slots=True)
class LeaderView:
    """A partition this broker led when looked up: the core's view and its log."""

    tp: TopicPartition
    replica: Replica
    log: PartitionLog

    @property
    def leader_epoch(self) -> int:
        return self.replica.leader_epoch

    @property
    def high_watermark(self) -> int:
        return self.replica.high_watermark

    @property
    def producers(self) -> Producers:
        return self.replica.producers

    def open_transactions(self) -> dict[int, int]:
        """Producer id -> the first offset of its open transaction (DescribeProducers)."""
        return self.log.open_transactions()


class BrokerService:
    def __init__(
        self, config: BrokerConfig, http: AsyncHTTP | None = None, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.broker_id: BrokerId = config.broker_id
        self.clock = clock or SystemClock()
        # This process's id in heartbeats: a restart is a new incarnation (see coordinator).
        self.incarnation = uuid.uuid4().hex
        # HOST:PORT of the Kafka listener, reported in heartbeats: set once it is bound
        # (its port may be one the OS picked); None: no listener (kafka_listen = off)
        self.kafka_address: str | None = None
        self.http = http or AsyncHTTP(
            config.tls, limit=config.forward_connections_max, coordinators=coordinators_of(config)
        )
        self.coordinator_epoch = 0  # the newest coordinator epoch seen (in memory only)
        self.security = BrokerSecurity()  # the coordinator's users, tokens, ACLs (auth on)
        self.fetch_memory = FetchMemory(config.fetch_memory_max_bytes)
        # One cleaner thread for every compacted log this broker hosts, leader or follower
        # (followers compact on their own, as in Kafka; offsets never change).
        self.cleaner = LogCleaner(config.cleaner)
        self.metrics = BrokerMetrics(
            # a lambda: the views read the driver, which needs these metrics, made below
            view=lambda: self.partition_views(),  # noqa: PLW0108
            fetch_memory=self.fetch_memory,
            cleaner=self.cleaner,
            data_dir=config.data_dir,
            clock=self.clock,
        )
        self.flusher = Flusher(
            threads=config.flusher_threads,
            on_flush=self.metrics.flushed,
            on_round=self.metrics.flush_round,
            on_inline=self.metrics.flush_rounds_inline.inc,
        )
        self.replicas = ReplicaManager(
            config.broker_id,
            config.data_dir,
            self.flusher,
            config.flush_override,
            cleaner=self.cleaner,
        )
        self.metadata = MetadataCache(
            self.http,
            config.coordinator_url,
            clock_ms=self.clock.now_ms,
            refresh_ms_min=config.metadata_refresh_ms_min,
            max_age_ms=config.metadata_max_age_ms,
        )
        self.driver = CoreDriver(
            CoreConfig(
                broker_id=config.broker_id,
                replica_lag_time_max_ms=config.replica_lag_time_max_ms,
                replica_fetch_max_wait_ms=config.replica_fetch_max_wait_ms,
                replica_fetch_partition_max_bytes=config.replica_fetch_partition_max_bytes,
                replica_fetch_max_bytes=config.replica_fetch_max_bytes,
                flush_override=config.flush_override,
            ),
            clock=self.clock,
            storage=self.replicas,
            peers=Peers(
                self.http,
                lambda: self.config.coordinator_url,
                self.metadata.leader_url,
                self.accept_coordinator_epoch,
                broker_id=config.broker_id,
                tls=config.tls,
                cluster_secret=config.cluster_secret,
            ),
            on_isr_changed=self.metrics.isr_changed,
        )
        self.replica_server = ReplicaServer(self.driver, self.replicas)
        # KIP-890 part 1: transactional appends only to partitions in the producer's
        # ongoing transaction, as the transaction coordinator says
        self.txn_verifier = TxnVerifier(
            CoordinatorTransactions(self.http, config.coordinator_url).verify
        )
        self.router = Router(
            broker_id=config.broker_id,
            metadata=self.metadata,
            http=self.http,
            leads=self._leads,
            produce_json=self.produce_json,
            clock=self.clock,
        )
        self.meta = BrokerDataMeta(broker_id=config.broker_id)
        self.heartbeat_interval_ms = config.heartbeat_interval_ms
        self.stopping = False
        # share groups (issue 23, docs/queues.md): narrow dependencies, no service object
        self.share = build_share(
            ops=LeaderOps(
                replica=lambda tp: self.driver.state.replicas.get(tp),  # noqa: PLW0108 -- state is replaced
                log=self.replicas.get,
                wakeup=self.driver.wakeup,
                leader_partition=self.leader_partition,
                produce=self._produce_last_offset,
            ),
            metadata=self.metadata,
            http=self.http,
            coordinator_url=config.coordinator_url,
            clock=self.clock,
            metrics=self.metrics.share,
            stopping=lambda: self.stopping,
        )

    # ---- lifetime ------------------------------------------------------------------------

    def check_data_dir(self) -> None:
        """Fast and synchronous, so a wrong data dir stops the broker before it listens."""
        self.meta = load_meta(self.config.data_dir, self.broker_id)

    async def start(self) -> None:
        """Reopen the replicas on disk (before the first heartbeat) and start the core."""
        opened = await self.replicas.load_existing()
        self.cleaner.start()
        self.driver.start()
        for event in opened:
            self.driver.step(event)

    def begin_shutdown(self) -> None:
        """Stop waiting: long-polls answer with what they have, so in-flight requests end
        well within the shutdown timeout."""
        self.stopping = True
        self.driver.step(ShuttingDown())

    async def close(self) -> None:
        self.stopping = True
        await self.driver.close()
        await self.replicas.close_all()
        await asyncio.to_thread(self.flusher.close)
        await self.http.close()

    # ---- heartbeats ------------------------------------------------------------------------

    async def refresh_round(self) -> None:
        """After each heartbeat: the security state, and the data dir's free space for
        ``/metrics`` (measured in a thread: ``statvfs`` can block)."""
        await self.refresh_security()
        await self.metrics.measure_disk()

    async def refresh_security(self) -> None:
        """The coordinator's users, tokens and ACLs, when auth is on (``security.py``)."""
        # the staleness bound is never under three heartbeat intervals
        self.security.interval_ms = self.heartbeat_interval_ms
        await refresh_security(
            self.security,
            self.http,
            self.config.coordinator_url,
            self.config.heartbeat_timeout_ms / 1000,
        )

    async def send_heartbeat(self, heartbeat: BrokerHeartbeat) -> HeartbeatResponse:
        url = f"{self.config.coordinator_url.rstrip('/')}/v1/brokers/heartbeat"
        timeout_s = self.config.heartbeat_timeout_ms / 1000
        return await self.http.call(
            "POST", url, HeartbeatResponse, body=heartbeat, timeout_s=timeout_s
        )

    def heartbeat_link(self) -> HeartbeatLink:
        """What the heartbeat loop needs of this service, and nothing more."""
        return HeartbeatLink(
            report=self.heartbeat,
            send=self.send_heartbeat,
            apply=self.apply_heartbeat_response,
            refresh=self.refresh_round,
            interval_ms=lambda: self.heartbeat_interval_ms,
            stopping=lambda: self.stopping,
            broker_id=self.broker_id,
            coordinator=self.config.coordinator_url,
            max_backoff_ms=self.config.heartbeat_max_backoff_ms,
        )

    def heartbeat(self) -> BrokerHeartbeat:
        """What this broker tells the coordinator: where it is and what it hosts."""
        return BrokerHeartbeat(
            broker_id=self.broker_id,
            url=self.config.advertised_url,
            partitions=core.reports(self.driver.state),
            incarnation=self.incarnation,
            kafka_address=self.kafka_address,
            share_partitions=self.share.manager.stats() or None,
        )

    async def apply_heartbeat_response(self, response: HeartbeatResponse) -> bool:
        """Reconcile toward the response; False when it belongs to another cluster."""
        problem = check_cluster_id(self.meta.cluster_id, response.cluster_id)
        if problem is not None:
            log.error("%s", problem)
            return False
        if not self.accept_coordinator_epoch(response.coordinator_epoch, "heartbeat answer"):
            return False
        if self.meta.cluster_id is None:
            self.meta = BrokerDataMeta(broker_id=self.broker_id, cluster_id=response.cluster_id)
            await asyncio.to_thread(store_meta, self.config.data_dir, self.meta)
        self.metadata.update_brokers(response.brokers)
        self.heartbeat_interval_ms = response.heartbeat_interval_ms
        self.driver.step(HeartbeatAnswered(response=response))
        await self.driver.settle()  # the opens and deletes it asked for are done
        return True

    def accept_coordinator_epoch(self, epoch: int, what: str) -> bool:
        """Whether a command from a coordinator at ``epoch`` may be applied: not when a
        newer coordinator has spoken (``rules.coordinator_epoch_after``)."""
        after = coordinator_epoch_after(self.coordinator_epoch, epoch)
        if after is None:
            log.warning(
                "refused a %s from coordinator epoch %d: epoch %d is newer (a deposed coordinator)",
                what,
                epoch,
                self.coordinator_epoch,
            )
            return False
        if after != self.coordinator_epoch:
            log.info("coordinator epoch %d -> %d", self.coordinator_epoch, after)
        self.coordinator_epoch = after
        return True

    # ---- finding the partition -----------------------------------------------------------

    def _leads(self, tp: TopicPartition) -> bool:
        replica = self.driver.state.replicas.get(tp)
        return replica is not None and replica.is_leader

    async def leader_partition(
        self, topic: str, partition: int, leader_epoch: int | None = None
    ) -> LeaderView:
        """The partition if this broker leads it, else the right typed error."""
        validate_topic_name(topic)
        tp = TopicPartition(topic, partition)
        replica = self.driver.state.replicas.get(tp)
        partition_log = self.replicas.get(tp)
        if replica is not None and replica.is_leader and partition_log is not None:
            core.check_client_epoch(replica, leader_epoch)
            return LeaderView(tp, replica, partition_log)
        raise await self._not_leader(topic, partition, replica)

    async def _not_leader(self, topic: str, partition: int, hosted: Replica | None) -> Exception:
        if hosted is not None and hosted.state.leader is not None:
            leader = hosted.state.leader
            return _not_leader_error(
                topic, partition, leader, self.metadata.leader_url(leader), hosted.leader_epoch
            )
        try:
            description = await self.metadata.topic(topic, force=True)
        except ConveyorError as exc:
            # DEBUG: the heartbeat loop already warns that the coordinator is unreachable.
            log.debug("topic %s: metadata unavailable: %s", topic, exc)
            return _not_leader_error(topic, partition, None, None, None)
        if description is None:
            return InvalidRequestError(
                f"unknown topic {topic!r}", code=ErrorCode.UNKNOWN_TOPIC, topic=topic
            )
        info = next((p for p in description.partitions if p.partition == partition), None)
        if info is None:
            return InvalidRequestError(
                f"topic {topic!r} has no partition {partition} "
                f"(it has {len(description.partitions)})",
                code=ErrorCode.UNKNOWN_PARTITION,
                topic=topic,
                partition=partition,
                partition_count=len(description.partitions),
            )
        if info.leader is None or info.leader == self.broker_id:
            # No leader, or this broker about to lead but not yet reconciled: both heal.
            return RetriableError(
                f"partition {topic}-{partition} has no leader serving yet",
                code=ErrorCode.LEADER_NOT_AVAILABLE,
            )
        url = self.metadata.leader_url(info.leader, info.leader_url)
        return _not_leader_error(topic, partition, info.leader, url, info.leader_epoch)

    # ---- produce -------------------------------------------------------------------------

    async def produce(
        self,
        topic: str,
        partition: int,
        batches: bytes | memoryview,
        *,
        acks: Acks = "all",
        timeout_ms: int = 30_000,
        leader_epoch: int | None = None,
        control: bool = False,
    ) -> ProduceResponse:
        """Append one or more concatenated batches as received (never decoded).

        acks ``0`` and ``1`` answer once appended (HTTP always answers, so ``0`` still
        returns offsets); ``all`` once the high watermark covers the batches. Control
        batches (transaction markers) only with ``control`` (``txn_markers.py``)."""
        acknowledged = await self.produce_appended(
            topic,
            partition,
            batches,
            acks=acks,
            timeout_ms=timeout_ms,
            leader_epoch=leader_epoch,
            control=control,
        )
        return await acknowledged

    async def produce_appended(
        self,
        topic: str,
        partition: int,
        batches: bytes | memoryview,
        *,
        acks: Acks = "all",
        timeout_ms: int = 30_000,
        leader_epoch: int | None = None,
        control: bool = False,
    ) -> Coroutine[Any, Any, ProduceResponse]:
        """:meth:`produce` up to the append: returns once the batches are in the log (or a
        retry's original is found), with the wait for their acknowledgement, to be awaited.
        Awaited directly it runs without suspending up to the append, unless it must ask
        the coordinator (a partition not led here, a transaction to verify): so the Kafka
        handler appends a request's partitions in order before the connection's next
        request starts (``broker/kafka/produce.py``)."""
        timeout_ms = clamp(timeout_ms, 0, self.config.produce_max_timeout_ms)
        target = await self.leader_partition(topic, partition, leader_epoch)
        tp = target.tp
        idempotent = producer_state.idempotent_write(batches)
        write = None
        if idempotent is not None:
            write, size_bytes = idempotent
            if size_bytes != len(batches):
                raise InvalidRequestError(
                    "a batch with a producer id must be the only batch of its request"
                )
        txn_write = write if write is not None and transactional_data(batches) else None
        if txn_write is not None and not self._open_or_verified(target, txn_write):
            await self.txn_verifier.verify(tp, txn_write, target.leader_epoch)
            target = await self.leader_partition(topic, partition, leader_epoch)
        duplicate = check_produce(target.replica, acks, write)
        if duplicate is None and txn_write is not None:  # no await from here to the append
            open_here = target.log.in_transaction(txn_write.producer_id)
            self.txn_verifier.admit(tp, txn_write, target.leader_epoch, open_here)
        if duplicate is None and target.log.config.compacted:
            require_keys(batches)
        ack_id, acked = self.driver.new_ack() if acks == "all" else (None, None)
        deadline_ms = self.clock.now_ms() + timeout_ms
        base: int
        last: int
        try:
            if duplicate is not None:
                # A retry: answered with the original's offsets, once they are acknowledged.
                base, last = duplicate.base_offset, duplicate.last_offset
                if ack_id is not None:
                    retry = RetryArrived(
                        tp=tp, last_offset=Offset(last), ack_id=ack_id, deadline_ms=deadline_ms
                    )
                    self.driver.step(retry)
            else:
                base, last = self._append(
                    target, batches, write, ack_id, deadline_ms, control=control
                )
                if control and write is not None:  # a marker: the transaction ended here
                    self.txn_verifier.ended(tp, write.producer_id)
        except BaseException:
            if ack_id is not None:
                self.driver.forget_ack(ack_id)
            raise
        return self._acknowledged(target, base, last, ack_id, acked)

    async def _acknowledged(
        self,
        target: LeaderView,
        base: int,
        last: int,
        ack_id: int | None,
        acked: asyncio.Future[None] | None,
    ) -> ProduceResponse:
        # (never awaited, e.g. its request cancelled: the driver drops the ack when it
        # answers it or at its deadline)
        try:
            if acked is not None:
                await acked
        finally:
            if ack_id is not None:
                self.driver.forget_ack(ack_id)
        return self._produced(target, base, last)

    def _open_or_verified(self, target: LeaderView, write: ProducerWrite) -> bool:
        return target.log.in_transaction(write.producer_id) or self.txn_verifier.verified(
            target.tp, write, target.leader_epoch
        )

    def txn_partitions_added(
        self, producer_id: int, producer_epoch: int, partitions: list[tuple[str, int]]
    ) -> None:
        """A forwarded AddPartitionsToTxn succeeded: the partitions this broker leads need
        no verification of that producer's batches (``txn_verify.py``)."""
        for topic, partition in partitions:
            tp = TopicPartition(topic, partition)
            replica = self.driver.state.replicas.get(tp)
            if replica is not None and replica.is_leader:
                self.txn_verifier.learn(tp, producer_id, producer_epoch, replica.leader_epoch)

    def _append(
        self,
        target: LeaderView,
        batches: bytes | memoryview,
        write: ProducerWrite | None,
        ack_id: int | None,
        deadline_ms: int,
        *,
        control: bool = False,
    ) -> tuple[int, int]:
        """The leader's append, then the core learns of it (and of the ack it waits for)."""
        try:
            result = target.log.append(
                batches, leader_epoch=target.leader_epoch, allow_control=control
            )
        except DiskFullError as exc:
            self.driver.step(AppendFailed(tp=target.tp, error=exc, disk_full=True))
            raise
        except BatchTooLargeError as exc:  # say which topic's limit, and how to raise it
            raise BatchTooLargeError(
                f"topic {target.tp.topic!r}: {exc.message}", **exc.details
            ) from None
        self.metrics.produced(target.tp.topic, target.tp.partition, batches)
        self.driver.step(
            LeaderAppended(
                tp=target.tp,
                log=facts(target.log),
                base_offset=Offset(result.base_offset),
                last_offset=Offset(result.last_offset),
                producer=write,
                ack_id=ack_id,
                deadline_ms=deadline_ms,
            )
        )
        return result.base_offset, result.last_offset

    def _produced(self, target: LeaderView, base: int, last: int) -> ProduceResponse:
        return ProduceResponse(
            topic=target.tp.topic,
            partition=target.tp.partition,
            base_offset=base,
            last_offset=last,
            leader_epoch=Epoch(target.leader_epoch),
            log_start_offset=target.log.log_start_offset,
        )

    async def _produce_last_offset(self, topic: str, partition: int, batch: bytes) -> int:
        """An acks=all produce answering its last offset (the share-state store's append)."""
        return (await self.produce(topic, partition, batch)).last_offset

    async def produce_json(
        self,
        topic: str,
        partition: int,
        request: JsonProduceRequest,
        *,
        acks: Acks = "all",
        timeout_ms: int = 30_000,
        leader_epoch: int | None = None,
    ) -> ProduceResponse:
        """JSON records, encoded here into one batch (the only produce path that encodes)."""
        await self.leader_partition(topic, partition, leader_epoch)  # fail before encoding
        batch = build_batch(request.records)
        return await self.produce(
            topic, partition, batch, acks=acks, timeout_ms=timeout_ms, leader_epoch=leader_epoch
        )

    async def route_json(
        self,
        topic: str,
        request: JsonProduceRequest,
        *,
        acks: Acks = "all",
        timeout_ms: int = 30_000,
    ) -> RoutedProduceResponse:
        """Each record to its partition's leader (here or forwarded): ``router.py``."""
        return await self.router.route(topic, request, acks=acks, timeout_ms=timeout_ms)

    # ---- fetch and offsets ---------------------------------------------------------------

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int = 1024 * 1024,
        max_wait_ms: int = 0,
        leader_epoch: int | None = None,
        read_committed: bool = False,
    ) -> FetchResult:
        """Whole batches from the one holding ``offset``, only below the high watermark
        (``read_committed``: below the last stable offset, with the aborted transactions
        in that range); waits up to ``max_wait_ms`` for one when none is there yet. The
        answer's bytes are held in ``fetch_memory`` until the caller calls
        ``fetch_memory.release`` once it has written them (see ``fetchmemory``)."""
        check_offset(offset)
        if max_bytes < 1 or max_wait_ms < 0:
            raise InvalidRequestError("max_bytes must be >= 1 and max_wait_ms >= 0")
        max_bytes = min(max_bytes, self.config.fetch_max_bytes)
        wait_s = min(max_wait_ms, self.config.fetch_max_wait_ms) / 1000
        source = await self.leader_partition(topic, partition, leader_epoch)
        deadline_ms = self.clock.now_ms() + wait_s * 1000
        while True:
            woken = self.driver.wakeup(source.tp)  # before reading: no wake-up is missed
            granted = self.fetch_memory.grant(max_bytes)
            stable = source.log.last_stable_offset(source.high_watermark)
            upper = stable if read_committed else source.high_watermark
            data = source.log.read(offset, granted, upper_offset=upper)
            remaining = (deadline_ms - self.clock.now_ms()) / 1000
            if data or remaining <= 0 or self.stopping:
                break
            await wait_any((woken,), remaining)
            source = await self.leader_partition(topic, partition, leader_epoch)
        aborted: list[AbortedTxn] = []
        if read_committed and data:  # before hold(): nothing to release if cancelled here
            in_memory = source.log.aborted_in_memory(offset, upper)
            if in_memory is None:  # a segment's aborted-transaction index to read: not here
                in_memory = await asyncio.to_thread(source.log.aborted_in, offset, upper)
            aborted = in_memory
        self.fetch_memory.hold(len(data), wanted=max_bytes, granted=granted)
        self.metrics.fetched(topic, partition, data)
        return FetchResult(
            batches=data,
            high_watermark=source.high_watermark,
            log_start_offset=source.log.log_start_offset,
            log_end_offset=source.log.log_end_offset,
            leader_epoch=source.leader_epoch,
            last_stable_offset=stable,
            aborted=tuple(aborted),
        )

    def fetch_wakeup(self, topic: str, partition: int) -> asyncio.Future[None] | None:
        """The wake-up of a partition this broker holds (None for any other), resolved at
        its next change: a long-poll takes it before reading (``broker/wakeup.py``)."""
        tp = TopicPartition(topic, partition)
        if tp not in self.driver.state.replicas:
            return None
        return self.driver.wakeup(tp)

    async def offsets(
        self, topic: str, partition: int, timestamp_ms: int | None = None
    ) -> PartitionOffsets:
        source = await self.leader_partition(topic, partition)
        found: tuple[int, int] | None = None
        if timestamp_ms is not None:
            found = first_record_at(source.log, timestamp_ms, source.high_watermark)
        return PartitionOffsets(
            topic=topic,
            partition=partition,
            leader_epoch=Epoch(source.leader_epoch),
            log_start_offset=source.log.log_start_offset,
            high_watermark=source.high_watermark,
            log_end_offset=source.log.log_end_offset,
            last_stable_offset=source.log.last_stable_offset(source.high_watermark),
            offset_for_timestamp=None if found is None else found[0],
            timestamp_found_ms=None if found is None else found[1],
        )

    async def max_timestamp(self, topic: str, partition: int) -> tuple[int, int] | None:
        """(largest record timestamp visible to consumers, its offset), None when there is
        none (Kafka's ListOffsets MAX_TIMESTAMP, KIP-734)."""
        source = await self.leader_partition(topic, partition)
        return max_timestamp_record(source.log, source.high_watermark)

    async def epoch_end(
        self, topic: str, partition: int, epoch: int, leader_epoch: int | None = None
    ) -> tuple[int, int]:
        """(largest epoch <= ``epoch`` in the leader's log, where it ends): a consumer's
        check for truncation after a leader change (Kafka's OffsetForLeaderEpoch, KIP-320);
        (-1, -1) when the log knows no epoch that old. Fenced by ``leader_epoch``."""
        source = await self.leader_partition(topic, partition, leader_epoch)
        return source.log.end_offset_for_epoch(epoch)

    def led_partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic`` this broker leads now."""
        return sorted(
            tp.partition
            for tp, replica in self.driver.state.replicas.items()
            if tp.topic == topic and replica.is_leader
        )

    async def delete_records(
        self, topic: str, partition: int, offset: int, *, timeout_ms: int = 30_000
    ) -> DeletedRecords:
        """Delete the records below ``offset`` (-1: the high watermark), Kafka's
        DeleteRecords: the leader's log start moves there at once, and the answer comes
        once every in-sync replica's has (its ``low_watermark``), or REQUEST_TIMED_OUT.
        The rules (leader only, up to the high watermark, not on a compact-only topic)
        are the core's (``trim.py``)."""
        if offset < -1:
            raise InvalidRequestError(
                f"offset must be >= 0 (or -1 for the high watermark), not {offset}",
                code=ErrorCode.OFFSET_OUT_OF_RANGE,
                offset=offset,
            )
        timeout_ms = clamp(timeout_ms, 0, self.config.produce_max_timeout_ms)
        target = await self.leader_partition(topic, partition)
        trim_id, done = self.driver.new_trim()
        deadline_ms = self.clock.now_ms() + timeout_ms
        try:
            self.driver.step(
                DeleteRecordsArrived(
                    tp=target.tp, offset=offset, trim_id=trim_id, deadline_ms=deadline_ms
                )
            )
            low_watermark = await done
        finally:
            self.driver.forget_trim(trim_id)
        return DeletedRecords(topic=topic, partition=partition, low_watermark=low_watermark)

    def partition_views(self) -> list[tuple[Replica, PartitionLog]]:
        """Each hosted replica with its open log (metrics and descriptions read these)."""
        replicas = self.driver.state.replicas
        views = []
        for tp in sorted(replicas):
            partition_log = self.replicas.get(tp)
            if partition_log is not None:
                views.append((replicas[tp], partition_log))
        return views

    def hosted(self) -> HostedPartitions:
        return HostedPartitions(
            broker_id=self.broker_id,
            partitions=[
                HostedPartition(
                    topic=replica.tp.topic,
                    partition=replica.tp.partition,
                    role=replica.role,
                    leader_epoch=Epoch(replica.leader_epoch),
                    log_start_offset=partition_log.log_start_offset,
                    log_end_offset=partition_log.log_end_offset,
                    high_watermark=replica.high_watermark,
                    size_bytes=partition_log.size_bytes,
                )
                for replica, partition_log in self.partition_views()
            ],
        )

    async def retention_loop(self) -> None:
        """Delete expired segments every ``retention_check_interval_ms``, in a thread."""
        interval_s = self.config.retention_check_interval_ms / 1000
        while not self.stopping:
            await asyncio.sleep(interval_s)
            for event in await self.replicas.apply_retention():
                self.driver.step(event)


def _not_leader_error(
    topic: str, partition: int, leader: BrokerId | None, url: str | None, epoch: int | None
) -> RetriableError:
    details: dict[str, object] = {"topic": topic, "partition": partition}
    if leader is not None:
        details["leader"] = leader
    if url is not None:
        details["leader_url"] = url
    if epoch is not None and epoch >= 0:
        details["leader_epoch"] = epoch
    where = f"; the leader is broker {leader} at {url}" if leader is not None else ""
    return RetriableError(
        f"this broker does not lead {topic}-{partition}{where}",
        code=ErrorCode.NOT_LEADER,
        **details,
    )
