"""The broker's decision modules stay pure: no clocks, randomness, I/O or event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import conveyor.broker

PURE = ["rules.py", "reconcile.py", "routing.py", "jsonrecords.py"]
FORBIDDEN = {"asyncio", "time", "random", "os", "socket", "aiohttp", "urllib3", "threading"}
FORBIDDEN_PREFIXES = ("conveyor.transport", "conveyor.broker.service", "conveyor.broker.http")


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports(module: str) -> None:
    path = Path(conveyor.broker.__file__).parent / module
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{module} imports {name}"
            assert not name.startswith(FORBIDDEN_PREFIXES), f"{module} imports {name}"
