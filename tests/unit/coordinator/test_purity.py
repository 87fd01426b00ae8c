"""The decision modules stay pure: no clock, randomness, OS, threads, network or database
(``tests/purity.py`` walks their imports); a decision that needs one of these belongs in
the shell (service.py), which passes the result in."""

from __future__ import annotations

from pathlib import Path

import pytest

import conveyor.coordinator
from tests.purity import IO_MODULES, forbidden_imports, imported_names

PURE_MODULES = [
    "placement",
    "election",
    "model",
    "state",
    "views",
    "validation",
    "reassignment",
    "control",
    "groups",
    "classic",
    "classic_model",
    "lease",
    "records_codec",
    "transactions",
    "txn_model",
]
FORBIDDEN = {
    *IO_MODULES,
    "logging",
    "conveyor.coordinator.store",
    "conveyor.coordinator.service",
    "conveyor.coordinator.http",
}
PACKAGE_DIR = Path(conveyor.coordinator.__file__).parent


@pytest.mark.parametrize("module", PURE_MODULES)
def test_decision_modules_import_no_io(module: str) -> None:
    bad = forbidden_imports(PACKAGE_DIR / f"{module}.py", FORBIDDEN)
    assert not bad, f"{module}.py imports {bad}"


def test_storage_is_not_imported() -> None:
    """Topic settings rules (the flush policy, the log limits) come from protocol/topics.py."""
    for module in PURE_MODULES:
        names = imported_names(PACKAGE_DIR / f"{module}.py")
        storage = {n for n in names if n.startswith("conveyor.storage")}
        assert not storage, f"{module}.py imports {sorted(storage)}"
