"""A transactional producer's conversation with the transaction coordinator (issue 21,
docs/transactions.md): one state machine; its steps go over Kafka.

:class:`TransactionSession` runs on the producer's I/O loop; the sender asks it for the
producer id and epoch (``init``) and registers each partition before the first batch of
a transaction goes to it (``add_partition``). How a step reaches the coordinator is a
:class:`TxnTransport`, the same five operations the coordinator serves
(``coordinator/txn_service.py``) with the same wire types (``protocol/txn.py``):
``KafkaTxnTransport`` (``kafka_txn.py``) sends them as Kafka's FindCoordinator,
InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn on the
brokers' Kafka listeners, answers translated back (the coordinator's HTTP routes
``/v1/transactions/...`` stay for other languages; this client no longer uses them).

Kafka's client rules (its ``TransactionManager``, aiokafka's and kafka-python's alike):

* ``init`` fences every older producer with the transactional id; a step answered
  CONCURRENT_TRANSACTIONS (the previous transaction is still completing) or
  NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS / NOT_AVAILABLE over Kafka: an election,
  a takeover), or that failed retriably on the way, is retried with backoff for up to
  ``request_timeout_ms``;
* a send outside a transaction is refused (INVALID_TXN_STATE);
* **abortable** errors make the transaction abort-only (``failed``): a batch that failed
  for good, and offsets the group refused because the consumer they came from is no
  longer the member it was (KIP-447: ILLEGAL_GENERATION, UNKNOWN_MEMBER,
  FENCED_INSTANCE_ID, FENCED_MEMBER); ``commit`` then raises, ``abort`` works;
* **fatal**: PRODUCER_FENCED (another producer took the id; INVALID_PRODUCER_EPOCH from
  older brokers) raises :class:`ProducerFencedError` now and for every later call.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol, TypeVar

from conveyor.client.errors import ProducerFencedError
from conveyor.client.types import ConsumerGroupMetadata
from conveyor.protocol.backoff import backoff_ms
from conveyor.protocol.errors import (
    ConveyorError,
    ErrorCode,
    InvalidRequestError,
    RetriableError,
    error_from_dict,
)
from conveyor.protocol.messages import PartitionOffset
from conveyor.protocol.txn import (
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
)

T = TypeVar("T")
RETRY_BACKOFF_MS: Final = 20
RETRY_BACKOFF_MAX_MS: Final = 500
# answers after which the same step is sent again (after a backoff)
RETRIED: Final = frozenset({ErrorCode.CONCURRENT_TRANSACTIONS.name, ErrorCode.NOT_COORDINATOR.name})
# the group refused the offsets: the consumer is a zombie (KIP-447); abort, not fatal
GROUP_FENCING: Final = frozenset(
    {
        ErrorCode.ILLEGAL_GENERATION,
        ErrorCode.UNKNOWN_MEMBER,
        ErrorCode.FENCED_INSTANCE_ID,
        ErrorCode.FENCED_MEMBER,
    }
)


class TxnTransport(Protocol):
    """How one step reaches the transaction coordinator. Errors come back as
    ``ErrorCode`` names in the answers (None: success), as the coordinator gives them;
    failures on the way raise typed errors (retriable ones are retried)."""

    async def init(self, request: TxnInitRequest) -> TxnInitResponse: ...
    async def add_partitions(
        self, request: TxnAddPartitionsRequest
    ) -> TxnAddPartitionsResponse: ...
    async def add_offsets(self, request: TxnAddOffsetsRequest) -> TxnResult: ...
    async def offset_commit(self, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse: ...
    async def end(self, request: TxnEndRequest) -> TxnResult: ...


def answer_error(reply: object) -> str | None:
    """The first error of an answer (per partition for the per-partition answers)."""
    if isinstance(reply, TxnAddPartitionsResponse | TxnOffsetCommitResponse):
        return next((p.error for p in reply.partitions if p.error), None)
    error = getattr(reply, "error", None)
    return error if isinstance(error, str) else None


def typed_error(name: str, what: str) -> ConveyorError:
    """The typed error for an answer's ``ErrorCode`` name."""
    if name == ErrorCode.PRODUCER_FENCED.name:
        return ProducerFencedError(f"{what}: a newer producer initialised this transactional id")
    return error_from_dict({"code": name, "message": f"{what}: {name}"})


def group_fields(group: str | ConsumerGroupMetadata) -> tuple[str, str, int, str | None]:
    """(group id, member id, generation, instance id) of ``send_offsets``'s group: a
    bare group id is unfenced (Kafka's pre-KIP-447 form)."""
    if isinstance(group, str):
        return group, "", -1, None
    if not isinstance(group, ConsumerGroupMetadata) or not group.group_id:
        raise ValueError(
            f"group: a group id or consumer.group_metadata() (ConsumerGroupMetadata), not {group!r}"
        )
    return group.group_id, group.member_id, group.generation_id, group.group_instance_id


class TransactionSession:
    def __init__(
        self,
        transport: TxnTransport,
        transactional_id: str,
        *,
        transaction_timeout_ms: int,
        request_timeout_ms: int,
    ) -> None:
        self.transport = transport
        self.transactional_id = transactional_id
        self._timeout_ms = transaction_timeout_ms
        self._request_timeout_ms = request_timeout_ms
        self.producer_id = -1
        self.producer_epoch = -1
        self.in_transaction = False
        self.failed: ConveyorError | None = None  # abortable: the transaction may only abort
        self.fatal: ConveyorError | None = None  # fenced: this producer may do nothing more
        self._partitions: set[tuple[str, int]] = set()
        self._groups: set[str] = set()

    @property
    def producer(self) -> TxnProducer:
        return TxnProducer(self.transactional_id, self.producer_id, self.producer_epoch)

    async def _call(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        """One step, sent again while the coordinator is busy or moving (module
        docstring), for up to ``request_timeout_ms``; its answer's error raised typed."""
        deadline = time.monotonic() + self._request_timeout_ms / 1000
        attempt = 0
        while True:
            try:
                reply = await step()
            except RetriableError:
                if time.monotonic() > deadline:
                    raise
                error = ErrorCode.NOT_COORDINATOR.name
            else:
                answered = answer_error(reply)
                if answered is None:
                    return reply
                error = answered
            if error not in RETRIED or time.monotonic() > deadline:
                failure = typed_error(error, what)
                if failure.code is ErrorCode.PRODUCER_FENCED:
                    self.fatal = failure
                raise failure
            attempt += 1
            pause_ms = backoff_ms(
                attempt, base_ms=RETRY_BACKOFF_MS, max_ms=RETRY_BACKOFF_MAX_MS, draw=random.random()
            )
            await asyncio.sleep(pause_ms / 1000)

    def _check_usable(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    async def init(self) -> tuple[int, int]:
        """The producer id and epoch for the transactional id (fencing older producers)."""
        self._check_usable()
        if self.producer_id >= 0:
            return self.producer_id, self.producer_epoch
        request = TxnInitRequest(self.transactional_id, self._timeout_ms)
        reply = await self._call(
            lambda: self.transport.init(request), f"transactional id {self.transactional_id!r}"
        )
        self.producer_id, self.producer_epoch = reply.producer_id, reply.producer_epoch
        return self.producer_id, self.producer_epoch

    def begin(self) -> None:
        self._check_usable()
        if self.in_transaction:
            raise InvalidRequestError(
                "a transaction is already open", code=ErrorCode.INVALID_TXN_STATE
            )
        self.in_transaction, self.failed = True, None
        self._partitions.clear()
        self._groups.clear()

    def _check_open(self) -> None:
        self._check_usable()
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
        await self._call(lambda: self.transport.add_partitions(request), f"{topic}[{partition}]")
        self._partitions.add((topic, partition))

    async def send_offsets(
        self, offsets: Mapping[tuple[str, int], int], group: str | ConsumerGroupMetadata
    ) -> None:
        """The group's offsets, committed with the transaction (KIP-98's
        sendOffsetsToTransaction). With the consumer's :class:`ConsumerGroupMetadata`
        the coordinator fences a zombie (KIP-447): the refusal makes the transaction
        abort-only and is raised."""
        group_id, member_id, generation, instance_id = group_fields(group)
        self._check_open()
        await self.init()
        what = f"group {group_id!r}"
        if group_id not in self._groups:
            added = TxnAddOffsetsRequest(self.producer, group_id)
            await self._call(lambda: self.transport.add_offsets(added), what)
            self._groups.add(group_id)
        request = TxnOffsetCommitRequest(
            self.producer,
            group_id,
            [PartitionOffset(topic=t, partition=p, offset=o) for (t, p), o in offsets.items()],
            member_id=member_id,
            generation=generation,
            instance_id=instance_id,
        )
        try:
            await self._call(lambda: self.transport.offset_commit(request), what)
        except ConveyorError as exc:
            if exc.code in GROUP_FENCING:
                self.failed = exc  # a zombie's offsets: this transaction must abort
            raise

    async def end(self, commit: bool) -> None:
        self._check_open()
        if commit and self.failed is not None:
            raise InvalidRequestError(
                f"this transaction failed ({self.failed}): abort it",
                code=ErrorCode.INVALID_TXN_STATE,
            )
        try:
            if self._partitions or self._groups:  # nothing added: nothing to end
                request = TxnEndRequest(self.producer, commit)
                await self._call(
                    lambda: self.transport.end(request), "commit" if commit else "abort"
                )
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
        error (KIP-360). Offsets a group refused left no gap: the epoch stays."""
        if self.failed is not None and self.failed.code not in GROUP_FENCING:
            self.producer_id = self.producer_epoch = -1
