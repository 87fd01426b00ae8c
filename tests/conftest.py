"""Suite-wide configuration: which tests share a machine-wide resource.

``make test`` runs the suite on several pytest-xdist workers (``--dist loadgroup``). Tests
that use one resource of the whole machine are put in one group each, so they run one
after the other on a single worker while the others go on in parallel:

- ``nftables``: the chaos suite's network faults (one nftables table and the loopback
  addresses 127.0.0.10 and up, docs/reliability.md);
- ``containers``: the podman image builds and the compose deployment (tests/deploy).

These two groups are also the longest (4-6 minutes each, one test at a time), so they are
collected first (``pytest_collection_modifyitems``) and start at once on two workers while
the others share the rest; the many short unit modules, collected last, fill the end of
the run. ``make test`` runs every suite in one session beside the HTTPS pass
(docs/testing.md, "Budget").

Everything else takes free ports and its own temporary directories, and runs by module:
a module's tests share its module-scoped fixtures (one cluster per module, not one per
worker) and some build on what an earlier test of their module left (a topic), so each
module is a group of its own.

The groups are given to xdist's scheduler directly (``pytest_xdist_make_scheduler``), not as
``xdist_group`` markers: pytest-xdist 3.8 turns those markers into a ``@group`` suffix of
the node id, which pytest 9.2's structured node ids ignore (pytest-xdist issue 1386), and
every module's tests were then spread over every worker, each setting up the module's
cluster (and the compose deployment) again.
"""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis' per-example deadline (200 ms) and its too-slow health check time the test
# process: on a loaded CI machine they fail pure property tests that are correct
# (test_retries_never_duplicate_or_reorder at load 30). Speed is measured by benchmarks,
# not by tests, so neither applies here; a property test that needs a bound says so itself.
settings.register_profile("conveyor", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("conveyor")

# The console's tests share the containers' group (one worker, one after the other):
# Chromium aborts a page load or a download in flight with ERR_NETWORK_CHANGED when the
# host's links change, and podman adds and removes a veth per container (two make test
# runs on 2026-12-03 failed a console test that way, early, while compose started).
_GROUPS: Final = {"deploy": "containers", "chaos": "nftables", "console": "containers"}


def xdist_group(nodeid: str) -> str:
    """The group of a test (by its node id, relative to the repository): its directory's
    machine-wide resource, else its module."""
    module = nodeid.split("::", 1)[0]
    parts = module.split("/")
    top = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
    return _GROUPS.get(top) or module


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The machine-wide groups first, in their order in ``_GROUPS``; everything else keeps
    its collection order (a stable sort: a module's tests stay together and in order)."""
    first = list(_GROUPS.values())

    def rank(item: pytest.Item) -> int:
        group = xdist_group(item.nodeid)
        return first.index(group) if group in first else len(first)

    items.sort(key=rank)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup``: whole groups to a worker, in collection order."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    # in collection order, not largest group first: xdist's reorder left the long
    # one-test modules (test_readme, test_dev, tests/crash) to the end of the pass
    config.option.loadscopereorder = False

    class ByGroup(LoadScopeScheduling):  # type: ignore[misc]  # xdist: untyped here
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return ByGroup(config, log)
