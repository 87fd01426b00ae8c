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
    SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN,
    FlushPolicy,
)

__all__ = ["DAY_MS", "MIB", "FlushPolicy", "LogConfig"]

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
        if problems:
            raise InvalidRequestError("; ".join(problems), code=ErrorCode.INVALID_CONFIG)
