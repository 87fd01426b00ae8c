"""The storage benchmark's defaults, apart from the benchmark itself: ``conveyor``'s
argument parser shows them, and importing ``bench/storage.py`` (the whole storage engine)
for that would cost every ``conveyor`` command about 0.3 s of CPU at start-up."""

from __future__ import annotations

from typing import Final

MIB: Final = 1024 * 1024

DEFAULT_SIZE_MIB: Final = 1024
DEFAULT_RECORD_BYTES: Final = 100
DEFAULT_RECORDS_PER_BATCH: Final = 1000
DEFAULT_PIPELINE_DEPTH: Final = 8  # appends awaiting durability at once, like a broker
# The log and its baselines take turns this many times, so that a change in the disk's
# speed during the run (other tenants, background writeback) affects all of them alike.
DEFAULT_ROUNDS: Final = 9  # a multiple of 3: each writer goes first equally often
