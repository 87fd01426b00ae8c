"""``Admin``: topics, the cluster and consumer groups (sync).

The operations run on a private event loop thread over the transport the settings choose
(``admin_transport.py``): by default reads over the brokers' Kafka listeners (found
through the coordinator) and changes at the coordinator (``admin_routed.py``); every call
Kafka carries over the brokers' listeners with ``transport="kafka"`` or
``bootstrap_servers="host:port,..."``; every call at the coordinator with
``transport="http"``. One implementation of each operation per transport, shared with
:class:`AsyncAdmin`.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

from conveyor.client import admin_ops as ops
from conveyor.client.admin_ops import ResetTarget
from conveyor.client.admin_transport import AdminTransport, admin_transport
from conveyor.client.loop import LoopThread
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

T = TypeVar("T")


class Admin:
    """Create, list, describe and delete topics; read the cluster's status; list,
    describe, delete consumer groups and reset their offsets.

    Errors arrive typed: e.g. ``InvalidRequestError`` with code ``TOPIC_ALREADY_EXISTS``,
    ``UNKNOWN_TOPIC`` or ``INVALID_TOPIC``, on either transport; an operation no Kafka API
    carries raises ``CoordinatorRequiredError`` on the Kafka transport.
    """

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
        """Credentials: ``token`` (Bearer), or ``user`` and ``password`` (Basic; SCRAM over
        Kafka); none given: ``CONVEYOR_TOKEN`` or ``CONVEYOR_USER``/``CONVEYOR_PASSWORD``.
        ``transport`` and ``bootstrap_servers`` as :class:`Producer` takes them; neither
        given: ``CONVEYOR_TRANSPORT`` and ``CONVEYOR_BOOTSTRAP_SERVERS``."""
        # the transport first: a bad setting must not leave a loop thread behind
        self._transport, self.url = admin_transport(
            url, tls, timeout_s, token, user, password, transport, bootstrap_servers
        )
        self._io = LoopThread("conveyor-admin-io")
        self._closed = False
        # ``Admin(url).create_topic(...)`` without close() is common (and was free when the
        # sync Admin had no loop): when it is collected, its connections close on its own
        # loop and the loop's thread ends, instead of a session collected open and a
        # thread left running
        self._finalizer = weakref.finalize(
            self, _close_unreferenced, self._io, self._transport, os.getpid()
        )

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._io.run(call)

    def create_topic(
        self,
        name: str,
        partitions: int = 8,
        replication_factor: int | None = None,
        config: TopicConfig | dict[str, Any] | None = None,
    ) -> TopicDescription:
        """Create ``name``; ``replication_factor`` None lets the cluster choose (min(3,
        live brokers)); ``config`` holds TopicConfig fields (unknown keys are rejected)."""
        config = ops.topic_config(config)
        return self._run(self._transport.create_topic(name, partitions, replication_factor, config))

    def list_topics(self) -> list[TopicSummary]:
        return self._run(self._transport.list_topics())

    def describe_topic(self, name: str) -> TopicDescription:
        return self._run(self._transport.describe_topic(name))

    def delete_topic(self, name: str) -> None:
        self._run(self._transport.delete_topic(name))

    def add_partitions(self, name: str, partitions: int) -> TopicDescription:
        """Grow ``name`` to ``partitions`` in all (INVALID_PARTITIONS unless larger)."""
        return self._run(self._transport.add_partitions(name, partitions))

    def alter_topic_config(
        self,
        name: str,
        values: dict[str, ConfigValue] | None = None,
        reset: list[str] | None = None,
    ) -> TopicDescription:
        """Set some TopicConfig fields of ``name`` and put ``reset`` back to their
        defaults; the others keep their values. Brokers apply it without a restart."""
        return self._run(self._transport.alter_topic_config(name, values or {}, reset or []))

    def cluster(self) -> ClusterStatus:
        return self._run(self._transport.cluster())

    def decommission_broker(self, broker_id: int) -> DecommissionResponse:
        """Start draining a broker (idempotent); ``done`` once it holds no replica."""
        return self._run(self._transport.decommission(broker_id, start=True))

    def decommission_status(self, broker_id: int) -> DecommissionResponse:
        return self._run(self._transport.decommission(broker_id, start=False))

    def delete_records(
        self,
        offsets: ops.RecordsTargets,
        *,
        timeout_ms: int = 30_000,
    ) -> dict[TopicPartition, int]:
        """Delete every record below the given offset of each partition (-1: its high
        watermark; a ``Timestamp``: every record older than it), Kafka's DeleteRecords,
        on each partition's leader. Returns each partition's low watermark (its lowest log
        start over the in-sync replicas, at least the offset asked). Every partition is
        tried (a moved leader is found again); then the first failure is raised (a typed
        error: OFFSET_OUT_OF_RANGE beyond the high watermark, POLICY_VIOLATION on a
        compact-only topic, UNKNOWN_TOPIC...), the other partitions being done."""
        return self._run(self._transport.delete_records(offsets, timeout_ms))

    # ---- consumer groups -----------------------------------------------------------------

    def list_groups(self) -> list[GroupSummary]:
        return self._run(self._transport.list_groups())

    def describe_group(self, group: str) -> GroupDescription:
        """Members, their partitions, and each partition's committed offset and lag."""
        return self._run(self._transport.describe_group(group))

    def delete_group(self, group: str) -> None:
        """Forget an empty group's committed offsets; GROUP_NOT_EMPTY while it has
        members, UNKNOWN_GROUP when it committed nothing."""
        self._run(self._transport.delete_group(group))

    def reset_offsets(
        self, group: str, topic: str, to: ResetTarget, partitions: Iterable[int] | None = None
    ) -> OffsetFetchResponse:
        """Set ``group``'s committed offsets of ``topic`` (every partition, or the ones in
        ``partitions``) to ``to``: ``"earliest"``, ``"latest"``, an offset or a
        :class:`Timestamp`; GROUP_NOT_EMPTY while the group has members."""
        return self._run(self._transport.reset_offsets(group, topic, to, partitions))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        try:
            self._run(self._transport.close())
        finally:
            self._io.stop()

    def __enter__(self) -> Admin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Admin {self.url}>"


def _close_unreferenced(io: LoopThread, transport: AdminTransport, pid: int) -> None:
    """Close a collected Admin's transport on its loop, then stop the loop. Never blocks:
    the collection may happen on any thread, the loop's own included. Not in a forked
    child: the loop and its thread belong to the parent."""
    if os.getpid() != pid:
        return

    async def close_then_stop() -> None:
        try:
            await transport.close()
        finally:
            asyncio.get_running_loop().stop()

    def start() -> None:
        task = io.loop.create_task(close_then_stop())
        _CLOSING.add(task)  # the loop holds tasks weakly
        task.add_done_callback(_CLOSING.discard)

    io.call_soon(start)


_CLOSING: set[asyncio.Task[None]] = set()
