"""The web console with two coordinators on etcd: a standby serves it (its API calls go
to the active coordinator), and the same browser session keeps working when the active
one stops and the standby takes over. Real coordinators, broker, etcd and chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import conveyor
from conveyor.cli.etcd_local import LocalEtcd
from tests.console.harness import launch, open_tab
from tests.ha.harness import HaCluster

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch()


def test_a_standby_serves_the_console_across_a_failover(
    browser: Browser, shared_etcd: LocalEtcd, prefix: str, tmp_path: Path
) -> None:
    cluster = HaCluster(
        tmp_path, shared_etcd, prefix, coordinator_count=2, broker_count=1, console=True
    )
    tab = None
    try:
        cluster.start()
        active = cluster.wait_active()
        standby = 1 - active
        base = cluster.coordinators[standby].url
        active_url = cluster.coordinators[active].url
        tab = open_tab(browser)
        page = tab.page
        page.goto(f"{base}/console/")
        assert page.url == f"{base}/console/"  # served here, not redirected
        roles = page.inner_text("#coordinators")
        assert "standby" in roles and active_url in roles and "active" in roles
        # A change made on the standby's console is made by the active coordinator.
        page.goto(f"{base}/console/topics")
        page.click("summary:has-text('Create a topic')")
        page.fill("input[name=name]", "ha-orders")
        page.fill("input[name=replication_factor]", "1")
        page.click("button:has-text('Create topic')")
        page.wait_for_url(f"{base}/console/topics/ha-orders")
        with conveyor.Admin(cluster.urls) as admin:
            assert admin.describe_topic("ha-orders").partitions
        # The active coordinator stops; the standby takes over; the page goes on.
        cluster.coordinators[active].stop()
        assert cluster.wait_active(other_than=active) == standby
        page.goto(f"{base}/console/topics")
        assert "ha-orders" in page.inner_text("#topics-table")
        page.goto(f"{base}/console/")
        assert "active" in page.inner_text("#coordinators [data-role]")
        assert "standby" not in page.inner_text("#coordinators")
        tab.assert_no_errors()
    finally:
        if tab is not None:
            tab.close()
        cluster.stop()
