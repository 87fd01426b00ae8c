"""The cluster as the console sees it: the coordinator's and the brokers' public HTTP API,
called with the signed-in user's credentials.

There is no other way in: no in-process call into the coordinator's state, no cluster
secret. The coordinator's and each broker's auth middleware decide what the user may do,
exactly as for the CLI, and a refusal comes back as the same typed error (401, 403, ...).
One aiohttp session serves every user; the ``Authorization`` header is set per call (the
transport's ``AsyncHTTP`` would fall back to the process environment, which on a
coordinator holds the cluster secret: never for the console). Each call also names the
user's browser address, signed (``transport/forwarded.py``), so the services' limit on
failed passwords counts each browser, not the console, as one client.

With several coordinators (high availability), the coordinator serving the console may
be a standby: its API answers ``NOT_COORDINATOR`` naming the active one, and the calls go
there (``transport/coordinators.py``, as every client of the cluster does), so a page
served by any coordinator works, and keeps working across a failover.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import msgspec

from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterTopicConfigRequest,
    ClusterStatus,
    CoordinatorStatus,
    CreateTopicRequest,
    FetchResponse,
    GroupDescription,
    GroupList,
    Health,
    HostedPartitions,
    JsonProduceRequest,
    Metadata,
    OffsetFetchResponse,
    PartitionOffsets,
    ResetOffsetsRequest,
    RoutedProduceResponse,
    TopicDescription,
    TopicList,
)
from conveyor.protocol.security import (
    AclRule,
    TokenCreated,
    TokenCreateRequest,
    TokenSummary,
    UserCreateRequest,
    UserSummary,
    WhoAmI,
)
from conveyor.transport import forwarded
from conveyor.transport.client import CLIENT_ID_HEADER, aiohttp_failure, encode_body, error_for
from conveyor.transport.coordinators import CoordinatorSet, NotSentError, with_failover
from conveyor.transport.tls import TLSConfig

T = TypeVar("T")
CLIENT_ID = "conveyor-console"
# Broker counters read from /metrics for the overview's rates (docs/monitoring.md).
MESSAGES_IN = "conveyor_broker_messages_in_total{"
MESSAGES_OUT = "conveyor_broker_messages_out_total{"


def _q(name: str) -> str:
    return quote(name, safe="")


class ConsoleHTTP:
    """The console's one HTTP client; made lazily inside the running loop."""

    def __init__(self, tls: TLSConfig, timeout_s: float) -> None:
        self._tls = tls
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=64, ssl=self._tls.client_context())
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout_s)
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        authorization: str | None,
        body: bytes | None = None,
        *,
        accept: str = "application/json",
        extra: Mapping[str, str] | None = None,
    ) -> bytes:
        """The answer's body; raises the typed error of a refusal, else as every client
        of the cluster does (``aiohttp_failure``: TLS_ERROR for a failed handshake,
        :class:`NotSentError` when the connection could not even be opened)."""
        headers = {"Accept": accept, CLIENT_ID_HEADER: CLIENT_ID, **(extra or {})}
        if authorization is not None:
            headers["Authorization"] = authorization
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._client().request(method, url, data=body, headers=headers) as answer:
                data = await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise aiohttp_failure(method, url, exc) from exc
        if status >= 400:
            raise error_for(status, data)
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who the calls are for: the ``Authorization`` header the user signed in with (None
    with auth off) and the address of their browser, signed with ``key`` per call."""

    authorization: str | None
    address: str | None = None
    key: bytes | None = None

    def headers(self) -> dict[str, str]:
        if self.address is None or self.key is None:
            return {}
        now_ms = time.time_ns() // 1_000_000
        return {forwarded.HEADER: forwarded.sign(self.key, self.address, now_ms)}


class ClusterAPI:
    """The calls of one user. ``url`` is the coordinator the console runs in;
    ``coordinators`` holds it and, once learned, the active one."""

    def __init__(
        self, http: ConsoleHTTP, url: str, caller: Caller, coordinators: CoordinatorSet
    ) -> None:
        self._http = http
        self.url = url
        self._caller = caller
        self._authorization = caller.authorization
        self._coordinators = coordinators

    async def _request(
        self, method: str, url: str, body: bytes | None, accept: str = "application/json"
    ) -> bytes:
        """A coordinator's route goes to the active coordinator; a broker's as given."""
        authorization, extra = self._authorization, self._caller.headers()

        def send(target: str) -> Awaitable[bytes]:
            return self._http.request(
                method, target, authorization, body, accept=accept, extra=extra
            )

        return await with_failover(self._coordinators, url, send)

    async def _call(
        self,
        method: str,
        url: str,
        kind: type[T],
        body: msgspec.Struct | dict[str, Any] | None = None,
    ) -> T:
        data = await self._request(method, url, encode_body(body))
        return msgspec.json.decode(data, type=kind)

    async def _send(self, method: str, url: str, body: msgspec.Struct | None = None) -> None:
        await self._request(method, url, encode_body(body))

    # ---- coordinator ----------------------------------------------------------------------

    async def coordinator_status(self) -> CoordinatorStatus:
        """This coordinator's own answer (active, standby or single), never forwarded."""
        try:
            data = await self._http.request("GET", f"{self.url}/v1/coordinator", None)
        except NotSentError as exc:
            raise exc.error from exc.__cause__
        return msgspec.json.decode(data, type=CoordinatorStatus)

    async def whoami(self) -> WhoAmI:
        return await self._call("GET", f"{self.url}/v1/security/whoami", WhoAmI)

    async def metadata(self, topic: str) -> Metadata:
        """Leaders and brokers for ``topic``: any signed-in principal may ask."""
        url = f"{self.url}/v1/metadata?topics={_q(topic)}"
        return await self._call("GET", url, Metadata)

    async def cluster(self) -> ClusterStatus:
        return await self._call("GET", f"{self.url}/v1/cluster", ClusterStatus)

    async def topics(self) -> TopicList:
        return await self._call("GET", f"{self.url}/v1/topics", TopicList)

    async def topic(self, name: str) -> TopicDescription:
        return await self._call("GET", f"{self.url}/v1/topics/{_q(name)}", TopicDescription)

    async def create_topic(self, request: CreateTopicRequest) -> TopicDescription:
        return await self._call("POST", f"{self.url}/v1/topics", TopicDescription, request)

    async def delete_topic(self, name: str) -> None:
        await self._send("DELETE", f"{self.url}/v1/topics/{_q(name)}")

    async def alter_topic_config(
        self, name: str, request: AlterTopicConfigRequest
    ) -> TopicDescription:
        url = f"{self.url}/v1/topics/{_q(name)}/config"
        return await self._call("PATCH", url, TopicDescription, request)

    async def add_partitions(self, name: str, request: AddPartitionsRequest) -> TopicDescription:
        url = f"{self.url}/v1/topics/{_q(name)}/partitions"
        return await self._call("POST", url, TopicDescription, request)

    async def groups(self) -> GroupList:
        return await self._call("GET", f"{self.url}/v1/groups", GroupList)

    async def group(self, name: str) -> GroupDescription:
        return await self._call("GET", f"{self.url}/v1/groups/{_q(name)}", GroupDescription)

    async def reset_offsets(self, name: str, request: ResetOffsetsRequest) -> OffsetFetchResponse:
        url = f"{self.url}/v1/groups/{_q(name)}/offsets/reset"
        return await self._call("POST", url, OffsetFetchResponse, request)

    async def delete_group(self, name: str) -> None:
        await self._send("DELETE", f"{self.url}/v1/groups/{_q(name)}")

    # ---- security (admin on cluster) ------------------------------------------------------

    async def users(self) -> list[UserSummary]:
        return await self._call("GET", f"{self.url}/v1/security/users", list[UserSummary])

    async def add_user(self, name: str, password: str) -> UserSummary:
        body = UserCreateRequest(name=name, password=password)
        return await self._call("POST", f"{self.url}/v1/security/users", UserSummary, body)

    async def remove_user(self, name: str) -> None:
        await self._send("DELETE", f"{self.url}/v1/security/users/{_q(name)}")

    async def tokens(self) -> list[TokenSummary]:
        return await self._call("GET", f"{self.url}/v1/security/tokens", list[TokenSummary])

    async def create_token(self, request: TokenCreateRequest) -> TokenCreated:
        return await self._call("POST", f"{self.url}/v1/security/tokens", TokenCreated, request)

    async def revoke_token(self, token_id: str) -> None:
        await self._send("DELETE", f"{self.url}/v1/security/tokens/{_q(token_id)}")

    async def acls(self) -> list[AclRule]:
        return await self._call("GET", f"{self.url}/v1/security/acls", list[AclRule])

    async def add_acl(self, rule: AclRule) -> None:
        await self._send("POST", f"{self.url}/v1/security/acls", rule)

    async def remove_acl(self, rule: AclRule) -> None:
        await self._send("POST", f"{self.url}/v1/security/acls/delete", rule)

    # ---- brokers --------------------------------------------------------------------------

    async def hosted(self, broker_url: str) -> HostedPartitions:
        return await self._call("GET", f"{broker_url}/v1/partitions", HostedPartitions)

    async def broker_health(self, broker_url: str) -> Health:
        return await self._call("GET", f"{broker_url}/healthz", Health)

    async def broker_traffic(self, broker_url: str) -> tuple[int, int]:
        """Messages in and out so far (sums of the broker's per-partition counters)."""
        data = await self._request("GET", f"{broker_url}/metrics", None, accept="text/plain")
        return await asyncio.to_thread(traffic_totals, data)

    async def offsets(
        self, leader_url: str, topic: str, partition: int, timestamp_ms: int | None = None
    ) -> PartitionOffsets:
        query = "" if timestamp_ms is None else f"?timestamp_ms={timestamp_ms}"
        url = f"{leader_url}/v1/topics/{_q(topic)}/partitions/{partition}/offsets{query}"
        return await self._call("GET", url, PartitionOffsets)

    async def fetch(
        self, leader_url: str, topic: str, partition: int, offset: int, max_bytes: int
    ) -> FetchResponse:
        query = urlencode({"offset": offset, "max_bytes": max_bytes})
        url = f"{leader_url}/v1/topics/{_q(topic)}/partitions/{partition}/records?{query}"
        return await self._call("GET", url, FetchResponse)

    async def produce(
        self, broker_url: str, topic: str, request: JsonProduceRequest
    ) -> RoutedProduceResponse:
        url = f"{broker_url}/v1/topics/{_q(topic)}/records?timeout_ms=10000"
        return await self._call("POST", url, RoutedProduceResponse, request)

    # ---- Prometheus (optional) ------------------------------------------------------------

    async def firing_alerts(self, prometheus_url: str) -> list[dict[str, Any]]:
        """Alerts in state ``firing`` from Prometheus' ``/api/v1/alerts`` (no credentials:
        Prometheus is the operator's, and its answer is only labels and annotations)."""
        try:
            data = await self._http.request("GET", f"{prometheus_url}/api/v1/alerts", None)
        except NotSentError as exc:
            raise exc.error from exc.__cause__
        try:
            body = msgspec.json.decode(data)
            alerts = body["data"]["alerts"]
        except (msgspec.DecodeError, KeyError, TypeError) as exc:
            raise ConveyorError(f"unexpected answer from Prometheus: {exc}") from exc
        return [a for a in alerts if isinstance(a, dict) and a.get("state") == "firing"]


def traffic_totals(exposition: bytes) -> tuple[int, int]:
    """Sum the messages-in and messages-out counters of a broker's ``/metrics`` text."""
    messages_in = messages_out = 0
    for line in exposition.decode("utf-8", "replace").splitlines():
        if line.startswith(MESSAGES_IN):
            messages_in += _sample_value(line)
        elif line.startswith(MESSAGES_OUT):
            messages_out += _sample_value(line)
    return messages_in, messages_out


def _sample_value(line: str) -> int:
    try:
        return int(float(line.rsplit(" ", 1)[1]))
    except (IndexError, ValueError):
        return 0
