"""The coordinator's transaction routes over HTTP (``coordinator/txn_http.py``): one
client for both callers, the producer (public prefix, its request timeout) and a broker's
Kafka listener (internal prefix, with describe and KIP-890 verify on top)."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from conveyor.protocol.txn import (
    TxnAddOffsetsRequest,
    TxnAddPartitionsRequest,
    TxnAddPartitionsResponse,
    TxnEndRequest,
    TxnInitRequest,
    TxnInitResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnResult,
    TxnRoute,
)
from conveyor.transport.client import AsyncHTTP

T = TypeVar("T")


class TxnRoutes:
    """``prefix``: ``PUBLIC_PREFIX`` or ``INTERNAL_PREFIX`` of ``protocol/txn.py``."""

    def __init__(
        self, http: AsyncHTTP, coordinator_url: str, prefix: str, timeout_s: float
    ) -> None:
        self._http = http
        self._url = coordinator_url.rstrip("/") + prefix + "/"
        self._timeout_s = timeout_s

    async def _post(self, route: TxnRoute, body: msgspec.Struct, answer: type[T]) -> T:
        return await self._http.call(
            "POST", self._url + route, answer, body=body, timeout_s=self._timeout_s
        )

    async def init(self, request: TxnInitRequest) -> TxnInitResponse:
        return await self._post(TxnRoute.INIT, request, TxnInitResponse)

    async def add_partitions(self, request: TxnAddPartitionsRequest) -> TxnAddPartitionsResponse:
        return await self._post(TxnRoute.ADD_PARTITIONS, request, TxnAddPartitionsResponse)

    async def add_offsets(self, request: TxnAddOffsetsRequest) -> TxnResult:
        return await self._post(TxnRoute.ADD_OFFSETS, request, TxnResult)

    async def offset_commit(self, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse:
        return await self._post(TxnRoute.OFFSET_COMMIT, request, TxnOffsetCommitResponse)

    async def end(self, request: TxnEndRequest) -> TxnResult:
        return await self._post(TxnRoute.END, request, TxnResult)
