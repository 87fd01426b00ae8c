"""The coordinator's transaction operations as a broker's Kafka listener calls them: its
internal routes (``coordinator/txn_http.py``) over the broker's group HTTP client, with
the cluster's identity, to the active coordinator (as ``coordinator_groups.py``)."""

from __future__ import annotations

from typing import Final, TypeVar

from conveyor.protocol.txn import (
    INTERNAL_PREFIX,
    TxnAddPartitionsResponse,
    TxnDescribeRequest,
    TxnDescriptions,
    TxnRoute,
    TxnVerifyRequest,
)
from conveyor.transport.client import AsyncHTTP
from conveyor.transport.txn_routes import TxnRoutes

T = TypeVar("T")
TIMEOUT_S: Final = 30.0  # (InitProducerId and AddPartitionsToTxn may wait up to 10 s)


class CoordinatorTransactions(TxnRoutes):
    def __init__(self, http: AsyncHTTP, coordinator_url: str) -> None:
        super().__init__(http, coordinator_url, INTERNAL_PREFIX, TIMEOUT_S)

    async def describe(self, request: TxnDescribeRequest) -> TxnDescriptions:
        return await self._post(TxnRoute.DESCRIBE, request, TxnDescriptions)

    async def verify(self, request: TxnVerifyRequest) -> TxnAddPartitionsResponse:
        return await self._post(TxnRoute.VERIFY, request, TxnAddPartitionsResponse)
