"""DeleteRecords (21), over ``BrokerService.delete_records`` (the operation of HTTP's
``DELETE .../records?before_offset=``): every record of a partition below an offset is
deleted (-1: the high watermark), and the answer is the partition's low watermark, the
lowest log start over its in-sync replicas, once it reached the offset.

Kafka's AdminClient sends each partition to its leader (from its metadata): a partition
this broker does not lead is NOT_LEADER_OR_FOLLOWER, and the client asks again where it
is. The partitions of a request are deleted concurrently, each waiting for its ISR up to
the request's ``timeout_ms`` (then REQUEST_TIMED_OUT, the leader's deletion standing).
Offsets beyond the high watermark and below -1 are OFFSET_OUT_OF_RANGE, a compact-only
topic POLICY_VIOLATION, as in Kafka. Permission: Kafka's DELETE on the topic, which is
Conveyor's ``delete_topic`` (the same check as HTTP's route).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.messages import DeletedRecords
from conveyor.transport.waits import gather_all

DeleteRecords = Callable[..., Awaitable[DeletedRecords]]


class DeleteRecordsHandler:
    def __init__(self, delete_records: DeleteRecords, authorizer: Authorizer) -> None:
        self._delete_records = delete_records
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.DELETE_RECORDS].response[ctx.api_version]
        topic_cls = response.DeleteRecordsTopicResult
        partition_cls = topic_cls.DeleteRecordsPartitionResult
        jobs: list[tuple[str, int, int, bool]] = []
        for topic in request.topics:
            allowed = await self._authorizer.allowed(
                ctx.principal, "delete_topic", "topic", topic.name
            )
            jobs += [(topic.name, p.partition_index, p.offset, allowed) for p in topic.partitions]
        timeout_ms = max(request.timeout_ms, 0)
        outcomes = await gather_all(*(self._one(*job, timeout_ms) for job in jobs))
        by_topic: dict[str, list[Any]] = {}
        for (name, partition, _, _), (low_watermark, error) in zip(jobs, outcomes, strict=True):
            by_topic.setdefault(name, []).append(
                partition_cls(
                    partition_index=partition, low_watermark=low_watermark, error_code=error
                )
            )
        topics = [topic_cls(name=name, partitions=ps) for name, ps in by_topic.items()]
        return response(throttle_time_ms=0, topics=topics)

    async def _one(
        self, topic: str, partition: int, offset: int, allowed: bool, timeout_ms: int
    ) -> tuple[int, int]:
        if not allowed:
            return -1, KafkaError.TOPIC_AUTHORIZATION_FAILED
        try:
            answer = await self._delete_records(topic, partition, offset, timeout_ms=timeout_ms)
        except ConveyorError as exc:
            return -1, kafka_error(exc.code)
        return answer.low_watermark, KafkaError.NONE
