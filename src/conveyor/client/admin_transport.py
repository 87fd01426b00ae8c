"""What ``Admin`` and ``AsyncAdmin`` need of a transport: one narrow interface, two
implementations (``admin_http.py``: the coordinator's HTTP API; ``kafka_admin.py``: the
brokers' Kafka listeners) and their combination, the default given a coordinator URL
(``admin_routed.py``: reads over Kafka, changes at the coordinator), the same result types
on all (docs/client.md, "Admin").

An operation no Kafka API carries raises :class:`CoordinatorRequiredError` on the Kafka
transport rather than falling back to HTTP behind the caller's back: a caller who gave
only ``bootstrap_servers`` may have no route to the coordinator at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from conveyor.client.admin_ops import RecordsTargets, ResetTarget
from conveyor.client.transport_choice import client_transport, pick_transport
from conveyor.client.types import TopicPartition
from conveyor.protocol.messages import (
    ClusterStatus,
    ConfigValue,
    DecommissionResponse,
    GroupDescription,
    GroupSummary,
    OffsetFetchResponse,
    TopicConfig,
    TopicDescription,
    TopicSummary,
)
from conveyor.transport.credentials import authorization_header
from conveyor.transport.tls import TLSConfig


class AdminTransport(Protocol):
    """The administrative operations, async; ``config`` is already a ``TopicConfig``."""

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int | None,
        config: TopicConfig | None,
    ) -> TopicDescription: ...
    async def list_topics(self) -> list[TopicSummary]: ...
    async def describe_topic(self, name: str) -> TopicDescription: ...
    async def delete_topic(self, name: str) -> None: ...
    async def add_partitions(self, name: str, partitions: int) -> TopicDescription: ...
    async def alter_topic_config(
        self, name: str, values: dict[str, ConfigValue], reset: list[str]
    ) -> TopicDescription: ...
    async def cluster(self) -> ClusterStatus: ...
    async def decommission(self, broker_id: int, start: bool) -> DecommissionResponse: ...
    async def delete_records(
        self, offsets: RecordsTargets, timeout_ms: int
    ) -> dict[TopicPartition, int]: ...
    async def list_groups(self) -> list[GroupSummary]: ...
    async def describe_group(self, group: str) -> GroupDescription: ...
    async def delete_group(self, group: str) -> None: ...
    async def reset_offsets(
        self, group: str, topic: str, to: ResetTarget, partitions: Iterable[int] | None
    ) -> OffsetFetchResponse: ...
    async def close(self) -> None: ...


def admin_transport(  # noqa: PLR0917 -- the Admin's own settings
    url: str | None,
    tls: TLSConfig | None,
    timeout_s: float,
    token: str | None,
    user: str | None,
    password: str | None,
    transport: str | None,
    bootstrap_servers: str | None,
) -> tuple[AdminTransport, str]:
    """The transport an Admin's settings choose (``client_transport``: given, else the
    client settings), and what it talks to (for ``repr``)."""
    transport, servers = client_transport(transport, bootstrap_servers)
    chosen = pick_transport(transport, servers)
    authorization = authorization_header(token, user, password)
    from conveyor.client.admin_http import HttpAdmin

    if chosen == "http":
        http = HttpAdmin(url, tls, timeout_s, authorization)
        return http, http.url
    from conveyor.client.kafka_admin import KafkaAdmin

    kafka = KafkaAdmin(url, servers, tls, timeout_s, authorization)
    if chosen == "kafka":
        return kafka, kafka.target
    from conveyor.client.admin_routed import RoutedAdmin

    routed = RoutedAdmin(HttpAdmin(url, tls, timeout_s, authorization), kafka)
    return routed, routed.url
