"""The Python client: producers, consumers, admin, and the seed's three functions.

Everything here is re-exported from :mod:`conveyor`; see docs/client.md.
"""

from conveyor.client.admin import Admin
from conveyor.client.consumer import AsyncConsumer, Consumer
from conveyor.client.errors import (
    BufferFullError,
    ClientClosedError,
    ConveyorError,
    DeliveryTimeoutError,
    ErrorCode,
    FatalError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    RetriableError,
)
from conveyor.client.futures import RecordFuture
from conveyor.client.producer import AsyncProducer, Producer
from conveyor.client.seed import Subscription, pull, push, subscribe
from conveyor.client.types import Message, RecordMetadata, TopicPartition
from conveyor.protocol.records import Codec

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
    "pull",
    "push",
    "subscribe",
]
