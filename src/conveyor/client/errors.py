"""Errors the client raises on its own, added to the tree of :mod:`conveyor.protocol.errors`::

    ConveyorError
    +-- RetriableError
    |   +-- BufferFullError        the producer's buffer stayed full for max_block_ms
    |   +-- DeliveryTimeoutError   a batch was not acknowledged within delivery_timeout_ms
    +-- FatalError
    +-- InvalidRequestError
    |   +-- OffsetOutOfRangeError
    |   +-- ProducerFencedError    a newer producer took the transactional id (fatal for this one)
    |   +-- CoordinatorRequiredError  an Admin operation with no Kafka API, on transport="kafka"
    |   +-- KafkaOnlyError         transport="http" for a data-path client (removed: Kafka only)
    +-- ClientClosedError          the producer or consumer was closed (a usage error)

Errors from the services arrive as the typed errors of the protocol table, translated
once in :mod:`conveyor.transport.client`.
"""

from __future__ import annotations

from conveyor.protocol.errors import (
    ConveyorError,
    ErrorCode,
    FatalError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    RetriableError,
)

__all__ = [
    "BufferFullError",
    "ClientClosedError",
    "ConveyorError",
    "CoordinatorRequiredError",
    "DeliveryTimeoutError",
    "ErrorCode",
    "FatalError",
    "InvalidRequestError",
    "KafkaOnlyError",
    "OffsetOutOfRangeError",
    "ProducerFencedError",
    "RetriableError",
    "is_routing_error",
]


class BufferFullError(RetriableError):
    """``send`` found the producer's buffer full (``buffer_memory_bytes``) and it did not
    drain within ``max_block_ms``: the cluster is slower than the producer, or down."""

    default_code = ErrorCode.REQUEST_TIMED_OUT


class DeliveryTimeoutError(RetriableError):
    """A batch was not acknowledged within ``delivery_timeout_ms`` of its first record."""

    default_code = ErrorCode.REQUEST_TIMED_OUT


class ProducerFencedError(InvalidRequestError):
    """A newer producer initialised the same ``transactional_id`` (Kafka's
    PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH from older brokers): this producer's
    transaction was aborted and every later call of it fails; close it."""

    default_code = ErrorCode.PRODUCER_FENCED


class CoordinatorRequiredError(InvalidRequestError):
    """An ``Admin`` on the Kafka transport was asked for an operation that no Kafka API
    carries (decommissioning a broker): it needs the coordinator's URL (``url=`` with
    ``transport="http"``). Raised before anything is sent."""

    default_code = ErrorCode.INVALID_REQUEST


class KafkaOnlyError(InvalidRequestError):
    """A producer, consumer or seed function was asked for a data-path transport other
    than Kafka (``transport="http"``, removed: docs/client.md, "Transport"). Raised at
    construction, before anything is sent."""

    default_code = ErrorCode.INVALID_CONFIG


class ClientClosedError(ConveyorError):
    """The client was used after ``close()``."""

    default_code = ErrorCode.INVALID_REQUEST


# Errors after which the client's idea of who leads a partition may be wrong: the cure is
# a metadata refresh and a retry. UNKNOWN_TOPIC/PARTITION belong here because a broker
# learns of a new topic by heartbeat, up to a second after the coordinator created it.
_ROUTING_CODES = frozenset(
    {
        ErrorCode.NOT_LEADER,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.NETWORK_ERROR,
        ErrorCode.STALE_EPOCH,
        ErrorCode.NOT_READY,
        ErrorCode.UNKNOWN_TOPIC,
        ErrorCode.UNKNOWN_PARTITION,
    }
)


def is_routing_error(error: ConveyorError) -> bool:
    """Whether ``error`` means "ask the coordinator again, then retry"."""
    return error.code in _ROUTING_CODES
