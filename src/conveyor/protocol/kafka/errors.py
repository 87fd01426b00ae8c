"""Kafka's error codes, and the mapping from Conveyor's one ``ErrorCode`` table onto them.

The reverse, :func:`conveyor_error`, is what Conveyor's own client raises for a Kafka
code in an answer: the same typed errors as over HTTP.

Every :class:`~conveyor.protocol.errors.ErrorCode` has exactly one Kafka code here (a
test walks the enum), so a new Conveyor error cannot reach a Kafka client unmapped. The
choice follows what Kafka's own broker answers in the same situation, since that is what
every client's retry logic is written against (``STALE_EPOCH`` is Kafka's
``FENCED_LEADER_EPOCH``; a write truncated before it was acknowledged is
``NOT_LEADER_OR_FOLLOWER``, as Kafka's purgatory answers when leadership moves; storage
failures are ``KAFKA_STORAGE_ERROR``, which clients answer by refreshing metadata).
"""

from __future__ import annotations

import enum
from typing import Final

from conveyor.protocol.errors import (
    ConveyorError,
    ErrorCode,
    error_class,
)


class KafkaError(enum.IntEnum):
    """The Kafka error codes Conveyor answers (Kafka's ``Errors`` numbering)."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    OFFSET_METADATA_TOO_LARGE = 12
    MESSAGE_TOO_LARGE = 10
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    CLUSTER_AUTHORIZATION_FAILED = 31
    INVALID_TIMESTAMP = 32
    UNSUPPORTED_SASL_MECHANISM = 33
    ILLEGAL_SASL_STATE = 34
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REPLICA_ASSIGNMENT = 39
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
    POLICY_VIOLATION = 44
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_PRODUCER_ID_MAPPING = 49
    INVALID_TRANSACTION_TIMEOUT = 50
    CONCURRENT_TRANSACTIONS = 51
    TRANSACTION_COORDINATOR_FENCED = 52
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
    OPERATION_NOT_ATTEMPTED = 55
    KAFKA_STORAGE_ERROR = 56
    SASL_AUTHENTICATION_FAILED = 58
    UNKNOWN_PRODUCER_ID = 59
    GROUP_NOT_EMPTY = 68
    GROUP_ID_NOT_FOUND = 69
    MEMBER_ID_REQUIRED = 79
    GROUP_MAX_SIZE_REACHED = 81
    FENCED_INSTANCE_ID = 82
    GROUP_SUBSCRIBED_TO_TOPIC = 86
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75
    INVALID_RECORD = 87
    UNSTABLE_OFFSET_COMMIT = 88
    PRODUCER_FENCED = 90
    TRANSACTIONAL_ID_NOT_FOUND = 105
    UNKNOWN_TOPIC_ID = 100
    FENCED_MEMBER_EPOCH = 110
    UNRELEASED_INSTANCE_ID = 111
    UNSUPPORTED_ASSIGNOR = 112
    STALE_MEMBER_EPOCH = 113
    UNSUPPORTED_ENDPOINT_TYPE = 115
    INVALID_RECORD_STATE = 121
    INVALID_REGULAR_EXPRESSION = 128


_BY_CODE: Final[dict[ErrorCode, KafkaError]] = {
    ErrorCode.INVALID_REQUEST: KafkaError.INVALID_REQUEST,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: KafkaError.INVALID_REQUEST,
    ErrorCode.CORRUPT_MESSAGE: KafkaError.CORRUPT_MESSAGE,
    ErrorCode.UNSUPPORTED_VERSION: KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
    ErrorCode.MESSAGE_TOO_LARGE: KafkaError.MESSAGE_TOO_LARGE,
    ErrorCode.INVALID_TOPIC: KafkaError.INVALID_TOPIC_EXCEPTION,
    ErrorCode.UNKNOWN_TOPIC: KafkaError.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.UNKNOWN_PARTITION: KafkaError.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.TOPIC_ALREADY_EXISTS: KafkaError.TOPIC_ALREADY_EXISTS,
    ErrorCode.OFFSET_OUT_OF_RANGE: KafkaError.OFFSET_OUT_OF_RANGE,
    ErrorCode.INVALID_CONFIG: KafkaError.INVALID_CONFIG,
    ErrorCode.INVALID_PARTITIONS: KafkaError.INVALID_PARTITIONS,
    ErrorCode.INVALID_RECORD: KafkaError.INVALID_RECORD,
    ErrorCode.NOT_LEADER: KafkaError.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.LEADER_NOT_AVAILABLE: KafkaError.LEADER_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS: KafkaError.NOT_ENOUGH_REPLICAS,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND: KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ErrorCode.REQUEST_TIMED_OUT: KafkaError.REQUEST_TIMED_OUT,
    ErrorCode.STALE_EPOCH: KafkaError.FENCED_LEADER_EPOCH,
    ErrorCode.LOG_TRUNCATED: KafkaError.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.NOT_READY: KafkaError.LEADER_NOT_AVAILABLE,
    ErrorCode.NETWORK_ERROR: KafkaError.NETWORK_EXCEPTION,
    ErrorCode.DISK_FULL: KafkaError.KAFKA_STORAGE_ERROR,
    ErrorCode.STORAGE_ERROR: KafkaError.KAFKA_STORAGE_ERROR,
    ErrorCode.CORRUPT_DATA: KafkaError.KAFKA_STORAGE_ERROR,
    ErrorCode.INTERNAL_ERROR: KafkaError.UNKNOWN_SERVER_ERROR,
    ErrorCode.OUT_OF_ORDER_SEQUENCE: KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    ErrorCode.DUPLICATE_SEQUENCE: KafkaError.DUPLICATE_SEQUENCE_NUMBER,
    ErrorCode.PRODUCER_FENCED: KafkaError.INVALID_PRODUCER_EPOCH,
    ErrorCode.UNKNOWN_MEMBER: KafkaError.UNKNOWN_MEMBER_ID,
    ErrorCode.FENCED_MEMBER: KafkaError.FENCED_MEMBER_EPOCH,
    ErrorCode.ILLEGAL_GENERATION: KafkaError.ILLEGAL_GENERATION,
    ErrorCode.GROUP_NOT_EMPTY: KafkaError.GROUP_NOT_EMPTY,
    ErrorCode.UNKNOWN_GROUP: KafkaError.GROUP_ID_NOT_FOUND,
    ErrorCode.UNAUTHENTICATED: KafkaError.SASL_AUTHENTICATION_FAILED,
    ErrorCode.FORBIDDEN: KafkaError.TOPIC_AUTHORIZATION_FAILED,
    # the Kafka listener closes refused connections (no header read, no answer possible)
    ErrorCode.TOO_MANY_CONNECTIONS: KafkaError.NETWORK_EXCEPTION,
    # a SASL exchange refused unchecked: clients see a failed authentication, as in Kafka
    ErrorCode.THROTTLED: KafkaError.SASL_AUTHENTICATION_FAILED,
    # no Conveyor coordinator is active (an election): the broker answering for it is
    # not available as the group coordinator for now; clients retry
    ErrorCode.NOT_COORDINATOR: KafkaError.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.REBALANCE_IN_PROGRESS: KafkaError.REBALANCE_IN_PROGRESS,
    ErrorCode.MEMBER_ID_REQUIRED: KafkaError.MEMBER_ID_REQUIRED,
    ErrorCode.FENCED_INSTANCE_ID: KafkaError.FENCED_INSTANCE_ID,
    ErrorCode.INCONSISTENT_GROUP_PROTOCOL: KafkaError.INCONSISTENT_GROUP_PROTOCOL,
    ErrorCode.INVALID_SESSION_TIMEOUT: KafkaError.INVALID_SESSION_TIMEOUT,
    ErrorCode.GROUP_MAX_SIZE_REACHED: KafkaError.GROUP_MAX_SIZE_REACHED,
    ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC: KafkaError.GROUP_SUBSCRIBED_TO_TOPIC,
    ErrorCode.UNRELEASED_INSTANCE_ID: KafkaError.UNRELEASED_INSTANCE_ID,
    ErrorCode.INVALID_REGULAR_EXPRESSION: KafkaError.INVALID_REGULAR_EXPRESSION,
    ErrorCode.OFFSET_METADATA_TOO_LARGE: KafkaError.OFFSET_METADATA_TOO_LARGE,
    # share groups (KIP-932's own code for an acknowledgement of a record not held)
    ErrorCode.INVALID_RECORD_STATE: KafkaError.INVALID_RECORD_STATE,
    ErrorCode.POLICY_VIOLATION: KafkaError.POLICY_VIOLATION,
    # a client's own TLS handshake failed (never answered by a service): a network failure
    ErrorCode.TLS_ERROR: KafkaError.NETWORK_EXCEPTION,
    ErrorCode.CONCURRENT_TRANSACTIONS: KafkaError.CONCURRENT_TRANSACTIONS,
    ErrorCode.INVALID_TXN_STATE: KafkaError.INVALID_TXN_STATE,
    ErrorCode.INVALID_PRODUCER_ID_MAPPING: KafkaError.INVALID_PRODUCER_ID_MAPPING,
    ErrorCode.INVALID_TRANSACTION_TIMEOUT: KafkaError.INVALID_TRANSACTION_TIMEOUT,
    ErrorCode.UNSTABLE_OFFSET_COMMIT: KafkaError.UNSTABLE_OFFSET_COMMIT,
}

_FORBIDDEN_BY_RESOURCE: Final[dict[str, KafkaError]] = {
    "topic": KafkaError.TOPIC_AUTHORIZATION_FAILED,
    "group": KafkaError.GROUP_AUTHORIZATION_FAILED,
    "cluster": KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}


def kafka_error(code: ErrorCode, resource_type: str = "topic") -> KafkaError:
    """The Kafka code for a Conveyor error; ``resource_type`` picks which
    ``*_AUTHORIZATION_FAILED`` a ``FORBIDDEN`` becomes."""
    if code is ErrorCode.FORBIDDEN:
        return _FORBIDDEN_BY_RESOURCE.get(resource_type, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    return _BY_CODE[code]


def unmapped_codes() -> list[ErrorCode]:
    """Conveyor codes with no Kafka code (a test keeps this empty)."""
    return [code for code in ErrorCode if code not in _BY_CODE]


# Kafka codes that several Conveyor codes map onto, or none: the Conveyor code a client
# reports for each (the meaning a retry loop needs: retriable or not, routing or not).
_PREFERRED: Final[dict[KafkaError, ErrorCode]] = {
    KafkaError.UNKNOWN_SERVER_ERROR: ErrorCode.INTERNAL_ERROR,
    KafkaError.INVALID_REQUEST: ErrorCode.INVALID_REQUEST,
    KafkaError.UNKNOWN_TOPIC_OR_PARTITION: ErrorCode.UNKNOWN_TOPIC,
    KafkaError.NOT_LEADER_OR_FOLLOWER: ErrorCode.NOT_LEADER,
    KafkaError.LEADER_NOT_AVAILABLE: ErrorCode.LEADER_NOT_AVAILABLE,
    KafkaError.NETWORK_EXCEPTION: ErrorCode.NETWORK_ERROR,
    KafkaError.KAFKA_STORAGE_ERROR: ErrorCode.STORAGE_ERROR,
    KafkaError.SASL_AUTHENTICATION_FAILED: ErrorCode.UNAUTHENTICATED,
    KafkaError.COORDINATOR_NOT_AVAILABLE: ErrorCode.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS: ErrorCode.NOT_COORDINATOR,
    KafkaError.NOT_COORDINATOR: ErrorCode.NOT_COORDINATOR,
    KafkaError.TOPIC_AUTHORIZATION_FAILED: ErrorCode.FORBIDDEN,
    KafkaError.GROUP_AUTHORIZATION_FAILED: ErrorCode.FORBIDDEN,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: ErrorCode.FORBIDDEN,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: ErrorCode.FORBIDDEN,
    KafkaError.UNKNOWN_LEADER_EPOCH: ErrorCode.STALE_EPOCH,
    KafkaError.INVALID_PRODUCER_EPOCH: ErrorCode.PRODUCER_FENCED,
    KafkaError.PRODUCER_FENCED: ErrorCode.PRODUCER_FENCED,
    KafkaError.UNSUPPORTED_VERSION: ErrorCode.UNSUPPORTED_VERSION,
    KafkaError.UNSUPPORTED_SASL_MECHANISM: ErrorCode.UNAUTHENTICATED,
    KafkaError.ILLEGAL_SASL_STATE: ErrorCode.UNAUTHENTICATED,
    KafkaError.INVALID_REQUIRED_ACKS: ErrorCode.INVALID_REQUEST,
    KafkaError.INVALID_TIMESTAMP: ErrorCode.INVALID_RECORD,
    KafkaError.UNKNOWN_TOPIC_ID: ErrorCode.UNKNOWN_TOPIC,
    # KIP-848: a commit or fetch with a member epoch the group has moved past; Conveyor's
    # client answers it as a stale generation (drop the partitions, rejoin)
    KafkaError.STALE_MEMBER_EPOCH: ErrorCode.ILLEGAL_GENERATION,
    # what the coordinator's INVALID_CONFIG carries in its details (admin_topics.failure)
    KafkaError.INVALID_REPLICATION_FACTOR: ErrorCode.INVALID_CONFIG,
    KafkaError.INVALID_REPLICA_ASSIGNMENT: ErrorCode.INVALID_CONFIG,
}


def conveyor_code(code: int) -> ErrorCode:
    """The Conveyor code of a Kafka error code in an answer (INTERNAL_ERROR for codes
    Conveyor's brokers never send)."""
    try:
        kafka = KafkaError(code)
    except ValueError:
        return ErrorCode.INTERNAL_ERROR
    preferred = _PREFERRED.get(kafka)
    if preferred is not None:
        return preferred
    return next((c for c, k in _BY_CODE.items() if k is kafka), ErrorCode.INTERNAL_ERROR)


def conveyor_error(code: int, message: str | None = None, **details: object) -> ConveyorError:
    """The typed error a client raises for Kafka error ``code`` (not NONE), with the
    broker's message when it sent one."""
    conveyor = conveyor_code(code)
    try:
        name = KafkaError(code).name
    except ValueError:
        name = f"error {code}"
    text = f"{message} (Kafka {name})" if message else f"{conveyor.default_message} (Kafka {name})"
    return error_class(conveyor)(text, code=conveyor, kafka_code=code, **details)
