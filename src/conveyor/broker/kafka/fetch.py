"""Fetch: each partition's stored batches from ``BrokerService.fetch`` (the HTTP route's
operation: whole batches from the one holding the offset, even mid-batch, only below the
high watermark, counted against the broker's fetch memory budget), sent as they are.

Kafka's request-level rules on top of it:

* ``max_bytes`` is shared by the partitions in request order, each also bounded by its
  ``partition_max_bytes``; the first partition with data always gets at least one whole
  batch (KIP-74), partitions past the budget answer empty.
* When fewer than ``min_bytes`` are available the request waits up to ``max_wait_ms`` on
  its partitions' wake-ups (taken before the read, ``broker/wakeup.py``): the first
  change of one (new data visible, a role change) has the request read everything again.
  A parked request is not counted as work waiting on the broker (``requests_parked``).
* Fetch sessions (KIP-227) are answered sessionless: session id 0 tells the client to keep
  sending full requests. No preferred read replica (-1).
* ``isolation_level`` 1 (read_committed, issue 21) reads below the last stable offset only
  and gets the aborted transactions in that range, whose records the client drops; every
  answer carries the partition's last stable offset.
* ``current_leader_epoch`` (v9+) fences like the HTTP ``leader_epoch`` parameter: older is
  FENCED_LEADER_EPOCH, newer UNKNOWN_LEADER_EPOCH.

The bytes read stay counted in the fetch memory budget until the answer is written (or
dropped): ``ctx.after_reply`` releases them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.registry import RequestContext
from conveyor.broker.wakeup import wait_any
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.kafka.fetch_response import (
    EncodedParts,
    FetchedPartition,
    encode_fetch_response,
)
from conveyor.protocol.messages import PartitionOffsets

_NO_EPOCH: Final = -1

Fetch = Callable[..., Awaitable[Any]]  # BrokerService.fetch -> FetchResult
Offsets = Callable[[str, int], Awaitable[PartitionOffsets]]


@dataclass(frozen=True, slots=True)
class Wanted:
    topic: str
    partition: int
    offset: int
    max_bytes: int
    leader_epoch: int | None  # None: not fenced
    read_committed: bool = False


@dataclass(slots=True)
class Answer:
    error: KafkaError = KafkaError.NONE
    records: bytes = b""
    high_watermark: int = -1
    log_start_offset: int = -1
    last_stable_offset: int = -1
    aborted: tuple[tuple[int, int], ...] = ()  # (producer id, first offset)


def epoch_error(exc: ConveyorError, asked_epoch: int | None) -> KafkaError:
    """Kafka's fencing codes for the broker's epoch checks."""
    known = exc.details.get("leader_epoch")
    if (
        exc.code is ErrorCode.LEADER_NOT_AVAILABLE
        and asked_epoch is not None
        and isinstance(known, int)
        and asked_epoch > known
    ):
        return KafkaError.UNKNOWN_LEADER_EPOCH
    return kafka_error(exc.code)


class Parked(Protocol):
    requests_parked: int  # the listener's count of long-polls waiting for data


class FetchHandler:
    def __init__(
        self,
        fetch: Fetch,
        offsets: Offsets,
        release: Callable[[int], None],
        authorizer: Authorizer,
        *,
        wakeup: Callable[[str, int], asyncio.Future[None] | None],
        parked: Parked,
    ) -> None:
        self._fetch = fetch
        self._offsets = offsets
        self._release = release
        self._authorizer = authorizer
        self._wakeup = wakeup
        self._parked = parked

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        wanted: list[Wanted] = []
        denied: set[str] = set()
        committed = getattr(request, "isolation_level", 0) == 1
        for topic in request.topics:
            if not await self._authorizer.allowed(ctx.principal, "consume", "topic", topic.topic):
                denied.add(topic.topic)
            for p in topic.partitions:
                epoch = getattr(p, "current_leader_epoch", _NO_EPOCH)
                wanted.append(
                    Wanted(
                        topic.topic,
                        p.partition,
                        p.fetch_offset,
                        p.partition_max_bytes,
                        None if epoch == _NO_EPOCH else epoch,
                        committed,
                    )
                )
        held = [0]  # bytes this request holds in the fetch memory budget
        ctx.after_reply(lambda: self._release(held[0]))
        answers = await self._serve(wanted, denied, request, held)
        return _response(ctx.api_version, wanted, answers)

    async def _serve(
        self, wanted: list[Wanted], denied: set[str], request: Any, held: list[int]
    ) -> list[Answer]:
        deadline = time.monotonic() + max(0, request.max_wait_ms) / 1000
        while True:
            # Taken before reading, so a change during the read is not missed.
            woken = [self._wakeup(w.topic, w.partition) for w in wanted if w.topic not in denied]
            answers = await self._read_all(wanted, denied, request.max_bytes, held)
            available = sum(len(a.records) for a in answers)
            errors = any(a.error is not KafkaError.NONE for a in answers)
            remaining_s = deadline - time.monotonic()
            if available >= request.min_bytes or errors or remaining_s <= 0 or not wanted:
                return answers
            self._release(held[0])  # read again after the wait
            held[0] = 0
            self._parked.requests_parked += 1
            try:
                await wait_any((w for w in woken if w is not None), remaining_s)
            finally:
                self._parked.requests_parked -= 1

    async def _read_all(
        self, wanted: list[Wanted], denied: set[str], max_bytes: int, held: list[int]
    ) -> list[Answer]:
        answers = []
        budget = max(1, max_bytes)
        for want in wanted:
            if want.topic in denied:
                answers.append(Answer(KafkaError.TOPIC_AUTHORIZATION_FAILED))
                continue
            answer = await self._read_one(want, min(want.max_bytes, budget))
            held[0] += len(answer.records)
            budget -= len(answer.records)
            answers.append(answer)
        return answers

    async def _read_one(self, want: Wanted, max_bytes: int) -> Answer:
        try:
            if max_bytes <= 0:  # past the request's budget: offsets only, no data
                offsets = await self._offsets(want.topic, want.partition)
                stable = offsets.last_stable_offset
                return Answer(
                    high_watermark=offsets.high_watermark,
                    log_start_offset=offsets.log_start_offset,
                    last_stable_offset=offsets.high_watermark if stable is None else stable,
                )
            result = await self._fetch(
                want.topic,
                want.partition,
                want.offset,
                max_bytes=max_bytes,
                leader_epoch=want.leader_epoch,
                read_committed=want.read_committed,
            )
        except ConveyorError as exc:
            return Answer(epoch_error(exc, want.leader_epoch))
        return Answer(
            records=result.batches,
            high_watermark=result.high_watermark,
            log_start_offset=result.log_start_offset,
            last_stable_offset=result.last_stable_offset,
            aborted=tuple((a.producer_id, a.first_offset) for a in result.aborted),
        )


def _response(version: int, wanted: list[Wanted], answers: list[Answer]) -> EncodedParts:
    """Encoded by hand, the record sets as read (protocol/kafka/fetch_response.py)."""
    by_topic: dict[str, list[FetchedPartition]] = {}
    for want, answer in zip(wanted, answers, strict=True):
        by_topic.setdefault(want.topic, []).append(
            FetchedPartition(
                want.partition,
                answer.error,
                answer.high_watermark,
                answer.last_stable_offset,
                answer.log_start_offset,
                answer.aborted if want.read_committed else None,
                answer.records,
            )
        )
    return encode_fetch_response(version, list(by_topic.items()))
