"""The broker's decision modules stay pure: no clocks, randomness, I/O or event loop."""

from __future__ import annotations

from pathlib import Path

import pytest

import conveyor.broker
from tests.purity import IO_MODULES, forbidden_imports

PURE = ["rules.py", "reconcile.py", "routing.py", "jsonrecords.py"]
FORBIDDEN = {
    *IO_MODULES,
    "conveyor.broker.service",
    "conveyor.broker.http",
}


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports(module: str) -> None:
    bad = forbidden_imports(Path(conveyor.broker.__file__).parent / module, FORBIDDEN)
    assert not bad, f"{module} imports {bad}"
