"""The admin operations over the brokers' Kafka listeners (``Admin(transport="kafka")``).

Each operation is the Kafka API that Kafka's own admin clients send for it (kafka-python's
``KafkaAdminClient``, librdkafka's ``AdminClient``): CreateTopics, DeleteTopics,
CreatePartitions, Metadata, DescribeConfigs and IncrementalAlterConfigs for topics;
DescribeCluster with Metadata for the cluster's status; ListGroups (every broker lists
the groups it coordinates), DescribeGroups, OffsetFetch and ListOffsets for groups and
their lag; OffsetCommit as an empty group (generation -1, no member id: what
``kafka-consumer-groups --reset-offsets`` sends) after checking the group has no members;
DeleteRecords and ListOffsets on each partition's leader. Conveyor's brokers answer the
group and admin APIs on any broker (the coordinator decides), so no FindCoordinator is
needed. Answers become the same result types as over HTTP (``kafka_admin_convert.py``).

Decommissioning a broker has no Kafka API (Kafka's is KRaft's UnregisterBroker, which
Conveyor's brokers do not serve): it raises :class:`CoordinatorRequiredError`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from conveyor.client import admin_ops as ops
from conveyor.client.admin_ops import ResetTarget, Timestamp
from conveyor.client.errors import CoordinatorRequiredError
from conveyor.client.kafka_admin_convert import (
    DELETE,
    EARLIEST,
    LATEST,
    SET,
    TOPIC_RESOURCE,
    check,
    cluster_status,
    group_description,
    group_summary,
    group_topics,
    topic_summaries,
    with_offsets,
)
from conveyor.client.kafka_metadata import kafka_metadata_client, metadata_from_kafka
from conveyor.client.types import TopicPartition
from conveyor.protocol.backoff import backoff_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.kafka import topic_configs
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.protocol.messages import (
    ClusterStatus,
    ConfigValue,
    DecommissionResponse,
    GroupDescription,
    GroupSummary,
    Metadata,
    OffsetFetchResponse,
    PartitionOffset,
    TopicConfig,
    TopicDescription,
    TopicSummary,
)
from conveyor.transport.client import AsyncHTTP, coordinator_set
from conveyor.transport.tls import TLSConfig
from conveyor.transport.waits import gather_all

CALL_MARGIN_MS: Final = 5_000  # past a request's own timeout_ms, before the client gives up
Targets = Mapping[TopicPartition, int]
Outcomes = dict[TopicPartition, int | ConveyorError]
Routes = Mapping[tuple[str, int], str | ConveyorError]


class KafkaAdmin:
    """:class:`~conveyor.client.admin_transport.AdminTransport` over Kafka's admin APIs."""

    def __init__(
        self,
        url: str | None,
        bootstrap_servers: str | None,
        tls: TLSConfig | None,
        timeout_s: float,
        authorization: str | None,
    ) -> None:
        coordinators = coordinator_set(url)
        self._timeout_ms = int(timeout_s * 1000)
        # only asked, once, for the brokers' Kafka addresses when no bootstrap_servers
        self._http = AsyncHTTP(
            tls, timeout_s=timeout_s, authorization=authorization, coordinators=coordinators
        )
        self._metadata = kafka_metadata_client(
            self._http,
            coordinators.primary,
            bootstrap_servers,
            tls,
            authorization,
            self._timeout_ms,
            auto_create=False,
        )
        self._connections = self._metadata.connections
        self.target = f"kafka://{bootstrap_servers or coordinators.primary}"

    async def _ask(
        self, api: ApiKey, versions: tuple[int, int], build: Callable[[Any], Any], address: str = ""
    ) -> Any:
        """One request (``build`` makes it from the message class of the version both
        sides speak) to ``address``, or to any broker; its answer."""
        if address:
            connection = await self._connections.get(address)
        else:
            connection = await self._metadata.any_connection()
        version = connection.version(api, *versions)
        request = build(SERVED[api].request[version])
        timeout_ms = self._timeout_ms + CALL_MARGIN_MS
        return await connection.call(api, version, request, timeout_ms=timeout_ms)

    async def _metadata_of(self, topics: list[str] | None) -> Metadata:
        return metadata_from_kafka(await self._metadata.ask(topics))

    # ---- topics ---------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int | None,
        config: TopicConfig | None,
    ) -> TopicDescription:
        fields = topic_configs.explicit_fields(config) if config is not None else {}
        sets, _ = topic_configs.kafka_values(fields)

        def build(cls: Any) -> Any:
            topic = cls.CreatableTopic
            configs = [topic.CreatableTopicConfig(name=k, value=v) for k, v in sets.items()]
            return cls(
                topics=[
                    topic(
                        name=name,
                        num_partitions=partitions,
                        replication_factor=-1 if replication_factor is None else replication_factor,
                        assignments=[],
                        configs=configs,
                    )
                ],
                timeout_ms=self._timeout_ms,
                validate_only=False,
            )

        reply = await self._ask(ApiKey.CREATE_TOPICS, (2, 7), build)
        result = reply.topics[0]
        check(result.error_code, f"create topic {name!r}", result.error_message, topic=name)
        return await self.settled(name, lambda d: all(p.leader is not None for p in d.partitions))

    async def list_topics(self) -> list[TopicSummary]:
        return topic_summaries(await self._metadata_of(None))

    async def describe_topic(self, name: str) -> TopicDescription:
        """Metadata, then the topic's settings (DescribeConfigs) and each partition's log
        start and high watermark (ListOffsets on its leader) at once."""
        reply = await self._metadata.ask([name])
        raw = next((t for t in reply.topics if t.name == name), None)
        if raw is None or raw.error_code == KafkaError.UNKNOWN_TOPIC_OR_PARTITION:
            raise InvalidRequestError(
                f"unknown topic {name!r}", code=ErrorCode.UNKNOWN_TOPIC, topic=name
            )
        metadata = metadata_from_kafka(reply)  # raises the topic's other errors
        described = next(t for t in metadata.topics if t.name == name)
        tps = [TopicPartition(name, p.partition) for p in described.partitions]
        routes = ops.leader_urls(metadata, tps, kafka=True)
        config, earliest, latest = await gather_all(
            self._topic_config(name),
            self._offsets(dict.fromkeys(tps, EARLIEST), routes),
            self._offsets(dict.fromkeys(tps, LATEST), routes),
        )
        return with_offsets(
            described,
            config,
            {tp.partition: o for tp, o in earliest.items() if isinstance(o, int)},
            {tp.partition: o for tp, o in latest.items() if isinstance(o, int)},
            getattr(raw, "topic_id", None),
        )

    async def _topic_config(self, name: str) -> TopicConfig:
        def build(cls: Any) -> Any:
            resource = cls.DescribeConfigsResource(
                resource_type=TOPIC_RESOURCE, resource_name=name, configuration_keys=None
            )
            return cls(resources=[resource])

        reply = await self._ask(ApiKey.DESCRIBE_CONFIGS, (1, 4), build)
        result = reply.results[0]
        check(result.error_code, f"configs of topic {name!r}", result.error_message, topic=name)
        dynamic = {
            c.name: c.value
            for c in result.configs
            if c.config_source == topic_configs.ConfigSource.DYNAMIC_TOPIC_CONFIG
        }
        return topic_configs.from_described(dynamic)

    async def settled(
        self, name: str, ready: Callable[[TopicDescription], bool]
    ) -> TopicDescription:
        """The topic's description once ``ready`` (a broker learns a change of the
        coordinator's up to a heartbeat later), or the last one at the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_ms / 1000
        attempt = 0
        while True:
            try:
                described = await self.describe_topic(name)
                if ready(described) or loop.time() >= deadline:
                    return described
            except ConveyorError as exc:
                waiting = exc.code in (ErrorCode.UNKNOWN_TOPIC, ErrorCode.LEADER_NOT_AVAILABLE)
                if not waiting or loop.time() >= deadline:
                    raise
            await asyncio.sleep(
                backoff_ms(attempt, base_ms=50, max_ms=1000, draw=random.random()) / 1000
            )
            attempt += 1

    async def delete_topic(self, name: str) -> None:
        def build(cls: Any) -> Any:
            return cls(topic_names=[name], timeout_ms=self._timeout_ms)

        reply = await self._ask(ApiKey.DELETE_TOPICS, (1, 5), build)
        result = reply.responses[0]
        check(result.error_code, f"delete topic {name!r}", getattr(result, "error_message", None))

    async def add_partitions(self, name: str, partitions: int) -> TopicDescription:
        def build(cls: Any) -> Any:
            grow = cls.CreatePartitionsTopic(name=name, count=partitions, assignments=None)
            return cls(topics=[grow], timeout_ms=self._timeout_ms, validate_only=False)

        reply = await self._ask(ApiKey.CREATE_PARTITIONS, (0, 3), build)
        result = reply.results[0]
        check(result.error_code, f"add partitions to {name!r}", result.error_message, topic=name)
        return await self.settled(name, lambda d: len(d.partitions) >= partitions)

    async def alter_topic_config(
        self, name: str, values: dict[str, ConfigValue], reset: list[str]
    ) -> TopicDescription:
        """IncrementalAlterConfigs: SET the given settings, DELETE the reset ones."""
        sets, deletes = topic_configs.kafka_values(values, reset)

        def build(cls: Any) -> Any:
            resource = cls.AlterConfigsResource
            change = resource.AlterableConfig
            configs = [change(name=k, config_operation=SET, value=v) for k, v in sets.items()]
            configs += [change(name=k, config_operation=DELETE, value=None) for k in deletes]
            return cls(
                resources=[
                    resource(resource_type=TOPIC_RESOURCE, resource_name=name, configs=configs)
                ],
                validate_only=False,
            )

        reply = await self._ask(ApiKey.INCREMENTAL_ALTER_CONFIGS, (0, 1), build)
        result = reply.responses[0]
        check(result.error_code, f"alter config of {name!r}", result.error_message, topic=name)
        return await self.describe_topic(name)

    # ---- the cluster ----------------------------------------------------------------------

    async def cluster(self) -> ClusterStatus:
        def build(cls: Any) -> Any:
            return cls(include_cluster_authorized_operations=False)

        reply, metadata = await gather_all(
            self._ask(ApiKey.DESCRIBE_CLUSTER, (0, 2), build), self._metadata_of(None)
        )
        check(reply.error_code, "describe cluster", reply.error_message)
        return cluster_status(reply.cluster_id, reply.brokers, metadata)

    async def decommission(self, broker_id: int, start: bool) -> DecommissionResponse:
        raise CoordinatorRequiredError(
            f"decommissioning broker {broker_id} has no Kafka API: use an Admin with the "
            "coordinator's URL (url=..., transport='http'; the CLI's --url without "
            "--bootstrap-server)"
        )

    # ---- records --------------------------------------------------------------------------

    async def delete_records(
        self, offsets: ops.RecordsTargets, timeout_ms: int
    ) -> dict[TopicPartition, int]:
        """DeleteRecords on each partition's leader (one request per leader), a time
        turned into an offset there first (ListOffsets); moved leaders found again."""
        deletion = ops.RecordsDeletion(offsets, timeout_ms)
        while True:
            metadata = await self._metadata_of(sorted({tp.topic for tp in deletion.pending}))
            routes = ops.leader_urls(metadata, deletion.pending, kafka=True)
            targets: dict[TopicPartition, int] = {}
            outcomes: Outcomes = {}
            times = {
                tp: t.timestamp_ms for tp, t in deletion.pending.items() if isinstance(t, Timestamp)
            }
            for tp, found in (await self._offsets(times, routes)).items():
                if isinstance(found, ConveyorError):
                    outcomes[tp] = found
                else:
                    targets[tp] = found  # -1 (nothing that recent): the high watermark
            for tp, target in deletion.pending.items():
                if isinstance(target, int):
                    targets[tp] = target
            outcomes.update(await self._per_leader(routes, targets, self._delete_on(timeout_ms)))
            if not deletion.settle(outcomes):
                return deletion.result()
            await asyncio.sleep(deletion.pause_s(random.random()))

    def _delete_on(self, timeout_ms: int) -> Callable[[str, Targets], Awaitable[Outcomes]]:
        async def send(address: str, targets: Targets) -> Outcomes:
            def build(cls: Any) -> Any:
                topic = cls.DeleteRecordsTopic
                return cls(
                    topics=[
                        topic(
                            name=name,
                            partitions=[
                                topic.DeleteRecordsPartition(partition_index=p, offset=o)
                                for p, o in parts
                            ],
                        )
                        for name, parts in _by_topic(targets).items()
                    ],
                    timeout_ms=timeout_ms,
                )

            reply = await self._ask(ApiKey.DELETE_RECORDS, (0, 2), build, address)
            return _partition_outcomes(reply.topics, "delete records", "low_watermark")

        return send

    async def _offsets(self, timestamps: Targets, routes: Routes) -> Outcomes:
        """ListOffsets on the partitions' leaders: each partition's offset for its
        timestamp (EARLIEST: the log start, LATEST: the high watermark; a time: the first
        offset at or after it, -1 when there is none), or why not."""

        async def send(address: str, targets: Targets) -> Outcomes:
            def build(cls: Any) -> Any:
                topic = cls.ListOffsetsTopic
                return cls(
                    replica_id=-1,
                    topics=[
                        topic(
                            name=name,
                            partitions=[
                                topic.ListOffsetsPartition(partition_index=p, timestamp=t)
                                for p, t in parts
                            ],
                        )
                        for name, parts in _by_topic(targets).items()
                    ],
                )

            reply = await self._ask(ApiKey.LIST_OFFSETS, (1, 7), build, address)
            return _partition_outcomes(reply.topics, "list offsets", "offset")

        return await self._per_leader(routes, timestamps, send)

    async def _per_leader(
        self,
        routes: Routes,
        targets: Targets,
        send: Callable[[str, Targets], Awaitable[Outcomes]],
    ) -> Outcomes:
        """``send`` each leader its partitions' targets, the leaders at once; a partition
        with no leader, or whose leader's request failed, gets that error."""
        outcomes: Outcomes = {}
        by_leader: dict[str, dict[TopicPartition, int]] = {}
        for tp, target in targets.items():
            route = routes[tp]
            if isinstance(route, ConveyorError):
                outcomes[tp] = route
            else:
                by_leader.setdefault(route, {})[tp] = target

        async def one(address: str, batch: Targets) -> Outcomes:
            try:
                answered = await send(address, batch)
            except ConveyorError as exc:
                return dict.fromkeys(batch, exc)
            unanswered = ConveyorError(
                f"kafka://{address} did not answer for the partition",
                code=ErrorCode.INTERNAL_ERROR,
            )
            return {tp: answered.get(tp, unanswered) for tp in batch}

        for answer in await gather_all(*(one(a, b) for a, b in by_leader.items())):
            outcomes.update(answer)
        return outcomes

    # ---- consumer groups ------------------------------------------------------------------

    async def list_groups(self) -> list[GroupSummary]:
        """ListGroups on every broker (each lists the groups it coordinates), then each
        group described."""
        brokers = (await self._metadata_of([])).brokers

        async def listed(address: str) -> list[str]:
            reply = await self._ask(ApiKey.LIST_GROUPS, (0, 5), lambda cls: cls(), address)
            check(reply.error_code, f"list groups on {address}")
            return [g.group_id for g in reply.groups]

        addresses = [b.kafka_address for b in brokers if b.kafka_address]
        names = sorted({n for found in await gather_all(*map(listed, addresses)) for n in found})
        described = await gather_all(*map(self.describe_group, names))
        return [group_summary(d) for d in described]

    async def describe_group(self, group: str) -> GroupDescription:
        def build(cls: Any) -> Any:
            return cls(groups=[group])

        reply, committed = await gather_all(
            self._ask(ApiKey.DESCRIBE_GROUPS, (0, 6), build), self._committed(group)
        )
        described = reply.groups[0]
        # a group nobody joined and that committed nothing is described as empty (as the
        # coordinator's HTTP API does): "Dead" (v0-5) or GROUP_ID_NOT_FOUND (v6) over Kafka
        if described.error_code != KafkaError.GROUP_ID_NOT_FOUND:
            check(described.error_code, f"group {group!r}", described.error_message, group=group)
        high_watermarks: dict[TopicPartition, int] = {}
        topics = group_topics(described, committed)
        if topics:
            metadata = await self._metadata_of(topics)
            every = [
                TopicPartition(t.name, p.partition) for t in metadata.topics for p in t.partitions
            ]
            routes = ops.leader_urls(metadata, every, kafka=True)
            latest = await self._offsets(dict.fromkeys(every, LATEST), routes)
            high_watermarks = {tp: o for tp, o in latest.items() if isinstance(o, int)}
        return group_description(described, committed, high_watermarks)

    async def _committed(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets, every topic (OffsetFetch with no topics)."""

        def build(cls: Any) -> Any:
            return cls(group_id=group, topics=None)

        reply = await self._ask(ApiKey.OFFSET_FETCH, (2, 7), build)
        check(reply.error_code, f"offsets of group {group!r}", group=group)
        committed = {}
        for topic in reply.topics:
            for p in topic.partitions:
                check(p.error_code, f"offset of {group!r} on {topic.name}[{p.partition_index}]")
                if p.committed_offset >= 0:
                    committed[TopicPartition(topic.name, p.partition_index)] = p.committed_offset
        return committed

    async def delete_group(self, group: str) -> None:
        def build(cls: Any) -> Any:
            return cls(groups_names=[group])

        reply = await self._ask(ApiKey.DELETE_GROUPS, (0, 2), build)
        check(reply.results[0].error_code, f"delete group {group!r}", group=group)

    async def reset_offsets(
        self, group: str, topic: str, to: ResetTarget, partitions: Iterable[int] | None
    ) -> OffsetFetchResponse:
        """As ``kafka-consumer-groups --reset-offsets``: refused (GROUP_NOT_EMPTY) while
        the group has members, each offset resolved on its leader (ListOffsets), then one
        OffsetCommit as an empty group."""
        await self._check_inactive(group)
        metadata = await self._metadata_of([topic])
        chosen = ops.partitions_to_reset(metadata, topic, partitions)
        tps = [TopicPartition(topic, p.partition) for p in chosen]
        offsets = await self._reset_targets(metadata, tps, to)

        def build(cls: Any) -> Any:
            entry = cls.OffsetCommitRequestTopic
            return cls(
                group_id=group,
                generation_id_or_member_epoch=-1,
                member_id="",
                topics=[
                    entry(
                        name=topic,
                        partitions=[
                            entry.OffsetCommitRequestPartition(
                                partition_index=tp.partition, committed_offset=offset
                            )
                            for tp, offset in offsets.items()
                        ],
                    )
                ],
            )

        reply = await self._ask(ApiKey.OFFSET_COMMIT, (2, 8), build)
        for answered in reply.topics:
            for p in answered.partitions:
                check(p.error_code, f"reset {group!r} on {answered.name}[{p.partition_index}]")
        return OffsetFetchResponse(
            group=group,
            offsets=[
                PartitionOffset(topic=tp.topic, partition=tp.partition, offset=offset)
                for tp, offset in offsets.items()
            ],
        )

    async def _check_inactive(self, group: str) -> None:
        described = await self.describe_group(group)
        if described.members:
            raise InvalidRequestError(
                f"group {group!r} has {len(described.members)} members: stop them first",
                code=ErrorCode.GROUP_NOT_EMPTY,
                group=group,
            )

    async def _reset_targets(
        self, metadata: Metadata, tps: list[TopicPartition], to: ResetTarget
    ) -> dict[TopicPartition, int]:
        if isinstance(to, int):
            return dict.fromkeys(tps, to)
        routes = ops.leader_urls(metadata, tps, kafka=True)
        if isinstance(to, Timestamp):
            found = await self._offsets(dict.fromkeys(tps, to.timestamp_ms), routes)
            after = [tp for tp, o in found.items() if o == -1]  # nothing that recent
            if after:
                found.update(await self._offsets(dict.fromkeys(after, LATEST), routes))
        else:
            asked = EARLIEST if to == "earliest" else LATEST
            found = await self._offsets(dict.fromkeys(tps, asked), routes)
        resolved = {}
        for tp in tps:
            outcome = found[tp]
            if isinstance(outcome, ConveyorError):
                raise outcome
            resolved[tp] = outcome
        return resolved

    async def close(self) -> None:
        try:
            await self._connections.close()
        finally:
            await self._http.close()


def _by_topic(targets: Targets) -> dict[str, list[tuple[int, int]]]:
    grouped: dict[str, list[tuple[int, int]]] = {}
    for tp, value in sorted(targets.items()):
        grouped.setdefault(tp.topic, []).append((tp.partition, value))
    return grouped


def _partition_outcomes(topics: Any, what: str, field: str) -> Outcomes:
    """Per-partition answers (``field``: the value an answer carries) or their errors."""
    outcomes: Outcomes = {}
    for topic in topics:
        for p in topic.partitions:
            tp = TopicPartition(topic.name, p.partition_index)
            if p.error_code:
                outcomes[tp] = conveyor_error(
                    p.error_code, f"{what} of {tp.topic}[{tp.partition}]", topic=tp.topic
                )
            else:
                outcomes[tp] = int(getattr(p, field))
    return outcomes
