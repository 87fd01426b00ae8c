"""``AsyncAdmin``: topics, the cluster and consumer groups from asyncio.

The operations of :class:`Admin`, over the transport its settings choose
(``admin_transport.py``: by default reads over the brokers' Kafka listeners and changes at
the coordinator; the brokers' listeners alone with ``transport="kafka"`` or
``bootstrap_servers=``; the coordinator alone with ``transport="http"``); the results are
the same types on all.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

from conveyor.client import admin_ops as ops
from conveyor.client.admin_ops import ResetTarget
from conveyor.client.admin_transport import admin_transport
from conveyor.client.errors import CoordinatorRequiredError
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
from conveyor.transport.tls import TLSConfig

__all__ = ["AsyncAdmin", "CoordinatorRequiredError"]


class AsyncAdmin:
    """``async with AsyncAdmin() as admin: await admin.create_topic("orders")``; the
    settings, credentials and errors of :class:`Admin`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        tls: TLSConfig | None = None,
        timeout_s: float = 30.0,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        transport: str | None = None,
        bootstrap_servers: str | None = None,
    ) -> None:
        self._transport, self.url = admin_transport(
            url, tls, timeout_s, token, user, password, transport, bootstrap_servers
        )

    # ---- topics and the cluster -----------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = 8,
        replication_factor: int | None = None,
        config: TopicConfig | dict[str, Any] | None = None,
    ) -> TopicDescription:
        return await self._transport.create_topic(
            name, partitions, replication_factor, ops.topic_config(config)
        )

    async def list_topics(self) -> list[TopicSummary]:
        return await self._transport.list_topics()

    async def describe_topic(self, name: str) -> TopicDescription:
        return await self._transport.describe_topic(name)

    async def delete_topic(self, name: str) -> None:
        await self._transport.delete_topic(name)

    async def add_partitions(self, name: str, partitions: int) -> TopicDescription:
        return await self._transport.add_partitions(name, partitions)

    async def alter_topic_config(
        self,
        name: str,
        values: dict[str, ConfigValue] | None = None,
        reset: list[str] | None = None,
    ) -> TopicDescription:
        return await self._transport.alter_topic_config(name, values or {}, reset or [])

    async def cluster(self) -> ClusterStatus:
        return await self._transport.cluster()

    async def decommission_broker(self, broker_id: int) -> DecommissionResponse:
        return await self._transport.decommission(broker_id, start=True)

    async def decommission_status(self, broker_id: int) -> DecommissionResponse:
        return await self._transport.decommission(broker_id, start=False)

    async def delete_records(
        self, offsets: ops.RecordsTargets, *, timeout_ms: int = 30_000
    ) -> dict[TopicPartition, int]:
        """As :meth:`Admin.delete_records`, the partitions' leaders asked concurrently."""
        return await self._transport.delete_records(offsets, timeout_ms)

    # ---- consumer groups -----------------------------------------------------------------

    async def list_groups(self) -> list[GroupSummary]:
        return await self._transport.list_groups()

    async def describe_group(self, group: str) -> GroupDescription:
        return await self._transport.describe_group(group)

    async def delete_group(self, group: str) -> None:
        """Forget an empty group's committed offsets (GROUP_NOT_EMPTY while it has members)."""
        await self._transport.delete_group(group)

    async def reset_offsets(
        self, group: str, topic: str, to: ResetTarget, partitions: Iterable[int] | None = None
    ) -> OffsetFetchResponse:
        """As :meth:`Admin.reset_offsets`: every partition of ``topic`` or the ones named,
        to ``"earliest"``, ``"latest"``, an offset or a ``Timestamp``."""
        return await self._transport.reset_offsets(group, topic, to, partitions)

    # ---- lifetime ----------------------------------------------------------------------------

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncAdmin:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncAdmin {self.url}>"
