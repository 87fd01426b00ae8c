"""``Admin``: topic and cluster administration against the coordinator (sync)."""

from __future__ import annotations

import random
import time
from types import TracebackType
from typing import Any, TypeVar

from conveyor.client import admin_ops as ops
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import (
    ClusterStatus,
    ConfigValue,
    DecommissionResponse,
    DeletedRecords,
    PartitionOffsets,
    TopicConfig,
    TopicDescription,
    TopicSummary,
)
from conveyor.transport.client import SyncHTTP, coordinator_set
from conveyor.transport.tls import TLSConfig

T = TypeVar("T")


class Admin:
    """Create, list, describe and delete topics; read the cluster's status.

    Errors arrive typed: e.g. ``InvalidRequestError`` with code ``TOPIC_ALREADY_EXISTS``,
    ``UNKNOWN_TOPIC`` or ``INVALID_TOPIC``.
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
    ) -> None:
        """Credentials: ``token`` (Bearer), or ``user`` and ``password`` (Basic); none given:
        ``CONVEYOR_TOKEN`` or ``CONVEYOR_USER``/``CONVEYOR_PASSWORD`` from the environment."""
        from conveyor.transport.credentials import authorization_header

        coordinators = coordinator_set(url)
        self.url = coordinators.primary  # requests go to the active coordinator
        self._http = SyncHTTP(
            tls,
            timeout_s=timeout_s,
            pool_size=4,
            authorization=authorization_header(token, user, password),
            coordinators=coordinators,
        )

    def create_topic(
        self,
        name: str,
        partitions: int = 8,
        replication_factor: int | None = None,
        config: TopicConfig | dict[str, Any] | None = None,
    ) -> TopicDescription:
        """Create ``name``; ``replication_factor`` None lets the cluster choose (min(3,
        live brokers)); ``config`` holds TopicConfig fields (unknown keys are rejected)."""
        return self._run(ops.create_topic(name, partitions, replication_factor, config))

    def list_topics(self) -> list[TopicSummary]:
        return self._run(ops.list_topics()).topics

    def describe_topic(self, name: str) -> TopicDescription:
        return self._run(ops.describe_topic(name))

    def delete_topic(self, name: str) -> None:
        self._run(ops.delete_topic(name))

    def add_partitions(self, name: str, partitions: int) -> TopicDescription:
        """Grow ``name`` to ``partitions`` in all (INVALID_PARTITIONS unless larger)."""
        return self._run(ops.add_partitions(name, partitions))

    def alter_topic_config(
        self,
        name: str,
        values: dict[str, ConfigValue] | None = None,
        reset: list[str] | None = None,
    ) -> TopicDescription:
        """Set some TopicConfig fields of ``name`` and put ``reset`` back to their
        defaults; the others keep their values. Brokers apply it without a restart."""
        return self._run(ops.alter_topic_config(name, values, reset))

    def cluster(self) -> ClusterStatus:
        return self._run(ops.cluster())

    def decommission_broker(self, broker_id: int) -> DecommissionResponse:
        """Start draining a broker (idempotent); ``done`` once it holds no replica."""
        return self._run(ops.decommission(broker_id, start=True))

    def decommission_status(self, broker_id: int) -> DecommissionResponse:
        return self._run(ops.decommission(broker_id, start=False))

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
        deletion = ops.RecordsDeletion(offsets, timeout_ms)
        while True:
            routes = ops.leader_urls(self._run(deletion.metadata()), deletion.pending)
            outcomes: dict[TopicPartition, int | ConveyorError] = {}
            for tp in deletion.pending:
                try:
                    outcomes[tp] = self._delete_on_leader(deletion, routes[tp], tp)
                except ConveyorError as exc:
                    outcomes[tp] = exc
            if not deletion.settle(outcomes):
                return deletion.result()
            time.sleep(deletion.pause_s(random.random()))

    def _delete_on_leader(
        self, deletion: ops.RecordsDeletion, route: str | ConveyorError, tp: TopicPartition
    ) -> int:
        leader = ops.leader(route)
        ask = deletion.offsets_call(tp)
        offsets = None
        if ask is not None:
            offsets = self._http.call(ask.method, leader + ask.path, PartitionOffsets)
        call = deletion.delete_call(tp, offsets)
        answer = self._http.call(
            call.method, leader + call.path, DeletedRecords, timeout_s=deletion.timeout_s
        )
        return answer.low_watermark

    def _run(self, call: ops.Call[T]) -> T:
        if call.response is None:
            self._http.request(call.method, self.url + call.path, body=call.body)
            return None  # type: ignore[return-value]
        return self._http.call(call.method, self.url + call.path, call.response, body=call.body)

    def close(self) -> None:
        self._http.close()

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
