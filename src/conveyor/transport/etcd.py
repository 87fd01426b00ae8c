"""An asyncio client for etcd v3 over its HTTP/JSON gateway (``/v3/...``), on aiohttp.

Chosen by measurement (docs/coordinator.md, "Choosing the etcd client"): the gRPC client
``aetcd`` answers single small transactions faster, but the coordinator writes one
batched transaction at a time, where the gateway's extra cost is small against etcd's own
commit, and this client needs no new dependency, speaks the one ``TLSConfig`` every other
client uses, and fails over between the cluster's members itself.

What the coordinator needs and no more: KV range/put/delete, transactions (compare and
ops), leases (grant, keep-alive, revoke), watches of one key, member status, and
authentication (``/v3/auth/authenticate``: a token sent as ``Authorization``).

Errors are translated once, here: a member that cannot be reached, or a cluster without
quorum ("etcdserver: request timed out"), is :class:`EtcdUnavailableError` (retriable); a
request etcd refuses is :class:`EtcdRequestError`. Reads and requests refused before
anything was sent (connection refused) move on to the next member; a write whose answer
was lost is never re-sent (it may have been applied): the caller decides.

int64 fields arrive as JSON strings (the gateway's proto3 JSON mapping): decoding is
``strict=False``, which reads them as ints.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import aiohttp
import msgspec

from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.transport.tls import TLSConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
REQUEST_TIMEOUT_MS_DEFAULT: Final = 2000
AUTH_TOKEN_INVALID: Final = ("invalid auth token", "auth token is expired")


class EtcdUnavailableError(RetriableError):
    """No member answered in time, or the cluster has no quorum: nothing is known to have
    changed (except for a write whose answer was lost, which may have)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=ErrorCode.NOT_READY)


class EtcdRequestError(ConveyorError):
    """etcd refused the request (bad lease, permission, size limit...)."""

    def __init__(self, message: str, grpc_code: int = 0) -> None:
        super().__init__(message, code=ErrorCode.STORAGE_ERROR, grpc_code=grpc_code)
        self.grpc_code = grpc_code


# ---- wire types (the gateway's JSON) ---------------------------------------------------------


class Header(msgspec.Struct):
    revision: int = 0
    raft_term: int = 0
    member_id: int = 0
    cluster_id: int = 0


class KeyValue(msgspec.Struct):
    key: str = ""  # base64
    value: str = ""  # base64
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @property
    def key_text(self) -> str:
        return base64.b64decode(self.key).decode()

    @property
    def value_bytes(self) -> bytes:
        return base64.b64decode(self.value)


class RangeResponse(msgspec.Struct):
    header: Header = msgspec.field(default_factory=Header)
    kvs: list[KeyValue] = msgspec.field(default_factory=list)
    more: bool = False
    count: int = 0


class PutResponse(msgspec.Struct):
    header: Header = msgspec.field(default_factory=Header)


class DeleteRangeResponse(msgspec.Struct):
    header: Header = msgspec.field(default_factory=Header)
    deleted: int = 0


class ResponseOp(msgspec.Struct):
    response_range: RangeResponse | None = None
    response_put: PutResponse | None = None
    response_delete_range: DeleteRangeResponse | None = None


class TxnResponse(msgspec.Struct):
    header: Header = msgspec.field(default_factory=Header)
    succeeded: bool = False
    responses: list[ResponseOp] = msgspec.field(default_factory=list)


class LeaseGrantResponse(msgspec.Struct, rename={"lease_id": "ID", "ttl_s": "TTL"}):
    header: Header = msgspec.field(default_factory=Header)
    lease_id: int = 0
    ttl_s: int = 0
    error: str = ""


class LeaseKeepAliveResult(msgspec.Struct, rename={"lease_id": "ID", "ttl_s": "TTL"}):
    header: Header = msgspec.field(default_factory=Header)
    lease_id: int = 0
    ttl_s: int = 0  # 0: the lease is gone (expired or revoked)


class _KeepAliveLine(msgspec.Struct):
    result: LeaseKeepAliveResult | None = None
    error: dict[str, Any] | None = None


class Event(msgspec.Struct):
    type: Literal["PUT", "DELETE"] = "PUT"
    kv: KeyValue = msgspec.field(default_factory=KeyValue)


class WatchResult(msgspec.Struct):
    header: Header = msgspec.field(default_factory=Header)
    watch_id: int = 0
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    events: list[Event] = msgspec.field(default_factory=list)


class _WatchLine(msgspec.Struct):
    result: WatchResult | None = None
    error: dict[str, Any] | None = None


class StatusResponse(msgspec.Struct, rename={"db_size_bytes": "dbSize", "raft_index": "raftIndex"}):
    header: Header = msgspec.field(default_factory=Header)
    version: str = ""
    db_size_bytes: int = 0
    leader: int = 0
    raft_index: int = 0
    errors: list[str] = msgspec.field(default_factory=list)


# ---- request builders ------------------------------------------------------------------------


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with ``prefix`` (etcd's rule: the
    prefix with its last byte plus one), base64-encoded."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return b64(bytes(raw))
        raw.pop()
    return b64(b"\0")  # every key


Target = Literal["CREATE", "MOD", "VERSION", "VALUE"]


def compare(key: str, target: Target, value: int | bytes, result: str = "EQUAL") -> dict[str, Any]:
    """One txn condition: ``target`` of ``key`` ``result`` ``value`` (a missing key has
    create, mod revision and version 0)."""
    field_name = {
        "CREATE": "create_revision",
        "MOD": "mod_revision",
        "VERSION": "version",
        "VALUE": "value",
    }[target]
    operand: int | str = b64(value) if isinstance(value, bytes) else value
    return {"key": b64(key), "target": target, "result": result, field_name: operand}


def op_put(key: str, value: bytes, lease_id: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease_id:
        body["lease"] = lease_id
    return {"request_put": body}


def op_get(key: str, *, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = prefix_end(key)
    return {"request_range": body}


def op_delete(key: str, *, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = prefix_end(key)
    return {"request_delete_range": body}


# ---- the client ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    endpoints: tuple[str, ...]  # http(s)://host:port of each member
    tls: TLSConfig = field(default_factory=TLSConfig)  # cafile, client cert for https
    username: str | None = None
    password: str | None = None
    request_timeout_ms: int = REQUEST_TIMEOUT_MS_DEFAULT


def parse_endpoints(text: str) -> tuple[str, ...]:
    """``etcd://h1:p1,h2:p2`` (plain), ``etcds://...`` (TLS) or ``http(s)://h:p,...``:
    the members' client URLs. Raises ValueError with the reason."""
    text = text.strip()
    scheme = "http"
    for prefix, mapped in (("etcd://", "http"), ("etcds://", "https")):
        if text.startswith(prefix):
            text, scheme = text[len(prefix) :], mapped
    endpoints = []
    for raw in text.split(","):
        item = raw.strip().rstrip("/")
        if not item:
            continue
        if "://" not in item:
            item = f"{scheme}://{item}"
        if not item.startswith(("http://", "https://")):
            raise ValueError(f"etcd endpoint {item!r} is not http(s)://host:port")
        host_port = item.split("://", 1)[1]
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host_port:
            raise ValueError(f"etcd endpoint {item!r} is not scheme://host:port")
        endpoints.append(item)
    if not endpoints:
        raise ValueError("no etcd endpoint given (etcd://host:port,host:port,...)")
    return tuple(dict.fromkeys(endpoints))


class EtcdClient:
    """One aiohttp session to the members of one etcd cluster. Use within one event loop."""

    def __init__(self, settings: EtcdSettings) -> None:
        if not settings.endpoints:
            raise ValueError("an etcd client needs at least one endpoint")
        self.settings = settings
        self._current = 0  # the member that answered last
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._closed = False

    @property
    def endpoint(self) -> str:
        return self.settings.endpoints[self._current]

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._closed:
            raise EtcdUnavailableError("the etcd client is closed")
        if self._session is None or self._session.closed:
            tls = self.settings.tls
            ssl_context = (
                tls.client_context()
                if any(e.startswith("https") for e in self.settings.endpoints)
                else None
            )
            connector = aiohttp.TCPConnector(limit=64, ssl=ssl_context or False)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- KV ------------------------------------------------------------------------------

    async def get(
        self, key: str, *, prefix: bool = False, limit: int = 0, revision: int = 0
    ) -> RangeResponse:
        """``key`` (or every key under the prefix ``key``), linearizable; at ``revision``
        when given (several reads at one revision see one consistent state)."""
        end = prefix_end(key) if prefix else None
        return await self.range(key, end, limit=limit, revision=revision)

    async def range(
        self, start: str, end_b64: str | None, *, limit: int = 0, revision: int = 0
    ) -> RangeResponse:
        """Keys in [start, end) (``end_b64`` already encoded, see :func:`prefix_end`;
        None: only ``start``)."""
        body: dict[str, Any] = {"key": b64(start)}
        if end_b64 is not None:
            body["range_end"] = end_b64
        if limit:
            body["limit"] = limit
        if revision:
            body["revision"] = revision
        return await self._call("/v3/kv/range", body, RangeResponse, idempotent=True)

    async def put(self, key: str, value: bytes, lease_id: int = 0) -> PutResponse:
        body = op_put(key, value, lease_id)["request_put"]
        return await self._call("/v3/kv/put", body, PutResponse, idempotent=False)

    async def delete(self, key: str, *, prefix: bool = False) -> DeleteRangeResponse:
        body = op_delete(key, prefix=prefix)["request_delete_range"]
        return await self._call("/v3/kv/deleterange", body, DeleteRangeResponse, idempotent=False)

    async def txn(
        self,
        compares: Sequence[dict[str, Any]],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
        *,
        timeout_ms: int | None = None,
    ) -> TxnResponse:
        body = {"compare": list(compares), "success": list(success), "failure": list(failure)}
        return await self._call(
            "/v3/kv/txn", body, TxnResponse, idempotent=False, timeout_ms=timeout_ms
        )

    # ---- leases --------------------------------------------------------------------------

    async def lease_grant(self, ttl_s: int) -> LeaseGrantResponse:
        granted = await self._call(
            "/v3/lease/grant", {"TTL": ttl_s}, LeaseGrantResponse, idempotent=False
        )
        if granted.error or not granted.lease_id:
            raise EtcdRequestError(f"etcd refused a lease of {ttl_s} s: {granted.error}")
        return granted

    async def lease_keepalive(self, lease_id: int, *, timeout_ms: int) -> int:
        """Renew ``lease_id``; its TTL in seconds, 0 when the lease no longer exists."""
        data = await self._post("/v3/lease/keepalive", {"ID": lease_id}, timeout_ms, True)
        line = msgspec.json.decode(data.split(b"\n", 1)[0], type=_KeepAliveLine, strict=False)
        if line.error is not None:
            raise _request_error(line.error)
        return 0 if line.result is None else line.result.ttl_s

    async def lease_revoke(self, lease_id: int, *, timeout_ms: int | None = None) -> None:
        try:
            await self._call(
                "/v3/lease/revoke", {"ID": lease_id}, Header, idempotent=True, timeout_ms=timeout_ms
            )
        except EtcdRequestError as exc:
            if "lease not found" not in exc.message:
                raise

    # ---- watch, status -------------------------------------------------------------------

    async def watch(self, key: str, start_revision: int) -> AsyncIterator[WatchResult]:
        """Events on ``key`` from ``start_revision`` on, as they happen. The stream ends
        (StopAsyncIteration) when the member closes it; the caller re-reads and watches
        again. No read timeout: cancel the iteration to stop watching."""
        body = {"create_request": {"key": b64(key), "start_revision": start_revision}}
        url = f"{self.endpoint}/v3/watch"
        session = self._session_for_loop()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout_s())
        try:
            async with session.post(
                url, data=json.dumps(body), headers=self._headers(), timeout=timeout
            ) as response:
                if response.status != 200:
                    raise _request_error(await _error_body(response))
                async for raw in response.content:
                    line = msgspec.json.decode(raw, type=_WatchLine, strict=False)
                    if line.error is not None:
                        raise _request_error(line.error)
                    if line.result is not None:
                        yield line.result
        except (aiohttp.ClientError, OSError) as exc:
            self._next_member()
            raise EtcdUnavailableError(f"etcd watch on {url}: {exc or type(exc).__name__}") from exc

    async def status(self, endpoint: str, *, timeout_ms: int = 1000) -> StatusResponse:
        """One member's status (its view of the leader, raft index, db size)."""
        data = await self._post_to(endpoint, "/v3/maintenance/status", {}, timeout_ms / 1000)
        return msgspec.json.decode(data, type=StatusResponse, strict=False)

    # ---- plumbing ------------------------------------------------------------------------

    def _timeout_s(self, timeout_ms: int | None = None) -> float:
        return (timeout_ms or self.settings.request_timeout_ms) / 1000

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = self._token
        return headers

    def _next_member(self) -> None:
        self._current = (self._current + 1) % len(self.settings.endpoints)

    async def _call(
        self,
        path: str,
        body: dict[str, Any],
        kind: type[T],
        *,
        idempotent: bool,
        timeout_ms: int | None = None,
    ) -> T:
        data = await self._post(path, body, timeout_ms, idempotent)
        return msgspec.json.decode(data, type=kind, strict=False)

    async def _post(
        self, path: str, body: dict[str, Any], timeout_ms: int | None, idempotent: bool
    ) -> bytes:
        """POST to the current member; on to the next one while nothing can have been
        applied (connection refused, or any failure of an idempotent request), at most one
        round over the members, within one overall deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s(timeout_ms)
        last: Exception | None = None
        for _ in range(len(self.settings.endpoints)):
            if deadline <= loop.time():
                break
            endpoint = self.endpoint
            try:
                if self._token is None and self.settings.username:
                    await self._authenticate(endpoint, deadline - loop.time())
                return await self._post_to(endpoint, path, body, deadline - loop.time())
            except _UnsentError as exc:
                last = exc.cause
            except EtcdUnavailableError as exc:
                if not idempotent:
                    self._next_member()
                    raise
                last = exc
            except _TokenExpiredError:
                self._token = None
                last = EtcdUnavailableError("etcd auth token expired")
                continue
            self._next_member()
        raise EtcdUnavailableError(f"no etcd member answered {path} in time: {last}")

    async def _post_to(
        self, endpoint: str, path: str, body: dict[str, Any], timeout_s: float
    ) -> bytes:
        """One POST, bounded by ``timeout_s``. Never with a timeout of zero or less: aiohttp
        reads ``total=0`` as *no* timeout, and a retry on the next member once got the
        sub-millisecond rest of a deadline, truncated to 0 ms, and waited forever on a
        member cut off by a partition (issue 15: the renewal thread of a coordinator cut
        from etcd hung in it)."""
        if timeout_s <= 0:
            raise EtcdUnavailableError(f"etcd member {endpoint} {path}: no time left")
        session = self._session_for_loop()
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with session.post(
                endpoint + path, data=json.dumps(body), headers=self._headers(), timeout=timeout
            ) as response:
                data = await response.read()
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            raise _UnsentError(EtcdUnavailableError(f"etcd member {endpoint}: {exc}")) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EtcdUnavailableError(
                f"etcd member {endpoint} {path}: {exc or type(exc).__name__}"
            ) from exc
        if status != 200:
            error = _decode_error(data)
            message = str(error.get("message") or error.get("error") or "")
            if any(m in message for m in AUTH_TOKEN_INVALID):
                raise _TokenExpiredError()
            raise _request_error(error)
        return data

    async def _authenticate(self, endpoint: str, left_s: float) -> None:
        body = {"name": self.settings.username, "password": self.settings.password or ""}
        data = await self._post_to(endpoint, "/v3/auth/authenticate", body, left_s)
        token = msgspec.json.decode(data).get("token")
        if not token:
            raise EtcdRequestError("etcd authentication returned no token")
        self._token = str(token)


class _UnsentError(Exception):
    """Nothing reached the member (connection refused): safe to try the next one."""

    def __init__(self, cause: EtcdUnavailableError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _TokenExpiredError(Exception):
    pass


def _decode_error(data: bytes) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return {"message": data[:200].decode("utf-8", "replace")}
    return decoded if isinstance(decoded, dict) else {"message": str(decoded)[:200]}


async def _error_body(response: aiohttp.ClientResponse) -> dict[str, Any]:
    return _decode_error(await response.read())


# gRPC status codes meaning "try again later": DEADLINE_EXCEEDED, UNAVAILABLE (no leader,
# no quorum, a member stopping).
_UNAVAILABLE_CODES: Final = frozenset({4, 14})


def _request_error(error: dict[str, Any]) -> ConveyorError:
    message = str(error.get("message") or error.get("error") or error)
    code = int(error.get("code") or 0)
    if code in _UNAVAILABLE_CODES or "request timed out" in message or "no leader" in message:
        return EtcdUnavailableError(f"etcd: {message}")
    return EtcdRequestError(f"etcd: {message}", grpc_code=code)
