"""Fixtures of the high-availability tests: one real 3-member etcd cluster per session
(members on free ports under a temporary directory), shared by every test that does not
harm it; each test works under its own key prefix. Tests that kill or pause members start
a cluster of their own (``own_etcd``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.cli.etcd_local import LocalEtcd, etcd_available

_prefixes = itertools.count()


def require_etcd() -> None:
    reason = etcd_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    require_etcd()
    cluster = LocalEtcd(tmp_path_factory.mktemp("etcd"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test uses."""
    return f"/test/{request.node.name[:40]}-{next(_prefixes)}"


def own_etcd(root: Path, count: int = 3) -> LocalEtcd:
    require_etcd()
    cluster = LocalEtcd(root, count)
    cluster.start()
    return cluster
