"""The transaction coordinator's shell (issue 21): Kafka's transaction APIs as the internal
routes call them (``txn_http.py``), over the rules of ``transactions.py`` and the
coordinator's one transition writer, plus the one background task that finishes what the
rules decided:

* **markers**: a transaction in a prepare state gets a COMMIT or ABORT marker written to
  each of its partitions, through the partition's leader (``POST
  /internal/v1/txn/markers``, grouped per broker), retried with backoff until every
  partition has it (a leader change, a broker down), then it is completed. The same runs
  after a restart or a takeover, for the prepare states loaded from the store.
* **timeouts**: open transactions past their ``transaction.timeout.ms`` are aborted.

EndTxn answers once the decision (the prepare state) is durable, as Kafka's coordinator
does; the markers go out meanwhile. The same id's next InitProducerId, AddPartitionsToTxn
or AddOffsetsToTxn waits for them (``_settled``, up to ``SETTLE_WAIT_S``) instead of
answering CONCURRENT_TRANSACTIONS, so the producer's next transaction starts while the
previous one's markers are written, instead of after (docs/benchmarks.md, "Transactions").
A read_committed consumer sees a committed transaction once its markers are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeVar

from conveyor.coordinator import transactions as rules
from conveyor.coordinator.kafka_groups import KafkaGroups
from conveyor.coordinator.model import ClusterState
from conveyor.coordinator.state import Result
from conveyor.coordinator.txn_model import KAFKA_STATE, PREPARE, Transaction
from conveyor.protocol.backoff import BELOW, backoff_ms
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.group_messages import KafkaCommitRequest
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
    TxnMarkersRequest,
    TxnMarkersResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnPartition,
    TxnPartitionResult,
    TxnResult,
    TxnVerifyRequest,
)
from conveyor.transport.waits import settle_all, within

log = logging.getLogger(__name__)
T = TypeVar("T")
Transition = Callable[[Callable[[ClusterState], Result[T]]], Awaitable[T]]

SETTLE_WAIT_S: Final = 10.0  # an id's next request waits this long for the markers
TICK_S: Final = 0.5  # how often timeouts are checked and stuck completions retried
# between rounds of marker writes that failed (protocol/backoff.py, a server's jitter)
RETRY_BACKOFF_MS: Final = 50
RETRY_BACKOFF_MAX_MS: Final = 1000


class MarkerSender(Protocol):
    async def __call__(self, broker_url: str, request: TxnMarkersRequest) -> TxnMarkersResponse: ...


class TransactionCoordinator:
    def __init__(
        self,
        *,
        state: Callable[[], ClusterState],
        transition: Transition[object],
        now_ms: Callable[[], int],
        groups: KafkaGroups,
        send_markers: MarkerSender,
        coordinator_epoch: Callable[[], int],
    ) -> None:
        self._state = state
        self._transition = transition
        self._now_ms = now_ms
        self._groups = groups
        self._send = send_markers
        self._epoch = coordinator_epoch
        self._completing: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def _decide(self, decide: Callable[[ClusterState], Result[T]]) -> T:
        return await self._transition(decide)  # type: ignore[arg-type,return-value]

    # ---- Kafka's APIs ------------------------------------------------------------------------

    async def _settled(self, transactional_id: str) -> None:
        """Wait (bounded) for the id's previous transaction to complete: its next request
        is then decided on a settled state instead of answered CONCURRENT_TRANSACTIONS,
        which clients retry only after a backoff (librdkafka: retry.backoff.ms)."""
        task = self._completing.get(transactional_id)
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await within(asyncio.shield(task), SETTLE_WAIT_S)

    async def init(self, request: TxnInitRequest) -> TxnInitResponse:
        await self._settled(request.transactional_id)
        now = self._now_ms()
        reply = await self._decide(lambda s: rules.init_producer_id(s, request, now))
        self._complete_prepared()  # a fencing init aborts the open transaction
        return reply

    async def add_partitions(self, request: TxnAddPartitionsRequest) -> TxnAddPartitionsResponse:
        await self._settled(request.producer.transactional_id)
        now = self._now_ms()
        results = await self._decide(
            lambda s: rules.add_partitions(s, request.producer, request.partitions, now)
        )
        return TxnAddPartitionsResponse(partitions=results)

    async def verify(self, request: TxnVerifyRequest) -> TxnAddPartitionsResponse:
        """KIP-890 part 1: nothing written, but decided by the active coordinator only."""
        results = await self._decide(lambda s: rules.verify(s, request))
        return TxnAddPartitionsResponse(partitions=results)

    async def add_offsets(self, request: TxnAddOffsetsRequest) -> TxnResult:
        await self._settled(request.producer.transactional_id)
        now = self._now_ms()
        return await self._decide(
            lambda s: rules.add_offsets(s, request.producer, request.group, now)
        )

    async def offset_commit(self, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse:
        as_commit = KafkaCommitRequest(
            offsets=request.offsets,
            member_id=request.member_id,
            instance_id=request.instance_id,
            generation=request.generation,
        )
        fenced = self._groups.txn_commit_error(request.group, as_commit)
        if fenced is not None:
            results = [
                TxnPartitionResult(o.topic, o.partition, fenced.name) for o in request.offsets
            ]
            return TxnOffsetCommitResponse(partitions=results)
        results = await self._decide(
            lambda s: rules.offset_commit(s, request.producer, request.group, request.offsets)
        )
        return TxnOffsetCommitResponse(partitions=results)

    async def end(self, request: TxnEndRequest) -> TxnResult:
        now = self._now_ms()
        reply = await self._decide(lambda s: rules.end(s, request.producer, request.commit, now))
        if reply.error is None:  # decided: the markers go out, the answer does not wait
            self._complete_prepared()
        return reply

    def describe(self, request: TxnDescribeRequest) -> TxnDescriptions:
        state = self._state()
        if request.transactional_ids is None:
            now = self._now_ms()
            found = [
                t
                for t in state.transactions.values()
                if (not request.states or KAFKA_STATE[t.status] in request.states)
                and (not request.producer_ids or t.producer_id in request.producer_ids)
                and (
                    request.min_duration_ms < 0
                    or (t.started_ms >= 0 and now - t.started_ms >= request.min_duration_ms)
                )
            ]
            return TxnDescriptions(transactions=[_describe(t) for t in found])
        answers = []
        for tid in request.transactional_ids:
            txn = state.transactions.get(tid)
            if txn is None:
                answers.append(
                    TxnDescription(tid, "", -1, -1, -1, -1, error="TRANSACTIONAL_ID_NOT_FOUND")
                )
            else:
                answers.append(_describe(txn))
        return TxnDescriptions(transactions=answers)

    # ---- completing and timing out ----------------------------------------------------------

    def start(self) -> None:
        """Begin completing prepared transactions (those loaded too) and timing out open
        ones: when this coordinator becomes active."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="transactions")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._completing.values()) if t is not None]
        self._task = None
        self._completing = {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                self._complete_prepared()
                now = self._now_ms()
                late = rules.expired(self._state(), now)
                if late:
                    await self._abort_expired(late, now)
                    self._complete_prepared()
            except ConveyorError as exc:  # not active any more, a store failure: next tick
                log.warning("transactions: %s", exc)
            await asyncio.sleep(TICK_S)

    async def _abort_expired(self, late: list[str], now_ms: int) -> None:
        def decide(state: ClusterState) -> Result[int]:
            return rules.abort_expired(state, late, now_ms)

        await self._decide(decide)

    def _complete_prepared(self) -> dict[str, asyncio.Task[None]]:
        """A completion task for every prepared transaction that has none."""
        for txn in self._state().transactions.values():
            tid = txn.transactional_id
            if txn.status in PREPARE and tid not in self._completing:
                task = asyncio.create_task(self._complete(txn), name=f"txn-{tid}")
                self._completing[tid] = task
                task.add_done_callback(functools.partial(self._completed, tid))
        return self._completing

    def _completed(self, tid: str, task: asyncio.Task[None]) -> None:
        if self._completing.get(tid) is task:
            del self._completing[tid]
        if not task.cancelled() and task.exception() is not None:
            # not active any more, a store failure: the next tick (or coordinator) retries
            log.warning("transaction %s: completion failed: %r", tid, task.exception())

    async def _complete(self, txn: Transaction) -> None:
        commit = txn.status == "prepare_commit"
        remaining = list(txn.partitions)
        attempt = 0
        while remaining:
            remaining = await self._write_round(txn, commit, remaining)
            if remaining:
                pause_ms = backoff_ms(
                    attempt,
                    base_ms=RETRY_BACKOFF_MS,
                    max_ms=RETRY_BACKOFF_MAX_MS,
                    draw=random.random(),
                    jitter=BELOW,
                )
                attempt += 1
                log.info(
                    "transaction %s: %d partitions still without their marker; retry in %d ms",
                    txn.transactional_id,
                    len(remaining),
                    pause_ms,
                )
                await asyncio.sleep(pause_ms / 1000)
        tid, pid, epoch = txn.transactional_id, txn.producer_id, txn.producer_epoch

        def decide(state: ClusterState) -> Result[bool]:
            return rules.complete(state, tid, pid, epoch)

        await self._decide(decide)

    async def _write_round(
        self, txn: Transaction, commit: bool, partitions: list[tuple[str, int]]
    ) -> list[tuple[str, int]]:
        """One marker write per leader; the partitions still without a marker."""
        state = self._state()
        by_url: dict[str, list[TxnPartition]] = {}
        failed: list[tuple[str, int]] = []
        for key in partitions:
            partition = state.partitions.get(key)
            if partition is None:  # the topic was deleted: nothing left to mark
                continue
            broker = state.brokers.get(partition.leader) if partition.leader is not None else None
            if broker is None or not broker.alive:
                failed.append(key)
                continue
            by_url.setdefault(broker.url, []).append(TxnPartition(*key))
        request = {
            url: TxnMarkersRequest(
                producer_id=txn.producer_id,
                producer_epoch=txn.producer_epoch,
                commit=commit,
                coordinator_epoch=self._epoch(),
                partitions=tps,
            )
            for url, tps in by_url.items()
        }
        answers = await settle_all(*(self._send(url, r) for url, r in request.items()))
        for (url, sent), answer in zip(request.items(), answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, (ConveyorError, OSError, TimeoutError)):
                    raise answer
                log.info("transaction %s: markers to %s failed: %s", txn.transactional_id,
                         url, answer)  # fmt: skip
                failed += [(p.topic, p.partition) for p in sent.partitions]
                continue
            failed += [(r.topic, r.partition) for r in answer.partitions if r.error is not None]
        return failed


def _describe(txn: Transaction) -> TxnDescription:
    return TxnDescription(
        transactional_id=txn.transactional_id,
        state=KAFKA_STATE[txn.status],
        producer_id=txn.producer_id,
        producer_epoch=txn.producer_epoch,
        timeout_ms=txn.timeout_ms,
        started_ms=txn.started_ms,
        partitions=[TxnPartition(t, p) for t, p in txn.partitions],
        groups=list(txn.groups),
    )
