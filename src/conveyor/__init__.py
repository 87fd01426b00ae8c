"""Conveyor: a partitioned, replicated message queue.

The client API lives in :mod:`conveyor.client` and is re-exported here::

    import conveyor
    conveyor.push("user-1", "hello")
    conveyor.pull()  # ("user-1", b"hello")

The re-exports load on first use (PEP 562), so ``import conveyor`` alone, and the
``conveyor`` command's ``--help`` and ``--version``, do not pay for the client's imports
(aiohttp, the record codec).
"""

from typing import TYPE_CHECKING, Any

from conveyor._version import __version__

if TYPE_CHECKING:
    from conveyor.client import (
        AckFailure,
        Admin,
        AsyncAdmin,
        AsyncConsumer,
        AsyncProducer,
        AsyncQueue,
        BufferFullError,
        ClientClosedError,
        Codec,
        Consumer,
        ConsumerGroupMetadata,
        ConveyorError,
        DeliveryTimeoutError,
        ErrorCode,
        FatalError,
        GroupAdmin,
        InvalidRequestError,
        KafkaOnlyError,
        Message,
        OffsetAndTimestamp,
        OffsetOutOfRangeError,
        PartitionRun,
        PolledBatch,
        Producer,
        ProducerFencedError,
        Queue,
        QueueMessage,
        RecordFuture,
        RecordMetadata,
        ResetTarget,
        RetriableError,
        SecurityAdmin,
        SendManyError,
        SendManyFuture,
        SendManyResult,
        SendRun,
        Subscription,
        Timestamp,
        TopicPartition,
        pull,
        push,
        subscribe,
    )


__all__ = [
    "AckFailure",
    "Admin",
    "AsyncAdmin",
    "AsyncConsumer",
    "AsyncProducer",
    "AsyncQueue",
    "BufferFullError",
    "ClientClosedError",
    "Codec",
    "Consumer",
    "ConsumerGroupMetadata",
    "ConveyorError",
    "DeliveryTimeoutError",
    "ErrorCode",
    "FatalError",
    "GroupAdmin",
    "InvalidRequestError",
    "KafkaOnlyError",
    "Message",
    "OffsetAndTimestamp",
    "OffsetOutOfRangeError",
    "PartitionRun",
    "PolledBatch",
    "Producer",
    "ProducerFencedError",
    "Queue",
    "QueueMessage",
    "RecordFuture",
    "RecordMetadata",
    "ResetTarget",
    "RetriableError",
    "SecurityAdmin",
    "SendManyError",
    "SendManyFuture",
    "SendManyResult",
    "SendRun",
    "Subscription",
    "Timestamp",
    "TopicPartition",
    "__version__",
    "pull",
    "push",
    "subscribe",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from conveyor import client

        value = getattr(client, name)
        globals()[name] = value  # once: later lookups skip this function
        return value
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
