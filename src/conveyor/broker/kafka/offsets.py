"""ListOffsets and OffsetForLeaderEpoch, over ``BrokerService.offsets`` (the HTTP offsets
route's operation), ``BrokerService.max_timestamp`` and ``BrokerService.epoch_end``.

ListOffsets: timestamp -1 is the latest visible offset (the high watermark; with no
transactions it is also the last stable offset), -2 the log start, -3 (v7+) the record
with the largest timestamp and that timestamp, any other the first offset whose batch has
a timestamp at or after it (through the time index to its batch, then that batch's
records), with that record's timestamp; offset -1 when there is none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.fetch import epoch_error
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.messages import PartitionOffsets

LATEST: Final = -1
EARLIEST: Final = -2
MAX_TIMESTAMP: Final = -3  # v7+ (KIP-734)
_NO_EPOCH: Final = -1

Offsets = Callable[[str, int, int | None], Awaitable[PartitionOffsets]]
MaxTimestamp = Callable[[str, int], Awaitable[tuple[int, int] | None]]
EpochEnd = Callable[..., Awaitable[tuple[int, int]]]


class ListOffsetsHandler:
    def __init__(
        self, offsets: Offsets, max_timestamp: MaxTimestamp, authorizer: Authorizer
    ) -> None:
        self._offsets = offsets
        self._max_timestamp = max_timestamp
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.LIST_OFFSETS].response[ctx.api_version]
        topic_cls = response.ListOffsetsTopicResponse
        partition_cls = topic_cls.ListOffsetsPartitionResponse
        topics = []
        committed = getattr(request, "isolation_level", 0) == 1  # read_committed: the LSO
        for topic in request.topics:
            allowed = await self._authorizer.allowed(ctx.principal, "consume", "topic", topic.name)
            partitions = []
            for p in topic.partitions:
                fields = await self._one(topic.name, p, allowed, committed)
                partitions.append(partition_cls(partition_index=p.partition_index, **fields))
            topics.append(topic_cls(name=topic.name, partitions=partitions))
        return response(throttle_time_ms=0, topics=topics)

    async def _one(self, topic: str, p: Any, allowed: bool, committed: bool) -> dict[str, int]:
        failed = {"timestamp": -1, "offset": -1, "leader_epoch": -1}
        if not allowed:
            return {"error_code": KafkaError.TOPIC_AUTHORIZATION_FAILED, **failed}
        asked_epoch = getattr(p, "current_leader_epoch", _NO_EPOCH)
        timestamp = p.timestamp
        try:
            found = await self._offsets(
                topic, p.partition_index, None if timestamp < 0 else timestamp
            )
        except ConveyorError as exc:
            epoch = None if asked_epoch == _NO_EPOCH else asked_epoch
            return {"error_code": epoch_error(exc, epoch), **failed}
        if asked_epoch not in (_NO_EPOCH, found.leader_epoch):
            code = (
                KafkaError.FENCED_LEADER_EPOCH
                if asked_epoch < found.leader_epoch
                else KafkaError.UNKNOWN_LEADER_EPOCH
            )
            return {"error_code": code, **failed}
        if timestamp == MAX_TIMESTAMP:
            try:
                largest = await self._max_timestamp(topic, p.partition_index)
            except ConveyorError as exc:
                return {"error_code": epoch_error(exc, None), **failed}
            offset, answered = (-1, -1) if largest is None else (largest[1], largest[0])
        elif timestamp == LATEST:
            stable = found.last_stable_offset
            latest = stable if committed and stable is not None else found.high_watermark
            offset, answered = latest, -1
        elif timestamp == EARLIEST:
            offset, answered = found.log_start_offset, -1
        elif found.offset_for_timestamp is None:
            offset, answered = -1, -1
        else:
            offset = found.offset_for_timestamp
            answered = found.timestamp_found_ms if found.timestamp_found_ms is not None else -1
        return {
            "error_code": KafkaError.NONE,
            "timestamp": answered,
            "offset": offset,
            "leader_epoch": found.leader_epoch,
        }


class OffsetForLeaderEpochHandler:
    def __init__(self, epoch_end: EpochEnd, authorizer: Authorizer) -> None:
        self._epoch_end = epoch_end
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.OFFSET_FOR_LEADER_EPOCH].response[ctx.api_version]
        topic_cls = response.OffsetForLeaderTopicResult
        partition_cls = topic_cls.EpochEndOffset
        topics = []
        for topic in request.topics:
            allowed = await self._authorizer.allowed(ctx.principal, "consume", "topic", topic.topic)
            partitions = []
            for p in topic.partitions:
                code, epoch, end = KafkaError.TOPIC_AUTHORIZATION_FAILED, -1, -1
                if allowed:
                    fence = None if p.current_leader_epoch == _NO_EPOCH else p.current_leader_epoch
                    try:
                        epoch, end = await self._epoch_end(
                            topic.topic, p.partition, p.leader_epoch, leader_epoch=fence
                        )
                        code = KafkaError.NONE
                    except ConveyorError as exc:
                        code = epoch_error(exc, fence)
                partitions.append(
                    partition_cls(
                        error_code=code, partition=p.partition, leader_epoch=epoch, end_offset=end
                    )
                )
            topics.append(topic_cls(topic=topic.topic, partitions=partitions))
        return response(throttle_time_ms=0, topics=topics)
