"""Suite-wide configuration: which tests share a machine-wide resource.

``make test`` runs the suite on several pytest-xdist workers (``--dist loadgroup``). Tests
that use one resource of the whole machine are put in one group each, so they run one
after the other on a single worker while the others go on in parallel:

- ``nftables``: the chaos suite's network faults (one nftables table and the loopback
  addresses 127.0.0.10 and up, docs/reliability.md);
- ``containers``: the podman image builds and the compose deployment (tests/deploy).

Everything else takes free ports and its own temporary directories, and runs by module:
a module's tests share its module-scoped fixtures (one cluster per module, not one per
worker) and some build on what an earlier test of their module left (a topic), so each
module is a group of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis' per-example deadline (200 ms) and its too-slow health check time the test
# process: on a loaded CI machine they fail pure property tests that are correct
# (test_retries_never_duplicate_or_reorder at load 30). Speed is measured by benchmarks,
# not by tests, so neither applies here; a property test that needs a bound says so itself.
settings.register_profile("conveyor", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("conveyor")

_GROUPS: Final = {"chaos": "nftables", "deploy": "containers"}
_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            top = item.path.relative_to(_TESTS).parts[0]
        except ValueError:
            continue
        group = _GROUPS.get(top) or item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
