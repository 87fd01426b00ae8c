"""The transport of replication messages: the core's typed messages over HTTP.

The core addresses a message to a broker id or to the coordinator (``SendReplicaFetch``,
``SendEpochEnd``, ``SendAlterIsr``); this adapter turns an id into a URL (the metadata
cache's broker table), sends, and decodes the answer. Moving replication onto another
transport (the Kafka protocol) replaces this module only. The same paths are served by
``http.py`` on the leader's side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.fetchframe import FRAMED_CONTENT_TYPE, decode_fetch_response
from conveyor.protocol.messages import (
    AlterIsrRequest,
    AlterIsrResponse,
    BrokerId,
    EpochEndRequest,
    EpochEndResponse,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
)
from conveyor.transport.client import AsyncHTTP

FETCH_PATH: Final = "/internal/v1/replicas/fetch"
EPOCH_END_PATH: Final = "/internal/v1/replicas/epoch-end"
ALTER_ISR_PATH: Final = "/internal/v1/partitions/isr"
ALTER_ISR_TIMEOUT_S: Final = 5.0
EPOCH_END_TIMEOUT_S: Final = 10.0
FETCH_MARGIN_S: Final = 10.0  # beyond the long-poll, before a fetch counts as lost

__all__ = ["EPOCH_END_PATH", "FETCH_PATH", "FRAMED_CONTENT_TYPE", "HttpPeers"]


class HttpPeers:
    def __init__(
        self,
        http: AsyncHTTP,
        coordinator_url: Callable[[], str],
        broker_url: Callable[[BrokerId], str | None],
        accept_coordinator_epoch: Callable[[int, str], bool] = lambda _epoch, _what: True,
    ) -> None:
        """``accept_coordinator_epoch``: whether an answer from a coordinator at that epoch
        may be applied (a deposed coordinator's may not)."""
        self._http = http
        self._coordinator_url = coordinator_url
        self._broker_url = broker_url
        self._accept_coordinator_epoch = accept_coordinator_epoch

    def _url(self, broker: BrokerId, path: str) -> str:
        url = self._broker_url(broker)
        if url is None:
            raise ConveyorError(
                f"no address known for broker {broker}", code=ErrorCode.NETWORK_ERROR
            )
        return url + path

    async def replica_fetch(
        self, leader: BrokerId, request: ReplicaFetchRequest
    ) -> tuple[ReplicaFetchResponse, list[memoryview]]:
        _, _, body = await self._http.request(
            "POST",
            self._url(leader, FETCH_PATH),
            body=msgspec.json.encode(request),
            accept=FRAMED_CONTENT_TYPE,
            timeout_s=request.max_wait_ms / 1000 + FETCH_MARGIN_S,
        )
        return decode_fetch_response(body)

    async def epoch_end(self, leader: BrokerId, request: EpochEndRequest) -> EpochEndResponse:
        return await self._http.call(
            "POST",
            self._url(leader, EPOCH_END_PATH),
            EpochEndResponse,
            body=request,
            timeout_s=EPOCH_END_TIMEOUT_S,
        )

    async def alter_isr(self, request: AlterIsrRequest) -> AlterIsrResponse:
        url = self._coordinator_url().rstrip("/") + ALTER_ISR_PATH
        response = await self._http.call(
            "POST", url, AlterIsrResponse, body=request, timeout_s=ALTER_ISR_TIMEOUT_S
        )
        if not self._accept_coordinator_epoch(response.coordinator_epoch, "alter isr"):
            raise ConveyorError(
                f"alter isr answered by a deposed coordinator (epoch {response.coordinator_epoch})",
                code=ErrorCode.NOT_COORDINATOR,
            )
        return response
