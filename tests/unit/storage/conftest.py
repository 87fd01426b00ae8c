from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.storage import PartitionLog
from tests.unit.storage.helpers import LogFactory, ManualClock, open_log


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_log(tmp_path: Path, clock: ManualClock) -> Iterator[LogFactory]:
    """Open a PartitionLog in ``tmp_path/log`` (config as keyword arguments, manual clock);
    every log opened through it is closed at the end of the test."""
    opened: list[PartitionLog] = []

    def factory(directory: Path | None = None, **kwargs: object) -> PartitionLog:
        kwargs.setdefault("clock", clock)
        log = open_log(directory or tmp_path / "log", **kwargs)  # type: ignore[arg-type]
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close()
