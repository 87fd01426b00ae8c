"""The broker's request handling, independent of any transport.

:class:`BrokerService` takes decoded requests and returns wire types or raises typed
:class:`ConveyorError`; HTTP (``http.py``) is one adapter, a Kafka-protocol TCP listener is
planned as another. Error precedence for a partition request: invalid input (400) before
the partition lookup (404 unknown topic or partition, 421 not leader, 503 leader not
available), before the write. Nothing is written when a request fails before ``append``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass

from conveyor.broker.config import BrokerConfig, coordinators_of
from conveyor.broker.fetcher import ReplicaFetchers
from conveyor.broker.fetchmemory import FetchMemory
from conveyor.broker.jsonrecords import build_batch
from conveyor.broker.metadata import MetadataCache
from conveyor.broker.metrics import BrokerMetrics
from conveyor.broker.partition import Partition
from conveyor.broker.reconcile import TopicPartition, check_cluster_id, reconcile
from conveyor.broker.replicas import ReplicaManager, load_meta, store_meta
from conveyor.broker.replication import LeaderReplication
from conveyor.broker.routing import group_by_partition, partitions_for, unkeyed_count
from conveyor.broker.rules import check_offset, clamp, coordinator_epoch_after
from conveyor.protocol.backoff import BELOW, backoff_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    Acks,
    BrokerDataMeta,
    BrokerId,
    Epoch,
    ErrorBody,
    HeartbeatResponse,
    HostedPartitions,
    JsonProduceRequest,
    JsonRecord,
    PartitionOffsets,
    ProduceResponse,
    RoutedProduceResponse,
    RoutedRecordResult,
)
from conveyor.protocol.recordfilter import require_keys
from conveyor.protocol.records import decode_batches
from conveyor.protocol.topics import validate_topic_name
from conveyor.storage import Flusher
from conveyor.storage.cleaner import LogCleaner
from conveyor.transport.auth import BrokerSecurity
from conveyor.transport.client import AsyncHTTP

log = logging.getLogger(__name__)

# Forwarded produces get this much longer than the produce's own timeout, so the leader's
# REQUEST_TIMED_OUT arrives before our connection gives up.
_FORWARD_MARGIN_S = 5.0
_ROUTE_ATTEMPTS_MAX = 8  # the routing endpoint's retries per partition (about 5 s)
_LEADER_MOVED = frozenset(
    (ErrorCode.NOT_LEADER, ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.NETWORK_ERROR)
)


@dataclass(frozen=True, slots=True)
class FetchResult:
    batches: bytes
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    leader_epoch: int


class BrokerService:
    def __init__(self, config: BrokerConfig, http: AsyncHTTP | None = None) -> None:
        self.config = config
        self.broker_id: BrokerId = config.broker_id
        # This process's id in heartbeats: a restart is a new incarnation (see coordinator).
        self.incarnation = uuid.uuid4().hex
        self.http = http or AsyncHTTP(
            config.tls, limit=config.forward_connections_max, coordinators=coordinators_of(config)
        )
        self.security = BrokerSecurity()  # the coordinator's users, tokens, ACLs (auth on)
        self.flusher = Flusher(threads=config.flusher_threads)
        # One cleaner thread for every compacted log this broker hosts, leader or follower
        # (followers compact on their own, as in Kafka; offsets never change).
        self.cleaner = LogCleaner(config.cleaner)
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
            refresh_ms_min=config.metadata_refresh_ms_min,
            max_age_ms=config.metadata_max_age_ms,
        )
        self.meta = BrokerDataMeta(broker_id=config.broker_id)
        self.heartbeat_interval_ms = config.heartbeat_interval_ms
        self.coordinator_epoch = 0  # the newest coordinator epoch seen (in memory only)
        self.stopping = False
        self._round_robin: dict[str, int] = {}
        self._rng = random.Random()  # backoff jitter only
        self.fetch_memory = FetchMemory(config.fetch_memory_bytes_max)
        self.metrics = BrokerMetrics(self)
        self.replication = LeaderReplication(self)
        self.fetchers = ReplicaFetchers(self)

    # ---- lifetime ------------------------------------------------------------------------

    def check_data_dir(self) -> None:
        """Fast and synchronous, so a wrong data dir stops the broker before it listens."""
        self.meta = load_meta(self.config.data_dir, self.broker_id)

    async def start(self) -> None:
        await self.replicas.load_existing()
        self.cleaner.start()

    def begin_shutdown(self) -> None:
        """Stop waiting: long-polls answer with what they have, so in-flight requests end
        well within the shutdown timeout."""
        self.stopping = True
        for partition in self.replicas.partitions.values():
            partition.wake()

    async def close(self) -> None:
        self.stopping = True
        await self.replicas.close_all()
        await asyncio.to_thread(self.flusher.close)
        await self.http.close()

    # ---- reconciliation (driven by heartbeat.py) -----------------------------------------

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
        actions = reconcile(
            self.broker_id,
            self.replicas.states(),
            response.assignments,
            response.topic_configs,
            self.config.flush_override,
        )
        await self.replicas.apply(actions)
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

    async def leader_partition(
        self, topic: str, partition: int, leader_epoch: int | None = None
    ) -> Partition:
        """The partition if this broker leads it, else the right typed error."""
        validate_topic_name(topic)
        found = self.replicas.get(TopicPartition(topic, partition))
        if found is not None and found.is_leader:
            _check_epoch(found, leader_epoch)
            return found
        if found is not None and found.reopening:
            raise RetriableError(
                f"partition {topic}-{partition} is reopening", code=ErrorCode.LEADER_NOT_AVAILABLE
            )
        raise await self._not_leader(topic, partition, found)

    async def _not_leader(self, topic: str, partition: int, hosted: Partition | None) -> Exception:
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
        batches: bytes,
        *,
        acks: Acks = "all",
        timeout_ms: int = 30_000,
        leader_epoch: int | None = None,
    ) -> ProduceResponse:
        """Append one or more concatenated batches as received (never decoded).

        acks ``0`` and ``1`` answer once appended (HTTP always answers, so ``0`` still
        returns offsets); ``all`` once the high watermark covers the batches."""
        timeout_ms = clamp(timeout_ms, 0, self.config.produce_timeout_ms_max)
        target = await self.leader_partition(topic, partition, leader_epoch)
        if acks == "all":
            _check_insync(target)
        epoch = target.leader_epoch
        if target.log.config.compacted:
            require_keys(batches)
        result = target.append(batches)
        self.metrics.produced(topic, partition, batches)
        if acks == "all":
            await target.wait_acknowledged(result.last_offset + 1, epoch, timeout_ms / 1000)
        return ProduceResponse(
            topic=topic,
            partition=partition,
            base_offset=result.base_offset,
            last_offset=result.last_offset,
            leader_epoch=Epoch(epoch),
            log_start_offset=target.log.log_start_offset,
        )

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
    ) -> FetchResult:
        """Whole batches from the one holding ``offset``, only below the high watermark;
        waits up to ``max_wait_ms`` for one when none is there yet. The answer's bytes are
        held in ``fetch_memory`` until the caller calls ``fetch_memory.release`` once it
        has written them (see ``fetchmemory``)."""
        check_offset(offset)
        if max_bytes < 1 or max_wait_ms < 0:
            raise InvalidRequestError("max_bytes must be >= 1 and max_wait_ms >= 0")
        max_bytes = min(max_bytes, self.config.fetch_bytes_max)
        wait_s = min(max_wait_ms, self.config.fetch_wait_ms_max) / 1000
        source = await self.leader_partition(topic, partition, leader_epoch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            data = source.read(
                offset, self.fetch_memory.grant(max_bytes), upper_offset=source.high_watermark
            )
            remaining = deadline - loop.time()
            if data or remaining <= 0 or self.stopping:
                break
            await source.wait_high_watermark(remaining)
            source = await self.leader_partition(topic, partition, leader_epoch)
        self.fetch_memory.hold(len(data))
        self.metrics.fetched(topic, partition, data)
        return FetchResult(
            batches=data,
            high_watermark=source.high_watermark,
            log_start_offset=source.log.log_start_offset,
            log_end_offset=source.log.log_end_offset,
            leader_epoch=source.leader_epoch,
        )

    async def offsets(
        self, topic: str, partition: int, timestamp_ms: int | None = None
    ) -> PartitionOffsets:
        source = await self.leader_partition(topic, partition)
        found: tuple[int, int] | None = None
        if timestamp_ms is not None:
            base = source.log.offset_for_timestamp(timestamp_ms)
            if base is not None and base < source.high_watermark:  # else not visible yet
                found = self._first_record_at(source, base, timestamp_ms, topic, partition)
        return PartitionOffsets(
            topic=topic,
            partition=partition,
            leader_epoch=Epoch(source.leader_epoch),
            log_start_offset=source.log.log_start_offset,
            high_watermark=source.high_watermark,
            log_end_offset=source.log.log_end_offset,
            offset_for_timestamp=None if found is None else found[0],
            timestamp_found_ms=None if found is None else found[1],
        )

    def _first_record_at(
        self, source: Partition, base_offset: int, timestamp_ms: int, topic: str, partition: int
    ) -> tuple[int, int]:
        """(offset, timestamp) of the first record at or after ``timestamp_ms`` in the batch
        at ``base_offset`` (the time index finds batches; Kafka answers the record). A
        batch this broker cannot decode (a codec it lacks) answers its base offset."""
        batch = source.read(base_offset, 1, upper_offset=source.high_watermark)  # one batch
        try:
            records = decode_batches(batch, start_offset=base_offset)
        except ConveyorError as exc:
            log.info("%s-%d: batch at %d not decoded: %s", topic, partition, base_offset, exc)
            return base_offset, timestamp_ms
        for record in records:
            if record.timestamp_ms >= timestamp_ms:
                return record.offset, record.timestamp_ms
        return base_offset, timestamp_ms

    async def max_timestamp(self, topic: str, partition: int) -> tuple[int, int] | None:
        """(largest record timestamp visible to consumers, its offset), None when there is
        none (Kafka's ListOffsets MAX_TIMESTAMP, KIP-734)."""
        source = await self.leader_partition(topic, partition)
        found = source.log.max_timestamp()
        if found is None or found[1] >= source.high_watermark:
            return None
        timestamp_ms, base_offset = found
        # the first record at or after the largest timestamp is the one that has it
        offset, _ = self._first_record_at(source, base_offset, timestamp_ms, topic, partition)
        return timestamp_ms, offset

    async def epoch_end(
        self, topic: str, partition: int, epoch: int, leader_epoch: int | None = None
    ) -> tuple[int, int]:
        """(largest epoch <= ``epoch`` in the leader's log, where it ends): a consumer's
        check for truncation after a leader change (Kafka's OffsetForLeaderEpoch, KIP-320);
        (-1, -1) when the log knows no epoch that old. Fenced by ``leader_epoch``."""
        source = await self.leader_partition(topic, partition, leader_epoch)
        return source.log.end_offset_for_epoch(epoch)

    def hosted(self) -> HostedPartitions:
        partitions = self.replicas.partitions
        return HostedPartitions(
            broker_id=self.broker_id,
            partitions=[partitions[tp].describe() for tp in sorted(partitions)],
        )

    async def retention_loop(self) -> None:
        """Delete expired segments every ``retention_check_interval_ms``, in a thread."""
        interval_s = self.config.retention_check_interval_ms / 1000
        while not self.stopping:
            await asyncio.sleep(interval_s)
            await self.replicas.apply_retention()

    # ---- the routing endpoint ------------------------------------------------------------

    async def route_json(
        self,
        topic: str,
        request: JsonProduceRequest,
        *,
        acks: Acks = "all",
        timeout_ms: int = 30_000,
    ) -> RoutedProduceResponse:
        """Send each record to its partition's leader (here or forwarded), one batch per
        partition, all partitions at once; answer per record."""
        validate_topic_name(topic)
        records = request.records
        if not records:
            raise InvalidRequestError("a produce request needs at least one record")
        description = await self.metadata.topic(topic, auto_create=True)
        if description is None:
            raise InvalidRequestError(
                f"unknown topic {topic!r}", code=ErrorCode.UNKNOWN_TOPIC, topic=topic
            )
        start = self._round_robin.get(topic, 0)
        chosen = partitions_for(records, len(description.partitions), start)
        self._round_robin[topic] = start + unkeyed_count(records)
        groups = group_by_partition(chosen)
        answers = await asyncio.gather(
            *(
                self._route_group(topic, p, [records[i] for i in indices], acks, timeout_ms)
                for p, indices in groups.items()
            )
        )
        results: list[RoutedRecordResult | None] = [None] * len(records)
        for (p, indices), answer in zip(groups.items(), answers, strict=True):
            for position, index in enumerate(indices):
                if isinstance(answer, ErrorBody):
                    results[index] = RoutedRecordResult(partition=p, error=answer)
                else:
                    offset = answer.base_offset + position
                    results[index] = RoutedRecordResult(partition=p, offset=offset)
        return RoutedProduceResponse(topic=topic, results=[r for r in results if r is not None])

    async def _route_group(
        self, topic: str, partition: int, records: list[JsonRecord], acks: Acks, timeout_ms: int
    ) -> ProduceResponse | ErrorBody:
        """Produce one partition's records. While its leader is moving or not yet serving
        (a topic just auto-created has no leader for up to a heartbeat), refresh the
        metadata and retry with backoff, within the request's timeout and a bounded count."""
        request = JsonProduceRequest(records=records)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        attempt = 0
        while True:
            try:
                return await self._produce_anywhere(topic, partition, request, acks, timeout_ms)
            except ConveyorError as exc:
                remaining_s = deadline - loop.time()
                if (
                    exc.code not in _LEADER_MOVED
                    or attempt >= _ROUTE_ATTEMPTS_MAX
                    or remaining_s <= 0
                ):
                    return ErrorBody(
                        code=exc.code.name,
                        message=exc.message,
                        retriable=exc.retriable,
                        details=exc.details or None,
                    )
            delay_ms = backoff_ms(
                attempt, base_ms=100, max_ms=1000, draw=self._rng.random(), jitter=BELOW
            )
            await asyncio.sleep(min(delay_ms / 1000, remaining_s))
            attempt += 1
            await self._refresh_quietly(topic)

    async def _produce_anywhere(
        self, topic: str, partition: int, request: JsonProduceRequest, acks: Acks, timeout_ms: int
    ) -> ProduceResponse:
        local = self.replicas.get(TopicPartition(topic, partition))
        if local is not None and local.is_leader:
            return await self.produce_json(
                topic, partition, request, acks=acks, timeout_ms=timeout_ms
            )
        description = self.metadata.cached(topic)
        info = None
        if description is not None:
            info = next((p for p in description.partitions if p.partition == partition), None)
        url = None if info is None else self.metadata.leader_url(info.leader, info.leader_url)
        if url is None or info is None or info.leader == self.broker_id:
            raise RetriableError(
                f"partition {topic}-{partition} has no leader serving yet",
                code=ErrorCode.LEADER_NOT_AVAILABLE,
            )
        target = (
            f"{url}/v1/topics/{topic}/partitions/{partition}/records"
            f"?acks={acks}&timeout_ms={timeout_ms}"
        )
        timeout_s = timeout_ms / 1000 + _FORWARD_MARGIN_S
        return await self.http.call(
            "POST", target, ProduceResponse, body=request, timeout_s=timeout_s
        )

    async def _refresh_quietly(self, topic: str) -> None:
        try:
            await self.metadata.topic(topic, force=True)
        except ConveyorError as exc:
            log.warning("topic %s: metadata refresh failed: %s", topic, exc)


def _check_epoch(partition: Partition, leader_epoch: int | None) -> None:
    """Fencing by the epoch a client or replica says it knows (optional for clients)."""
    if leader_epoch is None or leader_epoch == partition.leader_epoch:
        return
    if leader_epoch < partition.leader_epoch:
        raise RetriableError(
            f"leader epoch {leader_epoch} is stale: {partition.tp} is at "
            f"{partition.leader_epoch}; refresh metadata",
            code=ErrorCode.STALE_EPOCH,
            leader_epoch=partition.leader_epoch,
        )
    raise RetriableError(
        f"this broker has not learnt epoch {leader_epoch} of {partition.tp} yet "
        f"(it is at {partition.leader_epoch})",
        code=ErrorCode.LEADER_NOT_AVAILABLE,
        leader_epoch=partition.leader_epoch,
    )


def _check_insync(partition: Partition) -> None:
    state = partition.state
    if len(state.isr) < state.min_insync_replicas:
        raise RetriableError(
            f"{partition.tp}: ISR {list(state.isr)} is smaller than min_insync_replicas "
            f"{state.min_insync_replicas}; nothing was written",
            code=ErrorCode.NOT_ENOUGH_REPLICAS,
            isr=list(state.isr),
            min_insync_replicas=state.min_insync_replicas,
        )


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
