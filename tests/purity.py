"""The one import walker behind every purity test (STYLE.md: decisions do no I/O).

Walks a module's own import statements (not what its imports import): a decision that
needs a clock, randomness, the OS, threads or the network belongs in a shell, which passes
the result in."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Final

# What no decision module may import, in any package.
IO_MODULES: Final = frozenset(
    {
        "asyncio",
        "time",
        "random",
        "os",
        "socket",
        "threading",
        "subprocess",
        "sqlite3",
        "datetime",
        "uuid",
        "http",
        "urllib",
        "urllib3",
        "aiohttp",
        "httpx",
        "requests",
        "conveyor.transport",
    }
)


def imported_names(path: Path) -> set[str]:
    """Every module a file imports, and each ``module.name`` it imports from one."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden_imports(path: Path, forbidden: Iterable[str] = IO_MODULES) -> list[str]:
    """The imports of ``path`` that are, or are inside, one of ``forbidden``."""
    names = imported_names(path)
    return sorted({n for n in names for f in forbidden if n == f or n.startswith(f + ".")})
