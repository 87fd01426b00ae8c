"""The coordinator's routes for transactions: internal ones for Kafka's transaction APIs,
forwarded by the broker that received them (``broker/kafka/transactions.py``; the
cluster's identity only: the broker checked the Kafka principal's ACLs, as for the group
routes, ``kafka_http.py``), and the same operations under ``/v1/transactions/...`` for
Conveyor's own transactional producer (``client/transactions.py``; their permissions
are in ``transport/auth.py``: any principal, and ``group`` on the group for offsets).
All are answered by the one transaction coordinator (``txn_service.py``).
"""

from __future__ import annotations

from aiohttp import web

from conveyor.coordinator.txn_service import TransactionCoordinator
from conveyor.protocol.txn import (
    INTERNAL_PREFIX,
    PUBLIC_PREFIX,
    PUBLIC_ROUTES,
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
from conveyor.transport.server import Handler, Route, decode_json, json_response


class TransactionRoutes:
    def __init__(self, coordinator: TransactionCoordinator) -> None:
        self._txn = coordinator

    async def init(self, request: web.Request) -> web.Response:
        return json_response(await self._txn.init(await decode_json(request, TxnInitRequest)))

    async def add_partitions(self, request: web.Request) -> web.Response:
        body = await decode_json(request, TxnAddPartitionsRequest)
        return json_response(await self._txn.add_partitions(body))

    async def add_offsets(self, request: web.Request) -> web.Response:
        body = await decode_json(request, TxnAddOffsetsRequest)
        return json_response(await self._txn.add_offsets(body))

    async def offset_commit(self, request: web.Request) -> web.Response:
        body = await decode_json(request, TxnOffsetCommitRequest)
        return json_response(await self._txn.offset_commit(body))

    async def end(self, request: web.Request) -> web.Response:
        return json_response(await self._txn.end(await decode_json(request, TxnEndRequest)))

    async def describe(self, request: web.Request) -> web.Response:
        body = await decode_json(request, TxnDescribeRequest)
        return json_response(self._txn.describe(body))

    async def verify(self, request: web.Request) -> web.Response:
        body = await decode_json(request, TxnVerifyRequest)
        return json_response(await self._txn.verify(body))

    def routes(self) -> list[Route]:
        return [
            *self._routes(INTERNAL_PREFIX, frozenset(TxnRoute), internal=True),
            *self._routes(PUBLIC_PREFIX, PUBLIC_ROUTES, internal=False),
        ]

    def _routes(self, prefix: str, served: frozenset[TxnRoute], internal: bool) -> list[Route]:
        table: list[tuple[TxnRoute, Handler, str, type, type]] = [
            (TxnRoute.INIT, self.init, "Kafka InitProducerId with a transactional id",
             TxnInitRequest, TxnInitResponse),
            (TxnRoute.ADD_PARTITIONS, self.add_partitions, "Kafka AddPartitionsToTxn",
             TxnAddPartitionsRequest, TxnAddPartitionsResponse),
            (TxnRoute.ADD_OFFSETS, self.add_offsets, "Kafka AddOffsetsToTxn",
             TxnAddOffsetsRequest, TxnResult),
            (TxnRoute.OFFSET_COMMIT, self.offset_commit, "Kafka TxnOffsetCommit",
             TxnOffsetCommitRequest, TxnOffsetCommitResponse),
            (TxnRoute.END, self.end, "Kafka EndTxn (answers once the decision is durable)",
             TxnEndRequest, TxnResult),
            (TxnRoute.DESCRIBE, self.describe, "Kafka DescribeTransactions / ListTransactions",
             TxnDescribeRequest, TxnDescriptions),
            (TxnRoute.VERIFY, self.verify, "KIP-890: are these partitions in the producer's "
             "ongoing transaction? (a partition leader's check before its first "
             "transactional append)", TxnVerifyRequest, TxnAddPartitionsResponse),
        ]  # fmt: skip
        return [
            Route(
                "POST",
                f"{prefix}/{path}",
                handler,
                summary,
                request=req,
                response=resp,
                internal=internal,
                tags=() if internal else ("transactions",),
            )
            for path, handler, summary, req, resp in table
            if path in served
        ]
