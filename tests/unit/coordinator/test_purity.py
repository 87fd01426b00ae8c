"""The decision modules stay pure: no clock, randomness, OS, threads, network or database.

Walks each module's own import statements (not what its imports import): a decision that
needs one of these belongs in the shell (service.py), which passes the result in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import conveyor.coordinator

PURE_MODULES = [
    "placement",
    "election",
    "model",
    "state",
    "views",
    "validation",
    "replication",
    "control",
    "groups",
]
FORBIDDEN = {
    "asyncio",
    "time",
    "random",
    "os",
    "sqlite3",
    "socket",
    "threading",
    "subprocess",
    "datetime",
    "uuid",
    "logging",
    "http",
    "urllib",
    "urllib3",
    "aiohttp",
    "httpx",
    "conveyor.transport",
    "conveyor.coordinator.store",
    "conveyor.coordinator.service",
    "conveyor.coordinator.http",
}
PACKAGE_DIR = Path(conveyor.coordinator.__file__).parent


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", PURE_MODULES)
def test_decision_modules_import_no_io(module: str) -> None:
    names = imported_names(PACKAGE_DIR / f"{module}.py")
    bad = {n for n in names for f in FORBIDDEN if n == f or n.startswith(f + ".")}
    assert not bad, f"{module}.py imports {sorted(bad)}"


def test_storage_is_used_only_for_its_config_rules() -> None:
    for module in PURE_MODULES:
        names = imported_names(PACKAGE_DIR / f"{module}.py")
        storage = {n for n in names if n.startswith("conveyor.storage")}
        assert storage <= {
            "conveyor.storage.config",
            "conveyor.storage.config.FlushPolicy",
            "conveyor.storage.config.LogConfig",
        }
