"""A transactional producer's conversation with the coordinator (issue 21,
docs/transactions.md): the same transaction coordinator Kafka clients use, over its
public routes ``/v1/transactions/...``. Runs on the producer's I/O loop; the sender asks
it for the producer id and epoch (``init``) and registers each partition before the
first batch of a transaction goes to it (``add_partition``).

Kafka's client rules: ``init`` fences every older producer with the transactional id
(retrying while the coordinator completes the previous one's transaction:
CONCURRENT_TRANSACTIONS); a send outside a transaction is refused; a batch that fails for
good makes the transaction abort-only; PRODUCER_FENCED is fatal (another producer took
the id).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Final, TypeVar

import msgspec

from conveyor.protocol.backoff import backoff_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, error_from_dict
from conveyor.protocol.messages import PartitionOffset
from conveyor.protocol.txn import (
    PUBLIC_PREFIX,
    TxnAddOffsetsRequest,
    TxnAddPartitionsRequest,
    TxnAddPartitionsResponse,
    TxnEndRequest,
    TxnInitRequest,
    TxnInitResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnPartition,
    TxnProducer,
    TxnResult,
    TxnRoute,
)
from conveyor.transport.client import AsyncHTTP

T = TypeVar("T")
RETRY_BACKOFF_MS: Final = 20
RETRY_BACKOFF_MAX_MS: Final = 500


def _raise(error: str | None, what: str) -> None:
    if error is not None:
        raise error_from_dict({"code": error, "message": f"{what}: {error}"})


class TransactionSession:
    def __init__(
        self,
        http: AsyncHTTP,
        coordinator_url: str,
        transactional_id: str,
        *,
        transaction_timeout_ms: int,
        request_timeout_ms: int,
    ) -> None:
        self._http = http
        self._url = coordinator_url.rstrip("/") + PUBLIC_PREFIX + "/"
        self.transactional_id = transactional_id
        self._timeout_ms = transaction_timeout_ms
        self._request_timeout_ms = request_timeout_ms
        self.producer_id = -1
        self.producer_epoch = -1
        self.in_transaction = False
        self.failed: ConveyorError | None = None  # a batch failed: abort only
        self._partitions: set[tuple[str, int]] = set()
        self._groups: set[str] = set()

    @property
    def producer(self) -> TxnProducer:
        return TxnProducer(self.transactional_id, self.producer_id, self.producer_epoch)

    async def _call(self, path: TxnRoute, body: msgspec.Struct, answer: type[T]) -> T:
        """One call, retried while the coordinator completes the previous transaction."""
        deadline = time.monotonic() + self._request_timeout_ms / 1000
        attempt = 0
        while True:
            reply = await self._http.call(
                "POST",
                self._url + path,
                answer,
                body=body,
                timeout_s=self._request_timeout_ms / 1000,
            )
            error = getattr(reply, "error", None)
            if isinstance(reply, TxnAddPartitionsResponse | TxnOffsetCommitResponse):
                error = next((p.error for p in reply.partitions if p.error), None)
            if error != ErrorCode.CONCURRENT_TRANSACTIONS.name or time.monotonic() > deadline:
                return reply
            attempt += 1
            pause_ms = backoff_ms(
                attempt, base_ms=RETRY_BACKOFF_MS, max_ms=RETRY_BACKOFF_MAX_MS, draw=random.random()
            )
            await asyncio.sleep(pause_ms / 1000)

    async def init(self) -> tuple[int, int]:
        """The producer id and epoch for the transactional id (fencing older producers)."""
        if self.producer_id >= 0:
            return self.producer_id, self.producer_epoch
        request = TxnInitRequest(self.transactional_id, self._timeout_ms)
        reply = await self._call(TxnRoute.INIT, request, TxnInitResponse)
        _raise(reply.error, f"transactional id {self.transactional_id!r}")
        self.producer_id, self.producer_epoch = reply.producer_id, reply.producer_epoch
        return self.producer_id, self.producer_epoch

    def begin(self) -> None:
        if self.in_transaction:
            raise InvalidRequestError(
                "a transaction is already open", code=ErrorCode.INVALID_TXN_STATE
            )
        self.in_transaction, self.failed = True, None
        self._partitions.clear()
        self._groups.clear()

    def _check_open(self) -> None:
        if not self.in_transaction:
            raise InvalidRequestError(
                "a transactional producer sends inside a transaction: begin_transaction() first",
                code=ErrorCode.INVALID_TXN_STATE,
            )

    async def add_partition(self, topic: str, partition: int) -> None:
        self._check_open()
        if (topic, partition) in self._partitions:
            return
        await self.init()
        request = TxnAddPartitionsRequest(self.producer, [TxnPartition(topic, partition)])
        reply = await self._call(TxnRoute.ADD_PARTITIONS, request, TxnAddPartitionsResponse)
        _raise(next((p.error for p in reply.partitions if p.error), None), f"{topic}[{partition}]")
        self._partitions.add((topic, partition))

    async def send_offsets(self, offsets: Mapping[tuple[str, int], int], group: str) -> None:
        """The group's offsets, committed with the transaction (KIP-98's
        sendOffsetsToTransaction, without the group's generation: Conveyor's own groups
        fence their members' commits at the coordinator)."""
        self._check_open()
        await self.init()
        if group not in self._groups:
            reply = await self._call(
                TxnRoute.ADD_OFFSETS, TxnAddOffsetsRequest(self.producer, group), TxnResult
            )
            _raise(reply.error, f"group {group!r}")
            self._groups.add(group)
        request = TxnOffsetCommitRequest(
            self.producer,
            group,
            [PartitionOffset(topic=t, partition=p, offset=o) for (t, p), o in offsets.items()],
        )
        answer = await self._call(TxnRoute.OFFSET_COMMIT, request, TxnOffsetCommitResponse)
        _raise(next((p.error for p in answer.partitions if p.error), None), f"group {group!r}")

    async def end(self, commit: bool) -> None:
        self._check_open()
        if commit and self.failed is not None:
            raise InvalidRequestError(
                f"a record of this transaction failed ({self.failed}): abort it",
                code=ErrorCode.INVALID_TXN_STATE,
            )
        try:
            if self._partitions or self._groups:  # nothing added: nothing to end
                reply = await self._call(
                    TxnRoute.END, TxnEndRequest(self.producer, commit), TxnResult
                )
                _raise(reply.error, "commit" if commit else "abort")
        except ConveyorError:
            if not commit:  # an abort that failed leaves nothing to do but a new init
                self.in_transaction = False
                self._new_epoch_if_failed()
            raise
        self.in_transaction = False
        if not commit:
            self._new_epoch_if_failed()

    def _new_epoch_if_failed(self) -> None:
        """After a batch failed for good, its sequence numbers never reached its partition,
        whose leader would refuse every later batch of this epoch (OUT_OF_ORDER_SEQUENCE):
        the next transaction starts under a new epoch (InitProducerId again, which bumps
        it; the sender restarts sequences at 0), as Kafka's producer does after an abortable
        error (KIP-360)."""
        if self.failed is not None:
            self.producer_id = self.producer_epoch = -1
