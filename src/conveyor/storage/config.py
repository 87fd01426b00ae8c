"""Settings of one partition log. Every limit is named here with its default.

``FlushPolicy`` is a topic setting both the coordinator and the brokers parse, so it lives
in ``conveyor.protocol.topics``; it is re-exported here as the type of ``LogConfig.flush``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.topics import (
    BATCH_BYTES_MAX,
    BATCH_BYTES_MIN,
    CLEANUP_POLICIES,
    SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN,
    CleanupPolicy,
    FlushPolicy,
)

__all__ = ["CLEANUP_POLICIES", "DAY_MS", "MIB", "CleanupPolicy", "FlushPolicy", "LogConfig"]

MIB = 1024 * 1024
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class LogConfig:
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
