"""The partition log: segmented, checksummed, append-only files. No network, no asyncio.

See docs/storage-format.md for the bytes on disk.
"""

from conveyor.storage.config import FlushPolicy, LogConfig
from conveyor.storage.flusher import Flusher
from conveyor.storage.log import AppendResult, FileRange, PartitionLog
from conveyor.storage.retention import SegmentInfo, segments_to_delete
from conveyor.storage.segment import RecoveryResult

__all__ = [
    "AppendResult",
    "FileRange",
    "FlushPolicy",
    "Flusher",
    "LogConfig",
    "PartitionLog",
    "RecoveryResult",
    "SegmentInfo",
    "segments_to_delete",
]
