"""Settings of one partition log. Every limit is named here with its default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from conveyor.protocol.errors import ErrorCode, InvalidRequestError

FlushMode = Literal["always", "interval", "never"]

MIB = 1024 * 1024
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When appended bytes are fsynced.

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
    segment_bytes_max: int = 128 * MIB
    segment_ms_max: int = 7 * DAY_MS
    index_interval_bytes: int = 4096
    batch_bytes_max: int = 1 * MIB
    retention_bytes: int = -1  # -1: no size limit
    retention_ms: int = 7 * DAY_MS  # -1: keep forever
    flush: FlushPolicy = field(default_factory=FlushPolicy)

    def __post_init__(self) -> None:
        problems = []
        if self.segment_bytes_max < 1024:
            problems.append("segment_bytes_max must be >= 1024")
        if self.segment_bytes_max > 2**31 - 1:
            problems.append("segment_bytes_max must fit in 31 bits (index positions are 32-bit)")
        if self.segment_ms_max < 1:
            problems.append("segment_ms_max must be >= 1")
        if self.index_interval_bytes < 0:
            problems.append("index_interval_bytes must be >= 0")
        if not 61 <= self.batch_bytes_max <= 2**30:
            problems.append("batch_bytes_max must be between 61 bytes and 1 GiB")
        if self.retention_bytes < -1 or self.retention_ms < -1:
            problems.append("retention_bytes and retention_ms must be -1 (unlimited) or >= 0")
        if problems:
            raise InvalidRequestError("; ".join(problems), code=ErrorCode.INVALID_CONFIG)
