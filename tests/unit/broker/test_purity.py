"""The broker's decision modules stay pure: no clocks, randomness, I/O or event loop."""

from __future__ import annotations

from pathlib import Path

import pytest

import conveyor.broker
from tests.purity import IO_MODULES, forbidden_imports

PURE = ["rules.py", "reconcile.py", "routing.py", "jsonrecords.py"]
# The broker core (docs/architecture.md): no I/O, no clock, and not even storage's types.
CORE = ["core.py", "corestate.py", "replica.py", "leader.py", "follower.py", "producers.py"]
FORBIDDEN = {
    *IO_MODULES,
    "conveyor.broker.service",
    "conveyor.broker.http",
}


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports(module: str) -> None:
    bad = forbidden_imports(Path(conveyor.broker.__file__).parent / module, FORBIDDEN)
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports(module: str) -> None:
    forbidden = {*FORBIDDEN, "conveyor.storage", "conveyor.broker.driver", "msgspec.json"}
    bad = forbidden_imports(Path(conveyor.broker.__file__).parent / module, forbidden)
    assert not bad, f"{module} imports {bad}"
