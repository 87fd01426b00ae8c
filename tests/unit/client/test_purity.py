"""The client's decision modules stay pure (STYLE.md): no I/O, clock or event loop."""

from __future__ import annotations

from pathlib import Path

import pytest

import conveyor.client
from tests.purity import forbidden_imports

PURE = [
    "accumulator",
    "inflight",
    "partitioner",
    "fetch_buffer",
    "fetch_plan",
    "types",
    "admin_ops",
]
# Threads are allowed: the sync client's accumulator and buffer take a caller's lock.
FORBIDDEN = {"asyncio", "time", "random", "os", "socket", "aiohttp", "urllib3", "requests"}
FORBIDDEN |= {"conveyor.transport"}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    path = Path(conveyor.client.__file__).parent / f"{module}.py"
    bad = forbidden_imports(path, FORBIDDEN)
    assert not bad, f"{module} imports {bad}"
