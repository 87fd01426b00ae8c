from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conveyor.client.security import SecurityAdmin
from conveyor.transport.tls import TLSConfig
from tests.console.harness import launch
from tests.integration.cluster import Cluster

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SECRET = "console-test-cluster-secret-0123456789"
ADMIN_PASSWORD = "admin-password-1"
READER_PASSWORD = "reader-password-1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope, not session: Playwright's sync API keeps an event loop running in this
    # thread while it is open, which would break later tests that call asyncio.run().
    yield from launch()


@dataclass
class SecureCluster:
    """HTTPS with internal mutual TLS, auth on: users ``admin`` (admin on the cluster)
    and ``reader`` (describe and consume everything, nothing else)."""

    cluster: Cluster
    ca: Path

    @property
    def base(self) -> str:
        return self.cluster.url

    def tls(self) -> TLSConfig:
        return TLSConfig(cafile=str(self.ca))

    def security(self) -> SecurityAdmin:
        return SecurityAdmin(self.base, tls=self.tls(), token=SECRET)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    from conveyor.transport.certs import init_certs

    root = tmp_path_factory.mktemp("console")
    certs = init_certs(root / "certs")
    os.environ["CONVEYOR_CLUSTER_SECRET"] = SECRET
    cluster = Cluster(
        root,
        broker_count=1,
        coordinator_args=["--auth"],
        broker_args=["--auth"],
        tls_dir=certs.directory,
    )
    try:
        cluster.start()
        secure = SecureCluster(cluster, certs.ca)
        with secure.security() as security:
            security.add_user("admin", ADMIN_PASSWORD)
            security.add_acl("user:admin", "admin", "cluster", "cluster")
            security.add_user("reader", READER_PASSWORD)
            security.add_acl("user:reader", "describe", "cluster", "cluster")
            for kind in ("describe", "consume"):
                security.add_acl("user:reader", kind, "topic", "ui-", "prefix")  # type: ignore[arg-type]
            security.add_acl("user:reader", "describe", "group", "ui-", "prefix")
        yield secure
    finally:
        cluster.stop()
        del os.environ["CONVEYOR_CLUSTER_SECRET"]
