"""The coordinator's admin operations as a broker calls them over HTTP (its cluster
identity): what the Kafka listener's admin APIs use, so that CreateTopics, DeleteTopics,
CreatePartitions, AlterConfigs and the ACL APIs run the very operations of the HTTP
routes (``coordinator.state``, ``coordinator/security.py``), not a second implementation.
Errors arrive typed (``error_for``), as the coordinator raised them."""

from __future__ import annotations

from urllib.parse import quote

from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterTopicConfigRequest,
    ClusterStatus,
    CreateTopicRequest,
    TopicDescription,
)
from conveyor.protocol.security import AclRule
from conveyor.transport.client import AsyncHTTP, encode_body

_TIMEOUT_S = 30.0


class CoordinatorTopics:
    def __init__(self, http: AsyncHTTP, coordinator_url: str, timeout_s: float = _TIMEOUT_S):
        self._http = http
        self._url = coordinator_url.rstrip("/")
        self._timeout_s = timeout_s

    def _topic(self, name: str) -> str:
        return f"{self._url}/v1/topics/{quote(name, safe='')}"

    async def create(self, request: CreateTopicRequest) -> TopicDescription:
        url = f"{self._url}/v1/topics"
        return await self._http.call(
            "POST", url, TopicDescription, body=request, timeout_s=self._timeout_s
        )

    async def delete(self, name: str) -> None:
        await self._http.request("DELETE", self._topic(name), timeout_s=self._timeout_s)

    async def describe(self, name: str) -> TopicDescription:
        return await self._http.call(
            "GET", self._topic(name), TopicDescription, timeout_s=self._timeout_s
        )

    async def add_partitions(self, name: str, request: AddPartitionsRequest) -> TopicDescription:
        url = self._topic(name) + "/partitions"
        return await self._http.call(
            "POST", url, TopicDescription, body=request, timeout_s=self._timeout_s
        )

    async def alter_config(self, name: str, request: AlterTopicConfigRequest) -> TopicDescription:
        url = self._topic(name) + "/config"
        return await self._http.call(
            "PATCH", url, TopicDescription, body=request, timeout_s=self._timeout_s
        )

    async def cluster(self) -> ClusterStatus:
        return await self._http.call(
            "GET", f"{self._url}/v1/cluster", ClusterStatus, timeout_s=self._timeout_s
        )


class CoordinatorAcls:
    """The ACL rules (``/v1/security/acls``)."""

    def __init__(self, http: AsyncHTTP, coordinator_url: str, timeout_s: float = _TIMEOUT_S):
        self._http = http
        self._url = coordinator_url.rstrip("/") + "/v1/security/acls"
        self._timeout_s = timeout_s

    async def list(self) -> list[AclRule]:
        return await self._http.call("GET", self._url, list[AclRule], timeout_s=self._timeout_s)

    async def add(self, rule: AclRule) -> None:
        await self._http.call("POST", self._url, AclRule, body=rule, timeout_s=self._timeout_s)

    async def remove(self, rule: AclRule) -> None:
        await self._http.request(
            "POST", self._url + "/delete", body=encode_body(rule), timeout_s=self._timeout_s
        )
