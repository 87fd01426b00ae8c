"""Settings of one partition log: ``LogConfig`` and its ``FlushPolicy``.

Both are derived from a topic's config, which the coordinator validates and the brokers
parse with the same rules, so they are defined in ``conveyor.protocol.topics`` (the layer
both sides import); storage re-exports them as the settings it is opened with.
"""

from conveyor.protocol.topics import (
    CLEANUP_POLICIES,
    DAY_MS,
    MIB,
    CleanupPolicy,
    FlushPolicy,
    LogConfig,
)

__all__ = ["CLEANUP_POLICIES", "DAY_MS", "MIB", "CleanupPolicy", "FlushPolicy", "LogConfig"]
