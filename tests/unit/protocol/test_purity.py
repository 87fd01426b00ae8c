"""Rules shared by every service and the clients stay pure (STYLE.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

import conveyor.protocol
from tests.purity import forbidden_imports

PURE = ["backoff", "topics", "partitioner", "errors", "messages", "replica", "fetchframe"]


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    path = Path(conveyor.protocol.__file__).parent / f"{module}.py"
    assert not forbidden_imports(path), f"{module} imports I/O: {forbidden_imports(path)}"
