"""The client's decision modules stay pure (STYLE.md): no I/O, clock or event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import conveyor.client

PURE = ["accumulator", "partitioner", "fetch_buffer", "backoff", "types"]
FORBIDDEN = {"asyncio", "time", "random", "os", "socket", "aiohttp", "urllib3", "requests"}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    path = Path(conveyor.client.__file__).parent / f"{module}.py"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{module} imports {name}"
            assert not name.startswith("conveyor.transport"), f"{module} imports {name}"
