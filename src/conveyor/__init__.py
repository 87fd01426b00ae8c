"""Conveyor: a partitioned, replicated message queue."""

from conveyor._version import __version__

__all__ = ["__version__"]
