"""Conveyor: a partitioned, replicated message queue.

The client API lives in :mod:`conveyor.client` and is re-exported here::

    import conveyor
    conveyor.push("user-1", "hello")
    conveyor.pull()  # ("user-1", b"hello")
"""

from conveyor._version import __version__
from conveyor.client import (
    Admin,
    AsyncConsumer,
    AsyncProducer,
    BufferFullError,
    ClientClosedError,
    Codec,
    Consumer,
    ConveyorError,
    DeliveryTimeoutError,
    ErrorCode,
    FatalError,
    InvalidRequestError,
    Message,
    OffsetOutOfRangeError,
    Producer,
    RecordFuture,
    RecordMetadata,
    RetriableError,
    Subscription,
    TopicPartition,
    pull,
    push,
    subscribe,
)

__all__ = [
    "Admin",
    "AsyncConsumer",
    "AsyncProducer",
    "BufferFullError",
    "ClientClosedError",
    "Codec",
    "Consumer",
    "ConveyorError",
    "DeliveryTimeoutError",
    "ErrorCode",
    "FatalError",
    "InvalidRequestError",
    "Message",
    "OffsetOutOfRangeError",
    "Producer",
    "RecordFuture",
    "RecordMetadata",
    "RetriableError",
    "Subscription",
    "TopicPartition",
    "__version__",
    "pull",
    "push",
    "subscribe",
]
