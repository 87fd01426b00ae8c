from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """One coordinator and one broker, real processes on free ports."""
    c = Cluster(tmp_path, broker_count=1).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    """One coordinator and three brokers."""
    c = Cluster(tmp_path, broker_count=3).start()
    try:
        yield c
    finally:
        c.stop()
