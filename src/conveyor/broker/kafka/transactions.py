"""Kafka's transaction APIs (issue 21, docs/transactions.md): InitProducerId with a
transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit,
DescribeTransactions and ListTransactions, forwarded to the coordinator's transaction
coordinator (``coordinator/txn_service.py``) over its internal routes, as the group APIs
are. FindCoordinator for a transactional id answers this broker (``groups.py``): every
broker forwards to the one coordinator.

Permissions as Kafka's, in Conveyor's ACL terms (checked in this order, as Kafka does):
every API naming a transactional id needs ``produce`` on it (Kafka's WRITE on the
TRANSACTIONAL_ID; ``auth.transactional_refusal``), else TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
then AddPartitionsToTxn needs ``produce`` on each topic, AddOffsetsToTxn and
TxnOffsetCommit the group's ``group`` permission (Kafka's READ), TxnOffsetCommit
``consume`` on each topic. DescribeTransactions needs ``describe`` on each id (``produce``
implies it); ListTransactions lists the ids the principal may describe.

PRODUCER_FENCED (90) goes to clients that know it (KIP-588's versions); older ones get
INVALID_PRODUCER_EPOCH, as Kafka answers them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec

from conveyor.broker.kafka.auth import Authorizer, transactional_refusal
from conveyor.broker.kafka.group_offsets import consumable_offsets, topic_results
from conveyor.broker.kafka.groups import GroupAccess, group_error, named_error
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.txn import (
    TxnAddOffsetsRequest,
    TxnAddPartitionsRequest,
    TxnAddPartitionsResponse,
    TxnDescribeRequest,
    TxnDescription,
    TxnDescriptions,
    TxnEndRequest,
    TxnInitRequest,
    TxnInitResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnPartition,
    TxnProducer,
    TxnResult,
)

# the first version of each API whose clients know PRODUCER_FENCED (KIP-588)
_FENCED_FROM: Final = {
    ApiKey.INIT_PRODUCER_ID: 4,
    ApiKey.ADD_PARTITIONS_TO_TXN: 2,
    ApiKey.ADD_OFFSETS_TO_TXN: 2,
    ApiKey.END_TXN: 2,
    ApiKey.TXN_OFFSET_COMMIT: 3,
}


class TxnOps(Protocol):
    async def init(self, request: TxnInitRequest) -> TxnInitResponse: ...
    async def add_partitions(
        self, request: TxnAddPartitionsRequest
    ) -> TxnAddPartitionsResponse: ...
    async def add_offsets(self, request: TxnAddOffsetsRequest) -> TxnResult: ...
    async def offset_commit(self, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse: ...
    async def end(self, request: TxnEndRequest) -> TxnResult: ...
    async def describe(self, request: TxnDescribeRequest) -> TxnDescriptions: ...


def txn_error(name: str | None, key: ApiKey, version: int) -> KafkaError:
    """An ``ErrorCode`` name from the coordinator as the Kafka code this client expects
    (the group APIs' mapping, ``named_error``, but for PRODUCER_FENCED by version)."""
    if name == ErrorCode.PRODUCER_FENCED.name:
        fenced = version >= _FENCED_FROM.get(key, 99)
        return KafkaError.PRODUCER_FENCED if fenced else KafkaError.INVALID_PRODUCER_EPOCH
    if name is not None and name not in ErrorCode.__members__:
        # Kafka's own (TRANSACTIONAL_ID_NOT_FOUND), or a newer coordinator's
        return KafkaError.__members__.get(name, KafkaError.UNKNOWN_SERVER_ERROR)
    return named_error(name)


async def init_transactional(
    txns: TxnOps, authorizer: Authorizer, ctx: RequestContext, request: Any
) -> tuple[KafkaError, int, int]:
    """InitProducerId with a transactional id: (error, producer id, epoch)."""
    refusal = await transactional_refusal(
        authorizer, ctx.principal, request.transactional_id, "produce"
    )
    if refusal is not None:
        return refusal, -1, -1
    asked = TxnInitRequest(
        transactional_id=request.transactional_id,
        transaction_timeout_ms=request.transaction_timeout_ms,
        producer_id=getattr(request, "producer_id", -1),
        producer_epoch=getattr(request, "producer_epoch", -1),
    )
    try:
        answer = await txns.init(asked)
    except ConveyorError as exc:
        return group_error(exc), -1, -1
    error = txn_error(answer.error, ApiKey.INIT_PRODUCER_ID, ctx.api_version)
    return error, answer.producer_id, answer.producer_epoch


# (producer id, epoch, partitions) the coordinator just put in that producer's transaction
Added = Callable[[int, int, list[tuple[str, int]]], None]


class AddPartitionsToTxnHandler:
    """``added`` learns the partitions the coordinator accepted, before the client is
    answered (KIP-890's verification of the ones this broker leads, ``txn_verify.py``)."""

    def __init__(self, txns: TxnOps, authorizer: Authorizer, added: Added | None = None) -> None:
        self._txns = txns
        self._authorizer = authorizer
        self._added = added

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        asked = [(t.name, p) for t in request.v3_and_below_topics for p in t.partitions]
        errors = await self._refusals(ctx, request.v3_and_below_transactional_id, asked)
        if not errors:
            forwarded = TxnAddPartitionsRequest(
                producer=TxnProducer(
                    request.v3_and_below_transactional_id,
                    request.v3_and_below_producer_id,
                    request.v3_and_below_producer_epoch,
                ),
                partitions=[TxnPartition(t, p) for t, p in asked],
            )
            try:
                answer = await self._txns.add_partitions(forwarded)
                for r in answer.partitions:
                    errors[(r.topic, r.partition)] = txn_error(
                        r.error, ApiKey.ADD_PARTITIONS_TO_TXN, version
                    )
                added = [(r.topic, r.partition) for r in answer.partitions if r.error is None]
                if added and self._added is not None:
                    producer = forwarded.producer
                    self._added(producer.producer_id, producer.producer_epoch, added)
            except ConveyorError as exc:
                errors = dict.fromkeys(asked, group_error(exc))
        response = SERVED[ApiKey.ADD_PARTITIONS_TO_TXN].response[version]
        topic_cls = response.AddPartitionsToTxnTopicResult
        partition_cls = topic_cls.AddPartitionsToTxnPartitionResult
        by_topic: dict[str, list[Any]] = {}
        for topic, partition in asked:
            by_topic.setdefault(topic, []).append(
                partition_cls(
                    partition_index=partition,
                    partition_error_code=errors.get((topic, partition), KafkaError.NONE),
                )
            )
        return response(
            throttle_time_ms=0,
            results_by_topic_v3_and_below=[
                topic_cls(name=t, results_by_partition=ps) for t, ps in by_topic.items()
            ],
        )

    async def _refusals(
        self, ctx: RequestContext, transactional_id: str, asked: list[tuple[str, int]]
    ) -> dict[tuple[str, int], KafkaError]:
        """Each partition's error when the request may not go on (Kafka's rule: all or
        none; those not refused themselves were not attempted), else nothing."""
        refusal = await transactional_refusal(
            self._authorizer, ctx.principal, transactional_id, "produce"
        )
        if refusal is not None:
            return dict.fromkeys(asked, refusal)
        errors: dict[tuple[str, int], KafkaError] = {}
        for topic in {t for t, _ in asked}:
            if not await self._authorizer.allowed(ctx.principal, "produce", "topic", topic):
                denied = KafkaError.TOPIC_AUTHORIZATION_FAILED
                errors.update({(t, p): denied for t, p in asked if t == topic})
        if errors:
            for key in asked:
                errors.setdefault(key, KafkaError.OPERATION_NOT_ATTEMPTED)
        return errors


class AddOffsetsToTxnHandler:
    def __init__(self, txns: TxnOps, access: GroupAccess) -> None:
        self._txns = txns
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.ADD_OFFSETS_TO_TXN].response[ctx.api_version]
        error = await transactional_refusal(
            self._access.authorizer, ctx.principal, request.transactional_id, "produce"
        ) or await self._access.refusal(ctx, request.group_id, "group")
        if error is None:
            forwarded = TxnAddOffsetsRequest(
                producer=TxnProducer(
                    request.transactional_id, request.producer_id, request.producer_epoch
                ),
                group=request.group_id,
            )
            try:
                answer = await self._txns.add_offsets(forwarded)
                error = txn_error(answer.error, ApiKey.ADD_OFFSETS_TO_TXN, ctx.api_version)
            except ConveyorError as exc:
                error = group_error(exc)
        return response(throttle_time_ms=0, error_code=error)


class EndTxnHandler:
    def __init__(self, txns: TxnOps, authorizer: Authorizer) -> None:
        self._txns = txns
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.END_TXN].response[ctx.api_version]
        refusal = await transactional_refusal(
            self._authorizer, ctx.principal, request.transactional_id, "produce"
        )
        if refusal is not None:
            return response(throttle_time_ms=0, error_code=refusal)
        forwarded = TxnEndRequest(
            producer=TxnProducer(
                request.transactional_id, request.producer_id, request.producer_epoch
            ),
            commit=bool(request.committed),
        )
        try:
            answer = await self._txns.end(forwarded)
            error = txn_error(answer.error, ApiKey.END_TXN, ctx.api_version)
        except ConveyorError as exc:
            error = group_error(exc)
        return response(throttle_time_ms=0, error_code=error)


class TxnOffsetCommitHandler:
    def __init__(self, txns: TxnOps, access: GroupAccess) -> None:
        self._txns = txns
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        items = [(t.name, p) for t in request.topics for p in t.partitions]
        errors: dict[tuple[str, int], KafkaError] = {}
        refusal = await transactional_refusal(
            self._access.authorizer, ctx.principal, request.transactional_id, "produce"
        ) or await self._access.refusal(ctx, request.group_id, "group")
        if refusal is not None:
            errors = {(t, p.partition_index): refusal for t, p in items}
        else:
            await self._forward(ctx, request, items, errors)
        response = SERVED[ApiKey.TXN_OFFSET_COMMIT].response[version]
        topic_cls = response.TxnOffsetCommitResponseTopic
        partition_cls = topic_cls.TxnOffsetCommitResponsePartition
        return response(
            throttle_time_ms=0,
            topics=topic_results(topic_cls, partition_cls, request.topics, errors),
        )

    async def _forward(
        self,
        ctx: RequestContext,
        request: Any,
        items: list[tuple[str, Any]],
        errors: dict[tuple[str, int], KafkaError],
    ) -> None:
        version = ctx.api_version
        offsets = await consumable_offsets(self._access.authorizer, ctx, items, errors)
        if not offsets:
            return
        forwarded = TxnOffsetCommitRequest(
            producer=TxnProducer(
                request.transactional_id, request.producer_id, request.producer_epoch
            ),
            group=request.group_id,
            offsets=offsets,
            member_id=(request.member_id or "") if version >= 3 else "",
            generation=request.generation_id if version >= 3 else -1,
            instance_id=request.group_instance_id if version >= 3 else None,
        )  # fmt: skip
        try:
            answer = await self._txns.offset_commit(forwarded)
            for r in answer.partitions:
                errors[(r.topic, r.partition)] = txn_error(
                    r.error, ApiKey.TXN_OFFSET_COMMIT, version
                )
        except ConveyorError as exc:
            errors.update({(o.topic, o.partition): group_error(exc) for o in offsets})


__all__ = [
    "AddOffsetsToTxnHandler",
    "AddPartitionsToTxnHandler",
    "DescribeTransactionsHandler",
    "EndTxnHandler",
    "TxnOffsetCommitHandler",
    "init_transactional",
    "txn_error",
]


class DescribeTransactionsHandler:
    """DescribeTransactions (KIP-664), and ListTransactions with ``listing``: the
    coordinator's view of each transactional id, as Kafka authorizes them: an id the
    principal may not describe is TRANSACTIONAL_ID_AUTHORIZATION_FAILED (Describe) or left
    out (List), and a described transaction's partitions leave out the topics the
    principal may not describe."""

    def __init__(self, txns: TxnOps, authorizer: Authorizer, listing: bool = False) -> None:
        self._txns = txns
        self._authorizer = authorizer
        self._listing = listing

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        key = ApiKey.LIST_TRANSACTIONS if self._listing else ApiKey.DESCRIBE_TRANSACTIONS
        response = SERVED[key].response[ctx.api_version]
        asked = [] if self._listing else list(request.transactional_ids)
        refused = {t for t in asked if not await self._may_describe(ctx, t)}
        error = KafkaError.NONE
        found: list[TxnDescription] = []
        if self._listing or len(refused) < len(asked):
            forwarded = (
                TxnDescribeRequest(
                    transactional_ids=None,
                    states=list(request.state_filters or []),
                    producer_ids=list(request.producer_id_filters or []),
                    min_duration_ms=getattr(request, "duration_filter", -1),
                )
                if self._listing
                else TxnDescribeRequest(transactional_ids=[t for t in asked if t not in refused])
            )
            try:
                found = (await self._txns.describe(forwarded)).transactions
            except ConveyorError as exc:
                error = group_error(exc)
        if self._listing:
            # filtering (no catch-up per id: a listing may hold thousands)
            principal, authorizer = ctx.principal, self._authorizer
            found = [
                d
                for d in found
                if authorizer.allowed_now(
                    principal, "describe", "transactional_id", d.transactional_id
                )
            ]
            return self._list(response, error, request, found)
        by_id = {d.transactional_id: d for d in found}
        states = []
        for t in asked:
            answer = by_id.get(t)
            if t in refused:
                answer = _failed(t, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            elif answer is None:  # the coordinator could not be asked
                answer = _failed(t, error or KafkaError.UNKNOWN_SERVER_ERROR)
            else:
                answer = await self._visible(ctx, answer)
            states.append(_state(response, answer, ctx.api_version))
        return response(throttle_time_ms=0, transaction_states=states)

    async def _may_describe(self, ctx: RequestContext, transactional_id: str) -> bool:
        refusal = await transactional_refusal(
            self._authorizer, ctx.principal, transactional_id, "describe"
        )
        return refusal is None

    async def _visible(self, ctx: RequestContext, d: TxnDescription) -> TxnDescription:
        topics = {p.topic for p in d.partitions}
        shown = {
            t
            for t in topics
            if await self._authorizer.allowed(ctx.principal, "describe", "topic", t)
        }
        if shown == topics:
            return d
        return msgspec.structs.replace(d, partitions=[p for p in d.partitions if p.topic in shown])

    @staticmethod
    def _list(response: Any, error: KafkaError, request: Any, found: list[TxnDescription]) -> Any:
        known = {"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit",
                 "CompleteAbort", "Dead", "PrepareEpochFence"}  # fmt: skip
        return response(
            throttle_time_ms=0,
            error_code=error,
            unknown_state_filters=[s for s in request.state_filters or [] if s not in known],
            transaction_states=[
                response.TransactionState(
                    transactional_id=d.transactional_id,
                    producer_id=d.producer_id,
                    transaction_state=d.state,
                )
                for d in found
            ],
        )


def _failed(transactional_id: str, error: KafkaError) -> TxnDescription:
    return TxnDescription(transactional_id, "", -1, -1, -1, -1, error=error.name)


def _state(response: Any, d: TxnDescription, version: int) -> Any:
    by_topic: dict[str, list[int]] = {}
    for p in d.partitions:
        by_topic.setdefault(p.topic, []).append(p.partition)
    cls = response.TransactionState
    return cls(
        error_code=txn_error(d.error, ApiKey.DESCRIBE_TRANSACTIONS, version),
        transactional_id=d.transactional_id,
        transaction_state=d.state,
        transaction_timeout_ms=max(d.timeout_ms, -1),
        transaction_start_time_ms=d.started_ms,
        producer_id=d.producer_id,
        producer_epoch=d.producer_epoch,
        topics=[cls.TopicData(topic=t, partitions=ps) for t, ps in by_topic.items()],
    )
