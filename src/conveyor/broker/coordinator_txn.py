"""The coordinator's transaction operations as a broker's Kafka listener calls them: its
internal routes (``coordinator/txn_http.py``) over the broker's group HTTP client, with
the cluster's identity, to the active coordinator (as ``coordinator_groups.py``)."""

from __future__ import annotations

from typing import Final, TypeVar

import msgspec

from conveyor.protocol.txn import (
    INTERNAL_PREFIX,
    TxnAddOffsetsRequest,
    TxnAddPartitionsRequest,
    TxnAddPartitionsResponse,
    TxnDescribeRequest,
    TxnDescriptions,
    TxnEndRequest,
    TxnInitRequest,
    TxnInitResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnResult,
    TxnRoute,
    TxnVerifyRequest,
)
from conveyor.transport.client import AsyncHTTP

T = TypeVar("T")
TIMEOUT_S: Final = 30.0  # (InitProducerId and AddPartitionsToTxn may wait up to 10 s)


class CoordinatorTransactions:
    def __init__(self, http: AsyncHTTP, coordinator_url: str) -> None:
        self._http = http
        self._url = coordinator_url.rstrip("/") + INTERNAL_PREFIX + "/"

    async def _post(
        self, path: TxnRoute, body: msgspec.Struct, answer: type[T], timeout_s: float = TIMEOUT_S
    ) -> T:
        return await self._http.call(
            "POST", self._url + path, answer, body=body, timeout_s=timeout_s
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

    async def describe(self, request: TxnDescribeRequest) -> TxnDescriptions:
        return await self._post(TxnRoute.DESCRIBE, request, TxnDescriptions)

    async def verify(self, request: TxnVerifyRequest) -> TxnAddPartitionsResponse:
        return await self._post(TxnRoute.VERIFY, request, TxnAddPartitionsResponse)
