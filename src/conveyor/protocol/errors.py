"""One table of error codes, and the exception tree built on it.

Every error that crosses a process boundary (an HTTP body, a CLI exit) carries a stable
machine-readable ``code`` from :class:`ErrorCode`, a human message, and whether a retry may
succeed. The exception tree::

    ConveyorError                      code, message, retriable, details
    +-- RetriableError                 not leader, not enough replicas, timeouts: try again
    +-- FatalError                     a bug or an unusable resource: disk failure, corruption
    +-- InvalidRequestError            the caller's input is wrong; nothing was changed

Subclasses exist only where callers catch them by type; everything else is an instance of
one of the three middle classes with the right code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class _Code:
    http_status: int
    retriable: bool
    message: str


class ErrorCode(enum.Enum):
    """code name -> (HTTP status, retriable, default message). Never renumber or rename."""

    # invalid requests: 4xx, not retriable
    INVALID_REQUEST = _Code(400, False, "the request is malformed")
    UNSUPPORTED_MEDIA_TYPE = _Code(415, False, "unsupported content type")
    CORRUPT_MESSAGE = _Code(400, False, "the record batch failed validation")
    UNSUPPORTED_VERSION = _Code(400, False, "unsupported record batch magic")
    MESSAGE_TOO_LARGE = _Code(413, False, "the record batch exceeds the size limit")
    INVALID_TOPIC = _Code(400, False, "invalid topic name")
    UNKNOWN_TOPIC = _Code(404, False, "unknown topic")
    UNKNOWN_PARTITION = _Code(404, False, "unknown partition")
    TOPIC_ALREADY_EXISTS = _Code(409, False, "topic already exists")
    OFFSET_OUT_OF_RANGE = _Code(416, False, "offset out of range")
    INVALID_CONFIG = _Code(400, False, "invalid configuration")
    INVALID_PARTITIONS = _Code(400, False, "invalid partition count")
    INVALID_RECORD = _Code(400, False, "a record breaks a rule of its topic")
    # operating conditions that heal by themselves: retriable
    NOT_LEADER = _Code(421, True, "this broker is not the leader of the partition")
    LEADER_NOT_AVAILABLE = _Code(503, True, "the partition has no live leader")
    NOT_ENOUGH_REPLICAS = _Code(503, True, "fewer in-sync replicas than min_insync_replicas")
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = _Code(
        503,
        True,
        "written, but the ISR shrank below min_insync_replicas before it was acknowledged",
    )
    REQUEST_TIMED_OUT = _Code(504, True, "the request timed out")
    STALE_EPOCH = _Code(409, True, "stale leader epoch")
    LOG_TRUNCATED = _Code(409, True, "the log was truncated before the write was durable")
    NOT_READY = _Code(503, True, "the service is not ready")
    NETWORK_ERROR = _Code(503, True, "could not reach the service")
    # failures of the broker's resources: not retriable against this broker
    DISK_FULL = _Code(507, False, "no space left on the broker's disk")
    STORAGE_ERROR = _Code(500, False, "the broker's storage failed")
    CORRUPT_DATA = _Code(500, False, "stored data failed its checksum")
    INTERNAL_ERROR = _Code(500, False, "internal error")
    # idempotent producer (issue 4): appended, never renumbered
    OUT_OF_ORDER_SEQUENCE = _Code(
        409, False, "the batch's sequence number does not follow the producer's last one"
    )
    DUPLICATE_SEQUENCE = _Code(
        409, False, "the batch is older than the broker's dedup window; it was already written"
    )
    PRODUCER_FENCED = _Code(409, False, "a newer epoch of this producer id exists")
    # consumer groups (issue 5): appended, never renumbered
    UNKNOWN_MEMBER = _Code(409, False, "not a member of the group (removed): rejoin")
    FENCED_MEMBER = _Code(409, False, "the member does not own the partition")
    ILLEGAL_GENERATION = _Code(409, False, "unknown group generation")
    GROUP_NOT_EMPTY = _Code(409, False, "the group has active members")
    UNKNOWN_GROUP = _Code(404, False, "unknown consumer group")
    # security (issue 10): appended, never renumbered
    UNAUTHENTICATED = _Code(401, False, "missing or invalid credentials")
    FORBIDDEN = _Code(403, False, "the principal is not allowed to do this")
    # limits (issue 15): appended, never renumbered
    TOO_MANY_CONNECTIONS = _Code(503, True, "the listener refused the connection: too many open")
    THROTTLED = _Code(429, True, "too many failed authentications: retry after the delay")
    # coordinator high availability (issue 20): appended, never renumbered. A standby (or a
    # coordinator that lost its lease) answers it; ``details.active_url`` names the active
    # coordinator when known, and ``details.coordinator_epoch`` its epoch.
    NOT_COORDINATOR = _Code(421, True, "this coordinator is not the active one")
    # Kafka-protocol consumer groups (issue 17): appended, never renumbered. The classic
    # protocol's answers (JoinGroup, SyncGroup, Heartbeat, OffsetCommit), with Kafka's names.
    REBALANCE_IN_PROGRESS = _Code(409, True, "the group is rebalancing: rejoin")
    MEMBER_ID_REQUIRED = _Code(409, True, "join again with the member id in this answer")
    FENCED_INSTANCE_ID = _Code(409, False, "a newer member holds this group instance id")
    INCONSISTENT_GROUP_PROTOCOL = _Code(
        409, False, "the group uses another protocol (classic and Conveyor groups do not mix)"
    )
    INVALID_SESSION_TIMEOUT = _Code(400, False, "session timeout outside the allowed range")
    GROUP_MAX_SIZE_REACHED = _Code(409, False, "the group has reached its maximum size")
    GROUP_SUBSCRIBED_TO_TOPIC = _Code(
        409, False, "the group's members subscribe to the topic: its offsets cannot be deleted"
    )
    UNRELEASED_INSTANCE_ID = _Code(409, True, "another member still holds this instance id")
    INVALID_REGULAR_EXPRESSION = _Code(
        400, False, "the subscription's regular expression is invalid"
    )
    OFFSET_METADATA_TOO_LARGE = _Code(400, False, "the committed offset's metadata is too long")
    # share groups (issue 23): appended, never renumbered
    INVALID_RECORD_STATE = _Code(
        409, False, "the record is not held under this lock (expired, settled or redelivered)"
    )
    # deleting records (issue 22): appended, never renumbered. A topic's settings forbid
    # the operation (records of a compact-only topic cannot be deleted, as in Kafka).
    POLICY_VIOLATION = _Code(400, False, "the topic's settings forbid this operation")
    TLS_ERROR = _Code(
        400, False, "the TLS handshake failed (plain HTTP server, unknown CA, wrong name)"
    )
    # transactions (issue 21): appended, never renumbered. Kafka's names and meanings.
    CONCURRENT_TRANSACTIONS = _Code(
        409, True, "the transactional id's previous transaction is still completing: retry"
    )
    INVALID_TXN_STATE = _Code(409, False, "the transaction is not in a state that allows this")
    INVALID_PRODUCER_ID_MAPPING = _Code(
        409, False, "the producer id is not the transactional id's current one"
    )
    INVALID_TRANSACTION_TIMEOUT = _Code(
        400, False, "the transaction timeout is above the coordinator's maximum"
    )
    UNSTABLE_OFFSET_COMMIT = _Code(
        409, True, "a transaction holding offsets of this partition is still open: retry"
    )

    @property
    def http_status(self) -> int:
        return self.value.http_status

    @property
    def retriable(self) -> bool:
        return self.value.retriable

    @property
    def default_message(self) -> str:
        return self.value.message


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""

    default_code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(
        self, message: str | None = None, *, code: ErrorCode | None = None, **details: Any
    ) -> None:
        self.code = code or self.default_code
        self.message = message or self.code.default_message
        self.details = details
        super().__init__(f"{self.code.name}: {self.message}")

    @property
    def retriable(self) -> bool:
        return self.code.retriable

    def to_dict(self) -> dict[str, Any]:
        """The error body every HTTP endpoint returns."""
        body: dict[str, Any] = {"code": self.code.name, "message": self.message}
        if self.details:
            body["details"] = self.details
        body["retriable"] = self.retriable
        return body


class RetriableError(ConveyorError):
    default_code = ErrorCode.REQUEST_TIMED_OUT


class FatalError(ConveyorError):
    default_code = ErrorCode.INTERNAL_ERROR


class InvalidRequestError(ConveyorError):
    default_code = ErrorCode.INVALID_REQUEST


class CorruptBatchError(InvalidRequestError):
    """A batch handed to the log failed validation; nothing was written."""

    default_code = ErrorCode.CORRUPT_MESSAGE


class BatchTooLargeError(InvalidRequestError):
    default_code = ErrorCode.MESSAGE_TOO_LARGE


class OffsetOutOfRangeError(InvalidRequestError):
    """A read below the log start or beyond the log end. ``details`` holds the valid range."""

    default_code = ErrorCode.OFFSET_OUT_OF_RANGE

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is outside [{log_start_offset}, {log_end_offset}]",
            offset=offset,
            log_start_offset=log_start_offset,
            log_end_offset=log_end_offset,
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class CorruptDataError(FatalError):
    """Stored bytes failed their checksum on read: reported, never served."""

    default_code = ErrorCode.CORRUPT_DATA


class StorageError(FatalError):
    default_code = ErrorCode.STORAGE_ERROR


class DiskFullError(StorageError):
    default_code = ErrorCode.DISK_FULL


class LogTruncatedError(RetriableError):
    """A write waiting for durability was removed by ``truncate_to`` before it was flushed."""

    default_code = ErrorCode.LOG_TRUNCATED


class AuthenticationError(InvalidRequestError):
    """401: no credentials, or credentials that name no principal (wrong password,
    unknown, expired or revoked token). Nothing was read or changed."""

    default_code = ErrorCode.UNAUTHENTICATED


class AuthorizationError(InvalidRequestError):
    """403: the principal is known but not allowed this operation on this resource (or a
    client reached an internal endpoint). Nothing was read or changed."""

    default_code = ErrorCode.FORBIDDEN


_TYPED_BY_CODE: dict[ErrorCode, type[ConveyorError]] = {
    ErrorCode.UNAUTHENTICATED: AuthenticationError,
    ErrorCode.FORBIDDEN: AuthorizationError,
}


OUTCOME_UNKNOWN: Final = "outcome_unknown"  # a detail: the failed write may have been applied


def outcome_unknown(exc: ConveyorError) -> bool:
    """Whether a write that failed with ``exc`` may have been applied all the same: the
    leadership moved or the acknowledgement timed out after the append (the detail
    ``outcome_unknown``, or REQUEST_TIMED_OUT), or the network failed around the call."""
    return bool(exc.details.get(OUTCOME_UNKNOWN)) or exc.code in (
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.NETWORK_ERROR,
    )


def error_from_dict(body: dict[str, Any]) -> ConveyorError:
    """Rebuild a typed error from an HTTP error body (the client side of ``to_dict``)."""
    try:
        code = ErrorCode[str(body.get("code"))]
    except KeyError:
        code = ErrorCode.INTERNAL_ERROR
    details = body.get("details") or {}
    message = str(body.get("message") or code.default_message)
    if code is ErrorCode.OFFSET_OUT_OF_RANGE and {"offset", "log_start_offset"} <= set(details):
        return OffsetOutOfRangeError(
            int(details["offset"]), int(details["log_start_offset"]), int(details["log_end_offset"])
        )
    return error_class(code)(message, code=code, **details)


def error_class(code: ErrorCode) -> type[ConveyorError]:
    """The exception class a client raises for ``code``, whatever carried it (an HTTP
    error body or a Kafka error code): the typed ones (``AuthorizationError``...), else
    retriable, fatal (5xx) or invalid request."""
    if code in _TYPED_BY_CODE:
        return _TYPED_BY_CODE[code]
    if code.retriable:
        return RetriableError
    if code.http_status >= 500:
        return FatalError
    return InvalidRequestError
