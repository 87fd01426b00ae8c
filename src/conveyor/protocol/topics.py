"""Rules about topics that the coordinator and the brokers both apply, written once.

Pure. The coordinator checks a request against them before it records anything; a broker
checks the names it receives before they reach its file system, and derives the same
defaults from a topic's config. Keeping one copy means the two sides cannot disagree
about what a valid topic is.

* names: Kafka's rule, 1-249 characters of ``[a-zA-Z0-9._-]``, not ``.`` or ``..``
  (the broker's partition directory ``<topic>-<partition>`` must fit in a file name);
  consumer group names (:func:`check_group_name`) are freer, as Kafka's group ids are
  (librdkafka's tests name groups ``roundrobin,range``): printable, no ``/``;
* ``min_insync_replicas``: the topic's setting, else 2 when RF >= 3, else 1;
* the flush policy (``TopicConfig.flush``, parsed by :class:`FlushPolicy`), the cleanup
  policy (:func:`parse_cleanup_policy`) and a partition log's settings
  (:class:`LogConfig`, what a broker derives from a topic's config and the storage engine
  opens a log with), with the limits both sides check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

from conveyor.protocol.errors import ErrorCode, InvalidRequestError

NAME_LENGTH_MAX: Final = 249  # Kafka's limit: a log directory is named <topic>-<partition>
_NAME_CHARS: Final = re.compile(r"[a-zA-Z0-9._-]+")

MIB: Final = 1024 * 1024
DAY_MS: Final = 24 * 3600 * 1000
# The storage engine's limits on a topic's log settings (LogConfig checks them again).
SEGMENT_BYTES_MIN: Final = 1024
SEGMENT_BYTES_MAX: Final = 2**31 - 1  # index positions are 32-bit
BATCH_BYTES_MIN: Final = 61  # one batch header
BATCH_BYTES_MAX: Final = 2**30


def check_name(kind: str, name: str, code: ErrorCode) -> None:
    """Kafka's naming rule, raising ``code`` with a message naming the rule broken."""
    if not name:
        raise InvalidRequestError(f"{kind} name must not be empty", code=code)
    if len(name) > NAME_LENGTH_MAX:
        raise InvalidRequestError(
            f"{kind} name is {len(name)} characters; the limit is {NAME_LENGTH_MAX}",
            code=code,
        )
    if name in (".", ".."):
        raise InvalidRequestError(f"{kind} name must not be '.' or '..'", code=code)
    if _NAME_CHARS.fullmatch(name) is None:
        raise InvalidRequestError(
            f"{kind} name {name[:300]!r} may contain only ASCII letters, digits, '.', '_' and '-'",
            code=code,
        )


GROUP_NAME_LENGTH_MAX: Final = 249


def check_group_name(name: str, code: ErrorCode) -> None:
    """A consumer group's name: 1-249 printable characters other than ``/`` and ``\\``
    (it is a URL path segment of the group routes), not ``.`` or ``..``. Kafka takes
    any string as a group id; these are the ones Conveyor can carry everywhere."""
    if not name:
        raise InvalidRequestError("group name must not be empty", code=code)
    if len(name) > GROUP_NAME_LENGTH_MAX:
        raise InvalidRequestError(
            f"group name is {len(name)} characters; the limit is {GROUP_NAME_LENGTH_MAX}",
            code=code,
        )
    if name in (".", "..") or not name.isprintable() or "/" in name or "\\" in name:
        raise InvalidRequestError(
            f"group name {name[:300]!r} must be printable, without '/' or '\\', "
            "and not '.' or '..'",
            code=code,
        )


def validate_topic_name(name: str) -> None:
    """Kafka's rule: ``[a-zA-Z0-9._-]``, 1 to 249 characters, not ``.`` or ``..``.

    Checked before any lookup, so that a bad name never reaches a file system."""
    check_name("topic", name, ErrorCode.INVALID_TOPIC)


def min_insync_replicas(configured: int | None, replication_factor: int) -> int:
    """The topic's explicit setting, else 2 when RF >= 3 (one failure leaves a quorum that
    still acknowledges writes) and 1 otherwise (a smaller RF could not take a failure).

    >>> min_insync_replicas(None, 3), min_insync_replicas(None, 2), min_insync_replicas(3, 3)
    (2, 1, 3)
    """
    if configured is not None:
        return configured
    return 2 if replication_factor >= 3 else 1


CleanupPolicy = Literal["delete", "compact", "compact,delete"]
CLEANUP_POLICIES: Final[tuple[CleanupPolicy, ...]] = ("delete", "compact", "compact,delete")


def parse_cleanup_policy(text: str) -> CleanupPolicy:
    """Kafka's ``cleanup.policy``: ``delete``, ``compact`` or both (either order, any
    spacing: ``delete, compact`` is ``compact,delete``). Raises INVALID_CONFIG.

    >>> parse_cleanup_policy("Delete , compact")
    'compact,delete'
    """
    parts = sorted({part.strip().lower() for part in text.split(",")})
    joined = ",".join(parts)
    for policy in CLEANUP_POLICIES:
        if joined == policy:
            return policy
    raise InvalidRequestError(
        f"cleanup policy {text[:50]!r} is not one of {', '.join(CLEANUP_POLICIES)}",
        code=ErrorCode.INVALID_CONFIG,
    )


FlushMode = Literal["always", "interval", "never"]


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When appended bytes are fsynced (a topic's ``flush`` setting, parsed).

    ``always``: a write counts as durable only after an fsync that covers it (group commit:
    one fsync covers every append waiting at that moment). ``interval``: fsync every
    ``interval_ms`` in the background; writes count as durable once written (the risk of
    losing the last interval on power loss is accepted). ``never``: leave it to the OS and
    to replication.
    """

    mode: FlushMode = "always"
    interval_ms: int = 100

    def __post_init__(self) -> None:
        if self.mode not in ("always", "interval", "never"):
            raise InvalidRequestError(
                f"flush mode must be always, interval or never, not {self.mode!r}",
                code=ErrorCode.INVALID_CONFIG,
            )
        if self.interval_ms < 1:
            raise InvalidRequestError(
                "flush interval_ms must be >= 1", code=ErrorCode.INVALID_CONFIG
            )

    @classmethod
    def parse(cls, text: str) -> FlushPolicy:
        """``always``, ``never``, ``interval`` (100 ms) or ``interval:250`` / ``250ms``."""
        text = text.strip().lower()
        if text in ("always", "never", "interval"):
            return cls(text)  # type: ignore[arg-type]
        number = text.removeprefix("interval:").removesuffix("ms")
        if not (number.isascii() and number.isdigit()):  # "¹".isdigit() is True
            raise InvalidRequestError(
                f"cannot parse flush policy {text!r}: use always, never or interval:MS",
                code=ErrorCode.INVALID_CONFIG,
            )
        return cls("interval", int(number))


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Settings of one partition log. Every limit is named here with its default."""

    segment_bytes_max: int = 128 * MIB
    segment_ms_max: int = 7 * DAY_MS
    index_interval_bytes: int = 4096
    batch_bytes_max: int = 1 * MIB
    retention_bytes: int = -1  # -1: no size limit
    retention_ms: int = 7 * DAY_MS  # -1: keep forever
    flush: FlushPolicy = field(default_factory=FlushPolicy)
    # Compaction (docs/storage-format.md#compaction), Kafka's names and defaults.
    cleanup_policy: CleanupPolicy = "delete"
    delete_retention_ms: int = DAY_MS  # how long a tombstone stays readable
    min_cleanable_dirty_ratio: float = 0.5  # clean once this share of the log is dirty

    @property
    def compacted(self) -> bool:
        return self.cleanup_policy != "delete"

    @property
    def deletes(self) -> bool:
        """Whether retention deletes old segments (a purely compacted log keeps them)."""
        return self.cleanup_policy != "compact"

    def __post_init__(self) -> None:
        problems = []
        if self.segment_bytes_max < SEGMENT_BYTES_MIN:
            problems.append(f"segment_bytes_max must be >= {SEGMENT_BYTES_MIN}")
        if self.segment_bytes_max > SEGMENT_BYTES_MAX:
            problems.append("segment_bytes_max must fit in 31 bits (index positions are 32-bit)")
        if self.segment_ms_max < 1:
            problems.append("segment_ms_max must be >= 1")
        if self.index_interval_bytes < 0:
            problems.append("index_interval_bytes must be >= 0")
        if not BATCH_BYTES_MIN <= self.batch_bytes_max <= BATCH_BYTES_MAX:
            problems.append("batch_bytes_max must be between 61 bytes and 1 GiB")
        if self.retention_bytes < -1 or self.retention_ms < -1:
            problems.append("retention_bytes and retention_ms must be -1 (unlimited) or >= 0")
        if self.cleanup_policy not in CLEANUP_POLICIES:
            problems.append(f"cleanup_policy must be one of {', '.join(CLEANUP_POLICIES)}")
        if self.delete_retention_ms < 0:
            problems.append("delete_retention_ms must be >= 0")
        if not 0.0 <= self.min_cleanable_dirty_ratio <= 1.0:
            problems.append("min_cleanable_dirty_ratio must be between 0 and 1")
        if problems:
            raise InvalidRequestError("; ".join(problems), code=ErrorCode.INVALID_CONFIG)
