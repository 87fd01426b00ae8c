"""``Admin``: topic and cluster administration against the coordinator (sync)."""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import quote

from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterTopicConfigRequest,
    BrokerId,
    ClusterStatus,
    ConfigValue,
    CreateTopicRequest,
    DecommissionResponse,
    TopicConfig,
    TopicDescription,
    TopicList,
    TopicSummary,
)
from conveyor.transport.client import SyncHTTP, coordinator_set
from conveyor.transport.tls import TLSConfig


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
        if isinstance(config, dict):
            config = TopicConfig(**config)
        request = CreateTopicRequest(
            name=name, partitions=partitions, replication_factor=replication_factor, config=config
        )
        return self._http.call("POST", f"{self.url}/v1/topics", TopicDescription, body=request)

    def list_topics(self) -> list[TopicSummary]:
        return self._http.call("GET", f"{self.url}/v1/topics", TopicList).topics

    def describe_topic(self, name: str) -> TopicDescription:
        return self._http.call("GET", self._topic_url(name), TopicDescription)

    def delete_topic(self, name: str) -> None:
        self._http.request("DELETE", self._topic_url(name))

    def add_partitions(self, name: str, partitions: int) -> TopicDescription:
        """Grow ``name`` to ``partitions`` in all (INVALID_PARTITIONS unless larger)."""
        request = AddPartitionsRequest(partitions=partitions)
        url = self._topic_url(name) + "/partitions"
        return self._http.call("POST", url, TopicDescription, body=request)

    def alter_topic_config(
        self,
        name: str,
        values: dict[str, ConfigValue] | None = None,
        reset: list[str] | None = None,
    ) -> TopicDescription:
        """Set some TopicConfig fields of ``name`` and put ``reset`` back to their
        defaults; the others keep their values. Brokers apply it without a restart."""
        request = AlterTopicConfigRequest(set=values or {}, reset=reset or [])
        url = self._topic_url(name) + "/config"
        return self._http.call("PATCH", url, TopicDescription, body=request)

    def cluster(self) -> ClusterStatus:
        return self._http.call("GET", f"{self.url}/v1/cluster", ClusterStatus)

    def decommission_broker(self, broker_id: int) -> DecommissionResponse:
        """Start draining a broker (idempotent); ``done`` once it holds no replica."""
        url = f"{self.url}/v1/brokers/{BrokerId(broker_id)}/decommission"
        return self._http.call("POST", url, DecommissionResponse)

    def decommission_status(self, broker_id: int) -> DecommissionResponse:
        url = f"{self.url}/v1/brokers/{BrokerId(broker_id)}/decommission"
        return self._http.call("GET", url, DecommissionResponse)

    def _topic_url(self, name: str) -> str:
        return f"{self.url}/v1/topics/{quote(name, safe='')}"

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
