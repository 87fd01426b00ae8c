"""Wiring of the broker's Kafka listener: handlers built from narrow dependencies (bound
methods of the broker's operations), the registry, and the TCP listener's lifetime.

This is the only module of the adapter that sees :class:`BrokerService`; the handlers get
the operations they call and nothing else.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from conveyor.broker.config import coordinators_of
from conveyor.broker.coordinator_admin import CoordinatorAcls, CoordinatorTopics
from conveyor.broker.coordinator_groups import CoordinatorGroups
from conveyor.broker.coordinator_txn import CoordinatorTransactions
from conveyor.broker.kafka.admin_acls import (
    CreateAclsHandler,
    DeleteAclsHandler,
    DescribeAclsHandler,
)
from conveyor.broker.kafka.admin_cluster import DescribeClusterHandler
from conveyor.broker.kafka.admin_configs import (
    AlterConfigsHandler,
    BrokerFacts,
    DescribeConfigsHandler,
)
from conveyor.broker.kafka.admin_logdirs import DescribeLogDirsHandler
from conveyor.broker.kafka.admin_topics import (
    CreatePartitionsHandler,
    CreateTopicsHandler,
    DeleteTopicsHandler,
)
from conveyor.broker.kafka.api_versions import ApiVersionsHandler
from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.consumer_groups import (
    ConsumerGroupDescribeHandler,
    ConsumerGroupHeartbeatHandler,
)
from conveyor.broker.kafka.delete_records import DeleteRecordsHandler
from conveyor.broker.kafka.describe_producers import DescribeProducersHandler
from conveyor.broker.kafka.fetch import FetchHandler
from conveyor.broker.kafka.group_admin import (
    DeleteGroupsHandler,
    DescribeGroupsHandler,
    ListGroupsHandler,
)
from conveyor.broker.kafka.group_offsets import (
    OffsetCommitHandler,
    OffsetDeleteHandler,
    OffsetFetchHandler,
)
from conveyor.broker.kafka.groups import (
    FindCoordinatorHandler,
    GroupAccess,
    HeartbeatHandler,
    JoinGroupHandler,
    LeaveGroupHandler,
    SyncGroupHandler,
)
from conveyor.broker.kafka.metadata import KafkaNode, MetadataHandler, with_own_leadership
from conveyor.broker.kafka.offsets import ListOffsetsHandler, OffsetForLeaderEpochHandler
from conveyor.broker.kafka.produce import ProduceHandler
from conveyor.broker.kafka.producer_id import InitProducerIdHandler
from conveyor.broker.kafka.registry import Registry
from conveyor.broker.kafka.sasl import SaslHandlers
from conveyor.broker.kafka.session import KafkaSession, SessionSettings
from conveyor.broker.kafka.transactions import (
    AddOffsetsToTxnHandler,
    AddPartitionsToTxnHandler,
    DescribeTransactionsHandler,
    EndTxnHandler,
    TxnOffsetCommitHandler,
)
from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.topic_configs import ConfigType
from conveyor.protocol.messages import InitProducerIdRequest, InitProducerIdResponse, Metadata
from conveyor.protocol.replica import TopicPartition
from conveyor.transport.authlimit import AuthFailureLimiter, AuthLimits
from conveyor.transport.client import AsyncHTTP
from conveyor.transport.credentials import authorization_header
from conveyor.transport.kafka_server import (
    CloseConnection,
    ConnectionInfo,
    KafkaListener,
    KafkaListenerSettings,
    ListenerStats,
)
from conveyor.transport.limits import ConnectionLimits

if TYPE_CHECKING:
    from conveyor.broker.config import KafkaSettings
    from conveyor.broker.service import BrokerService, LeaderView

log = logging.getLogger(__name__)

GROUP_CONNECTIONS_MAX = 1000  # group requests in flight to the coordinator (parked joins)


def this_node(service: BrokerService, settings: KafkaSettings) -> KafkaNode:
    """This broker as Kafka clients reach it (its advertised address, once bound)."""
    if settings.advertise is None:
        raise RuntimeError("the Kafka listener's address is known once it is bound")
    host, _, port = settings.advertise.rpartition(":")
    return KafkaNode(int(service.broker_id), host.strip("[]"), int(port))


def build_registry(
    service: BrokerService, authorizer: Authorizer, this: KafkaNode, stats: ListenerStats
) -> Registry:
    registry = Registry()
    metadata = service.metadata

    def leading(topic: str, partition: int) -> tuple[int, int] | None:
        replica = service.driver.state.replicas.get(TopicPartition(topic, partition))
        if replica is None or not replica.is_leader or replica.log_failed:
            return None
        return replica.leader_epoch, replica.high_watermark

    async def describe(topics: list[str] | None, auto_create: bool) -> Metadata:
        described = await metadata.describe(topics, auto_create=auto_create)
        return with_own_leadership(described, service.broker_id, leading)

    registry.add(ApiKey.API_VERSIONS, ApiVersionsHandler(registry.version_ranges))
    registry.add(ApiKey.METADATA, MetadataHandler(describe, metadata, authorizer, this))
    registry.add(ApiKey.PRODUCE, ProduceHandler(service.produce_appended, metadata, authorizer))
    fetch = FetchHandler(
        service.fetch,
        service.offsets,
        service.fetch_memory.release,
        authorizer,
        wakeup=service.fetch_wakeup,
        parked=stats,
    )
    registry.add(ApiKey.FETCH, fetch)
    list_offsets = ListOffsetsHandler(service.offsets, service.max_timestamp, authorizer)
    registry.add(ApiKey.LIST_OFFSETS, list_offsets)
    registry.add(
        ApiKey.OFFSET_FOR_LEADER_EPOCH, OffsetForLeaderEpochHandler(service.epoch_end, authorizer)
    )
    coordinator_url = service.config.coordinator_url.rstrip("/")
    http = service.http

    async def init_producer_id(request: InitProducerIdRequest) -> InitProducerIdResponse:
        return await http.call(
            "POST",
            f"{coordinator_url}/v1/producers/init",
            InitProducerIdResponse,
            body=request,
            timeout_s=service.config.heartbeat_timeout_ms / 1000,
        )

    txns = CoordinatorTransactions(http, coordinator_url)
    registry.add(ApiKey.INIT_PRODUCER_ID, InitProducerIdHandler(init_producer_id, txns, authorizer))

    async def leader(topic: str, partition: int) -> LeaderView:
        return await service.leader_partition(topic, partition)

    registry.add(ApiKey.DESCRIBE_PRODUCERS, DescribeProducersHandler(leader, authorizer))
    security = service.security
    sasl = SaslHandlers(
        security,
        security.enabled,
        service.config.cluster_secret,
        # its own password-guessing limit, with the HTTP listeners' defaults
        AuthFailureLimiter(AuthLimits()),
    )
    registry.add(ApiKey.SASL_HANDSHAKE, sasl.handshake)
    registry.add(ApiKey.SASL_AUTHENTICATE, sasl.authenticate)
    return registry


def add_admin(
    registry: Registry, service: BrokerService, authorizer: Authorizer, settings: KafkaSettings
) -> None:
    """The admin APIs, over the coordinator's topic operations (its HTTP routes)."""
    topics = CoordinatorTopics(service.http, service.config.coordinator_url)
    broker_id = int(service.broker_id)
    registry.add(ApiKey.CREATE_TOPICS, CreateTopicsHandler(topics, authorizer))
    registry.add(ApiKey.DELETE_TOPICS, DeleteTopicsHandler(topics, authorizer))
    registry.add(ApiKey.DELETE_RECORDS, DeleteRecordsHandler(service.delete_records, authorizer))
    registry.add(ApiKey.CREATE_PARTITIONS, CreatePartitionsHandler(topics, authorizer))
    describe = DescribeConfigsHandler(
        topics, authorizer, broker_id, broker_facts(service, settings)
    )
    registry.add(ApiKey.DESCRIBE_CONFIGS, describe)
    registry.add(ApiKey.ALTER_CONFIGS, AlterConfigsHandler(topics, authorizer, broker_id))
    registry.add(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        AlterConfigsHandler(topics, authorizer, broker_id, mode="incremental"),
    )
    registry.add(ApiKey.DESCRIBE_CLUSTER, DescribeClusterHandler(topics, authorizer))
    logdirs = DescribeLogDirsHandler(service.hosted, service.config.data_dir, authorizer)
    registry.add(ApiKey.DESCRIBE_LOG_DIRS, logdirs)
    acls = CoordinatorAcls(service.http, service.config.coordinator_url)
    registry.add(ApiKey.CREATE_ACLS, CreateAclsHandler(acls, authorizer))
    registry.add(ApiKey.DESCRIBE_ACLS, DescribeAclsHandler(acls, authorizer))
    registry.add(ApiKey.DELETE_ACLS, DeleteAclsHandler(acls, authorizer))


def add_groups(
    registry: Registry, service: BrokerService, authorizer: Authorizer, settings: KafkaSettings
) -> AsyncHTTP:
    """The consumer-group APIs, forwarded to the coordinator (its internal routes) over
    an HTTP client of their own: JoinGroups parked at the coordinator's barrier hold a
    connection each, which must never starve the broker's own heartbeats. Returns it (the
    listener closes it)."""
    config = service.config
    # as the cluster (its secret), never a CONVEYOR_TOKEN meant for clients that shares the
    # environment: the internal routes refuse client tokens (cli.service_http does the same)
    secret = config.cluster_secret
    http = AsyncHTTP(
        config.tls,
        limit=GROUP_CONNECTIONS_MAX,
        authorization=authorization_header(secret) if secret else None,
        coordinators=coordinators_of(config),
    )
    groups = CoordinatorGroups(http, config.coordinator_url)
    access = GroupAccess(authorizer)
    this = this_node(service, settings)
    known = service.metadata
    registry.add(ApiKey.FIND_COORDINATOR, FindCoordinatorHandler(this, known, access))
    registry.add(ApiKey.JOIN_GROUP, JoinGroupHandler(groups, access))
    registry.add(ApiKey.SYNC_GROUP, SyncGroupHandler(groups, access))
    registry.add(ApiKey.HEARTBEAT, HeartbeatHandler(groups, access))
    registry.add(ApiKey.LEAVE_GROUP, LeaveGroupHandler(groups, access))
    registry.add(ApiKey.OFFSET_COMMIT, OffsetCommitHandler(groups, access))
    registry.add(ApiKey.OFFSET_FETCH, OffsetFetchHandler(groups, access))
    registry.add(ApiKey.OFFSET_DELETE, OffsetDeleteHandler(groups, access))
    registry.add(ApiKey.LIST_GROUPS, ListGroupsHandler(groups, access, this.node_id, known))
    registry.add(ApiKey.DESCRIBE_GROUPS, DescribeGroupsHandler(groups, access))
    registry.add(ApiKey.DELETE_GROUPS, DeleteGroupsHandler(groups, access))
    registry.add(ApiKey.CONSUMER_GROUP_HEARTBEAT, ConsumerGroupHeartbeatHandler(groups, access))
    registry.add(ApiKey.CONSUMER_GROUP_DESCRIBE, ConsumerGroupDescribeHandler(groups, access))
    txns = CoordinatorTransactions(http, config.coordinator_url)
    add_partitions = AddPartitionsToTxnHandler(txns, authorizer, service.txn_partitions_added)
    registry.add(ApiKey.ADD_PARTITIONS_TO_TXN, add_partitions)
    registry.add(ApiKey.ADD_OFFSETS_TO_TXN, AddOffsetsToTxnHandler(txns, access))
    registry.add(ApiKey.END_TXN, EndTxnHandler(txns, authorizer))
    registry.add(ApiKey.TXN_OFFSET_COMMIT, TxnOffsetCommitHandler(txns, access))
    describe = DescribeTransactionsHandler(txns, authorizer)
    registry.add(ApiKey.DESCRIBE_TRANSACTIONS, describe)
    registry.add(ApiKey.LIST_TRANSACTIONS, DescribeTransactionsHandler(txns, authorizer, True))
    return http


def broker_facts(service: BrokerService, settings: KafkaSettings) -> BrokerFacts:
    """The broker's settings under Kafka's names, answered read-only by DescribeConfigs."""
    config = service.config
    facts: dict[str, tuple[ConfigType, str | None]] = {
        "broker.id": (ConfigType.INT, str(int(service.broker_id))),
        "log.dirs": (ConfigType.STRING, str(config.data_dir)),
        "advertised.listeners": (ConfigType.STRING, f"PLAINTEXT://{settings.advertise}"),
        "socket.request.max.bytes": (ConfigType.INT, str(settings.max_frame_bytes)),
        "max.connections": (ConfigType.INT, str(settings.connections_max)),
        "max.connections.per.ip": (ConfigType.INT, str(settings.connections_per_address_max)),
        "connections.max.idle.ms": (ConfigType.LONG, str(settings.idle_timeout_ms)),
    }
    if config.flush_override is not None:
        facts["log.flush.policy.override"] = (ConfigType.STRING, str(config.flush_override))
    return facts


async def start_listener(
    service: BrokerService, settings: KafkaSettings, ssl_context: ssl.SSLContext | None
) -> tuple[KafkaListener, KafkaSettings]:
    """Bind the Kafka listener, not yet serving (``KafkaListener.start``: a port in use
    fails here), then build its handlers with the address it advertises, known once bound
    (port 0: the one the OS picked). Returns the listener and its bound settings."""
    listener_settings = KafkaListenerSettings(
        host=settings.listen_host,
        port=settings.listen_port,
        max_frame_bytes=settings.max_frame_bytes,
        limits=ConnectionLimits(
            connections_max=settings.connections_max,
            connections_per_address_max=settings.connections_per_address_max,
            idle_timeout_ms=settings.idle_timeout_ms,
        ),
        inflight_max=settings.inflight_max,
        write_timeout_ms=service.config.fetch_write_timeout_ms,
    )
    listener = KafkaListener(listener_settings, _not_serving_yet, ssl_context)
    await listener.start(serving=False)  # accepts nothing before serve(): sessions first
    bound = settings.bound(listener.port)
    security = service.security
    authorizer = Authorizer(security, security.enabled)
    registry = build_registry(service, authorizer, this_node(service, bound), listener.stats)
    add_admin(registry, service, authorizer, bound)
    groups_http = add_groups(registry, service, authorizer, bound)
    session_settings = SessionSettings(
        auth_enabled=security.enabled, on_request=service.metrics.kafka_request
    )

    def new_session(info: ConnectionInfo) -> KafkaSession:
        return KafkaSession(info, registry, session_settings)

    listener.sessions = new_session
    stats = listener.stats
    service.driver.requests_in_flight = lambda: stats.requests_in_flight - stats.requests_parked
    listener.closers.append(groups_http.close)
    return listener, bound


def _not_serving_yet(info: ConnectionInfo) -> KafkaSession:
    raise CloseConnection  # unreachable: start(serving=False) accepts no connection
