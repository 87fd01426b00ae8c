"""The Python client: producers, consumers, admin, and the seed's three functions.

Everything here is re-exported from :mod:`conveyor`; see docs/client.md.
"""

from conveyor.client.admin import Admin
from conveyor.client.admin_ops import ResetTarget, Timestamp
from conveyor.client.async_admin import AsyncAdmin
from conveyor.client.async_consumer import AsyncConsumer
from conveyor.client.async_producer import AsyncProducer
from conveyor.client.consumer import Consumer
from conveyor.client.errors import (
    BufferFullError,
    ClientClosedError,
    ConveyorError,
    DeliveryTimeoutError,
    ErrorCode,
    FatalError,
    InvalidRequestError,
    KafkaOnlyError,
    OffsetOutOfRangeError,
    ProducerFencedError,
    RetriableError,
)
from conveyor.client.futures import RecordFuture
from conveyor.client.group import GroupAdmin
from conveyor.client.offsets import OffsetAndTimestamp
from conveyor.client.producer import Producer
from conveyor.client.queue import AckFailure, AsyncQueue, Queue, QueueMessage
from conveyor.client.security import SecurityAdmin
from conveyor.client.seed import Subscription, pull, push, subscribe
from conveyor.client.send_many import SendManyError, SendManyFuture, SendManyResult, SendRun
from conveyor.client.types import (
    ConsumerGroupMetadata,
    Message,
    PartitionRun,
    PolledBatch,
    RecordMetadata,
    TopicPartition,
)
from conveyor.protocol.records import Codec

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
    "pull",
    "push",
    "subscribe",
]
