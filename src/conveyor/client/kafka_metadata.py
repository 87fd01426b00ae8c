"""Routing over the Kafka protocol: the metadata client of the client's Kafka transport.

The same :class:`MetadataClient` (one cache, coalesced refreshes, backoff) as over HTTP;
only the question differs: a Kafka Metadata request (v4+, auto-creation as the client
asks) to any broker, instead of ``GET /v1/metadata`` to the coordinator. The answer is
turned into Conveyor's ``Metadata`` with each partition's ``leader_url`` holding its
leader's Kafka address (``host:port``), which is what the Kafka sender and fetcher dial.

Where the first request goes (:class:`KafkaBootstrap`): the ``bootstrap_servers`` given,
or, with only a coordinator URL, the brokers' Kafka addresses the coordinator lists
(``GET /v1/cluster``, or ``GET /v1/metadata`` for a principal not allowed to describe the
cluster: its only HTTP request). Later requests go to the brokers the last
answer named, then the bootstrap list again.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Final

from conveyor.client.metadata import MetadataClient
from conveyor.protocol.errors import (
    AuthorizationError,
    ConveyorError,
    ErrorCode,
    RetriableError,
)
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.protocol.messages import (
    BrokerId,
    BrokerInfo,
    ClusterStatus,
    Metadata,
    PartitionInfo,
    TopicConfig,
    TopicDescription,
)
from conveyor.transport.client import AsyncHTTP, authorization_from_env
from conveyor.transport.kafka_client import (
    CLIENT_SOFTWARE_NAME,
    KafkaClientOptions,
    KafkaConnection,
    KafkaConnections,
    sasl_from_authorization,
    split_address,
)
from conveyor.transport.tls import TLSConfig

log = logging.getLogger(__name__)

METADATA_VERSIONS: Final = (4, 12)  # v4: allow_auto_topic_creation; v12: kafka-python's top


def parse_bootstrap(servers: str) -> list[str]:
    """``"host:port,host:port"`` -> addresses; ValueError when empty or malformed."""
    addresses = [part.strip() for part in servers.split(",") if part.strip()]
    if not addresses:
        raise ValueError("bootstrap_servers names no HOST:PORT")
    for address in addresses:
        try:
            split_address(address)
        except ValueError as exc:
            raise ValueError(f"bootstrap_servers: {exc}") from None
    return addresses


class KafkaBootstrap:
    """The brokers' Kafka addresses to ask first: given, or learnt from the coordinator."""

    def __init__(
        self,
        servers: list[str] | None,
        http: AsyncHTTP,
        coordinator_url: str,
        request_timeout_ms: int,
    ) -> None:
        self._servers = servers
        self._http = http
        self._url = coordinator_url
        self._timeout_s = request_timeout_ms / 1000
        self.learnt: list[str] = []  # the brokers of the last Metadata answer

    async def candidates(self) -> list[str]:
        known = list(self.learnt)
        if self._servers is not None:
            return known + [s for s in self._servers if s not in known]
        if known:
            return known
        brokers = await self._brokers()
        alive = [b.kafka_address for b in brokers if b.alive and b.kafka_address]
        # just after a coordinator restart no broker is alive until it heartbeats again:
        # the ones it knew may well be up (bootstrap addresses are only where to ask)
        addresses = alive or [b.kafka_address for b in brokers if b.kafka_address]
        if not addresses:  # retriable: brokers register their listener by heartbeat
            raise RetriableError(
                f"no broker of {self._url} has a Kafka listener yet (a broker without "
                "one: start it with --kafka-listen)",
                code=ErrorCode.LEADER_NOT_AVAILABLE,
            )
        return addresses

    async def _brokers(self) -> list[BrokerInfo]:
        """The coordinator's list of brokers: its cluster status (one small answer), or,
        for a principal not allowed to describe the cluster (a producer with nothing but
        a topic's ACL), the routing metadata any authenticated client may read, as
        Kafka's Metadata answers every client with the brokers."""
        try:
            status = await self._http.call(
                "GET", f"{self._url}/v1/cluster", ClusterStatus, timeout_s=self._timeout_s
            )
        except AuthorizationError:
            metadata = await self._http.call(
                "GET", f"{self._url}/v1/metadata", Metadata, timeout_s=self._timeout_s
            )
            return metadata.brokers
        return status.brokers


class KafkaMetadataClient(MetadataClient):
    """:class:`MetadataClient` asking brokers over the Kafka protocol."""

    def __init__(
        self,
        connections: KafkaConnections,
        bootstrap: KafkaBootstrap,
        http: AsyncHTTP,
        *,
        auto_create: bool,
        request_timeout_ms: int = 30_000,
    ) -> None:
        super().__init__(
            http, "kafka:", auto_create=auto_create, request_timeout_ms=request_timeout_ms
        )
        self.connections = connections  # shared with the client's sender or fetcher
        self._bootstrap = bootstrap
        self._request_timeout_ms = request_timeout_ms
        # Kafka's topic ids (Metadata v10+), both ways: KIP-848's heartbeat names topics
        # by id (``kafka_group.py``)
        self.topic_ids: dict[str, uuid.UUID] = {}
        self.topic_names_by_id: dict[uuid.UUID, str] = {}

    async def any_connection(self) -> KafkaConnection:
        """A connection to some broker: the last answer's, else a bootstrap one."""
        last: ConveyorError | None = None
        for address in await self._bootstrap.candidates():
            try:
                return await self.connections.get(address)
            except RetriableError as exc:
                last = exc
        assert last is not None
        raise last

    async def _get(self, topics: list[str]) -> Metadata:
        metadata = metadata_from_kafka(await self.ask(topics))
        self._remember_topic_ids(metadata)
        return metadata

    async def ask(self, topics: list[str] | None) -> Any:
        """One Metadata request to some broker (``topics`` None: every topic); the Kafka
        answer as it came (``metadata_from_kafka`` reads it). Its brokers are asked next."""
        connection = await self.any_connection()
        version = connection.version(ApiKey.METADATA, *METADATA_VERSIONS)
        topic_cls = SERVED[ApiKey.METADATA].request[version].MetadataRequestTopic
        request = new_request(
            ApiKey.METADATA,
            version,
            topics=None if topics is None else [topic_cls(name=name) for name in topics],
            allow_auto_topic_creation=self._auto_create,
        )
        reply = await connection.call(
            ApiKey.METADATA, version, request, timeout_ms=self._request_timeout_ms
        )
        self._bootstrap.learnt = [f"{b.host}:{b.port}" for b in reply.brokers]
        return reply

    async def topic_names(self) -> list[str]:
        """Every topic of the cluster: a Metadata request for all topics (null)."""
        metadata = metadata_from_kafka(await self.ask(None))
        self._remember_topic_ids(metadata)
        return [t.name for t in metadata.topics]

    def _remember_topic_ids(self, metadata: Metadata) -> None:
        for topic in metadata.topics:
            if topic.topic_id is not None:
                topic_id = uuid.UUID(topic.topic_id)
                self.topic_ids[topic.name] = topic_id
                self.topic_names_by_id[topic_id] = topic.name


def kafka_metadata_client(  # noqa: PLR0917 -- a client's own settings
    http: AsyncHTTP,
    coordinator_url: str,
    bootstrap_servers: str | None,
    tls: TLSConfig | None,
    authorization: str | None,
    request_timeout_ms: int,
    *,
    auto_create: bool,
    client_id: str = "",
) -> KafkaMetadataClient:
    """The routing of a producer or consumer on the Kafka transport: its connections
    (``kafka_options``), where it asks first (:class:`KafkaBootstrap`) and the metadata
    client; its sender or fetcher sends over the same ``connections``."""
    options = kafka_options(
        tls, coordinator_url, authorization, request_timeout_ms, client_id=client_id
    )
    servers = None if bootstrap_servers is None else parse_bootstrap(bootstrap_servers)
    bootstrap = KafkaBootstrap(servers, http, coordinator_url, request_timeout_ms)
    return KafkaMetadataClient(
        KafkaConnections(options),
        bootstrap,
        http,
        auto_create=auto_create,
        request_timeout_ms=request_timeout_ms,
    )


def kafka_options(
    tls: TLSConfig | None,
    coordinator_url: str,
    authorization: str | None,
    request_timeout_ms: int,
    *,
    client_id: str = "",
) -> KafkaClientOptions:
    """Connection settings from a client's: TLS when the coordinator URL is https:// or
    ``tls`` is given (its CA and client certificate), else the client's CA setting; SASL
    from the same credentials as HTTP (``sasl_from_authorization``); the requests'
    ``client_id`` (what group descriptions show), else the library's name."""
    use_tls = tls is not None or coordinator_url.startswith("https://")
    return KafkaClientOptions(
        tls=tls or TLSConfig.from_env(),
        use_tls=use_tls,
        sasl=sasl_from_authorization(authorization or authorization_from_env()),
        request_timeout_ms=request_timeout_ms,
        client_id=client_id or CLIENT_SOFTWARE_NAME,
    )


def metadata_from_kafka(reply: Any) -> Metadata:
    """A Kafka Metadata answer as Conveyor's ``Metadata`` (pure). Topics the brokers do
    not know are left out (the cache marks them missing); a topic still being created
    (LEADER_NOT_AVAILABLE, as Kafka answers an auto-creation) or failing otherwise raises
    its typed error, so the caller backs off and asks again."""
    addresses = {b.node_id: f"{b.host}:{b.port}" for b in reply.brokers}
    brokers = [
        BrokerInfo(broker_id=BrokerId(node), url="", kafka_address=address)
        for node, address in sorted(addresses.items())
    ]
    topics = []
    for topic in reply.topics:
        if topic.error_code == KafkaError.UNKNOWN_TOPIC_OR_PARTITION:
            continue
        if topic.error_code:
            raise conveyor_error(topic.error_code, f"metadata of topic {topic.name}")
        partitions = [
            PartitionInfo(
                partition=p.partition_index,
                leader=BrokerId(p.leader_id) if p.leader_id >= 0 else None,
                leader_epoch=p.leader_epoch,
                replicas=[BrokerId(r) for r in p.replica_nodes],
                isr=[BrokerId(r) for r in p.isr_nodes],
                leader_url=addresses.get(p.leader_id),
            )
            for p in topic.partitions
        ]
        replication = len(partitions[0].replicas) if partitions else 0
        topics.append(
            TopicDescription(
                name=topic.name,
                partitions=partitions,
                replication_factor=replication,
                config=TopicConfig(),  # not in a Metadata answer; routing needs none
                topic_id=_topic_id(topic),
            )
        )
    return Metadata(cluster_id=reply.cluster_id or "", brokers=brokers, topics=topics)


def _topic_id(topic: Any) -> str | None:
    """A Metadata answer's topic id (v10+; the all-zero id, or none before v10: None)."""
    topic_id = getattr(topic, "topic_id", None)
    if not isinstance(topic_id, uuid.UUID) or topic_id.int == 0:
        return None
    return str(topic_id)
