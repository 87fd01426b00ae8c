"""Writing transaction markers (issue 21): the coordinator's ``POST
/internal/v1/txn/markers`` on a partition leader. Each marker is one control batch
(``protocol/txn.py``) appended through the one produce path with acks=all, so it is
replicated, fences older epochs of its producer (``rules.record_producer_batch``) and
closes the producer's transaction in the partition's index (``storage/txnindex.py``),
which moves the last stable offset. Every partition is answered on its own; the
coordinator retries those that failed (a leader change, a timeout).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import ProduceResponse
from conveyor.protocol.txn import (
    MARKERS_PATH,
    TxnMarkersRequest,
    TxnMarkersResponse,
    TxnPartition,
    TxnPartitionResult,
    marker_batch,
)
from conveyor.transport.server import Route, decode_json, json_response
from conveyor.transport.waits import gather_all

log = logging.getLogger(__name__)


Produce = Callable[..., Awaitable[ProduceResponse]]  # BrokerService.produce


class MarkerWriter:
    def __init__(self, produce: Produce, now_ms: Callable[[], int]) -> None:
        self._produce = produce
        self._now_ms = now_ms

    async def write(self, request: TxnMarkersRequest) -> TxnMarkersResponse:
        results = await gather_all(*(self._one(request, p) for p in request.partitions))
        return TxnMarkersResponse(partitions=list(results))

    async def _one(self, request: TxnMarkersRequest, tp: TxnPartition) -> TxnPartitionResult:
        batch = marker_batch(
            request.producer_id,
            request.producer_epoch,
            request.commit,
            request.coordinator_epoch,
            self._now_ms(),
        )
        try:
            answer = await self._produce(tp.topic, tp.partition, batch, control=True)
        except ConveyorError as exc:
            log.info(
                "%s marker of producer %d epoch %d on %s-%d not written: %s",
                "COMMIT" if request.commit else "ABORT",
                request.producer_id,
                request.producer_epoch,
                tp.topic,
                tp.partition,
                exc,
            )
            return TxnPartitionResult(tp.topic, tp.partition, exc.code.name)
        log.debug(
            "%s marker of producer %d at %s-%d offset %d",
            "COMMIT" if request.commit else "ABORT",
            request.producer_id,
            tp.topic,
            tp.partition,
            answer.base_offset,
        )
        return TxnPartitionResult(tp.topic, tp.partition)

    async def handle(self, request: web.Request) -> web.Response:
        return json_response(await self.write(await decode_json(request, TxnMarkersRequest)))

    def route(self) -> Route:
        return Route(
            "POST",
            MARKERS_PATH,
            self.handle,
            "Write a transaction's COMMIT or ABORT markers to partitions this broker leads "
            "(the coordinator's, issue 21)",
            request=TxnMarkersRequest,
            response=TxnMarkersResponse,
            internal=True,
        )
