"""DescribeProducers (KIP-664): the partition leader's view of the producers writing to
it: each producer id's epoch and last sequence (the idempotent producers' state the core
keeps, ``broker/producers.py``) and the first offset of its open transaction (the log's
transaction index, ``storage/txnindex.py``). The last write's timestamp and the
coordinator epoch are not kept: -1. Needs ``describe`` on the topic, as Kafka's READ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.replica import Producers


class Led(Protocol):
    """What DescribeProducers reads of a partition this broker leads."""

    @property
    def producers(self) -> Producers: ...

    def open_transactions(self) -> dict[int, int]: ...


Leader = Callable[[str, int], Awaitable[Led]]


class DescribeProducersHandler:
    def __init__(self, leader: Leader, authorizer: Authorizer) -> None:
        self._leader = leader
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.DESCRIBE_PRODUCERS].response[ctx.api_version]
        topic_cls = response.TopicResponse
        partition_cls = topic_cls.PartitionResponse
        state_cls = partition_cls.ProducerState
        topics = []
        for topic in request.topics:
            allowed = await self._authorizer.allowed(ctx.principal, "describe", "topic", topic.name)
            partitions = []
            for index in topic.partition_indexes:
                error, message, states = KafkaError.NONE, None, []
                if not allowed:
                    error = KafkaError.TOPIC_AUTHORIZATION_FAILED
                else:
                    try:
                        led = await self._leader(topic.name, index)
                    except ConveyorError as exc:
                        error, message = kafka_error(exc.code), exc.message
                    else:
                        states = _states(state_cls, led)
                partitions.append(
                    partition_cls(
                        partition_index=index,
                        error_code=error,
                        error_message=message,
                        active_producers=states,
                    )
                )
            topics.append(topic_cls(name=topic.name, partitions=partitions))
        return response(throttle_time_ms=0, topics=topics)


def _states(state_cls: Any, led: Led) -> list[Any]:
    open_txns = led.open_transactions()
    found = []
    for producer_id, entry in sorted(led.producers.items()):
        last = entry.batches[-1].last_sequence if entry.batches else -1
        found.append(
            state_cls(
                producer_id=producer_id,
                producer_epoch=entry.producer_epoch,
                last_sequence=last,
                last_timestamp=-1,
                coordinator_epoch=-1,
                current_txn_start_offset=open_txns.get(producer_id, -1),
            )
        )
    return found
