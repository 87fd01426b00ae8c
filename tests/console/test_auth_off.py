"""The console of a cluster with auth off (plain HTTP, as `conveyor dev` without --auth),
pointed at a real Prometheus whose rule fires: what the console allows then, and the
overview's list of firing alerts. One cluster, one Prometheus, one browser for the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import conveyor
from conveyor.cli.monitoring import prometheus_config
from tests.console.harness import Tab, csrf_of, open_tab
from tests.integration.cluster import Cluster, free_port, wait_for
from tests.monitoring.tools import Prometheus, require_binaries

pytestmark = pytest.mark.timeout(300)
ALERT = "ConsoleTestCoordinatorUp"
# A rule on what Prometheus scrapes from the real coordinator: it fires within seconds.
# Its summary carries markup, which the overview must show as text.
RULES = f"""groups:
  - name: console-test
    rules:
      - alert: {ALERT}
        expr: up{{job="conveyor-coordinator"}} == 1
        for: 1s
        labels:
          severity: warning
        annotations:
          summary: "the coordinator is up <b id=injected>bold</b>"
"""


@dataclass
class Open:
    cluster: Cluster
    prometheus: Prometheus

    @property
    def base(self) -> str:
        return self.cluster.url


@pytest.fixture(scope="module")
def open_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Open]:
    binary = require_binaries("prometheus")["prometheus"]
    root = tmp_path_factory.mktemp("console-open")
    prometheus_port = free_port()
    cluster = Cluster(
        root / "cluster",
        broker_count=1,
        coordinator_args=["--prometheus-url", f"http://127.0.0.1:{prometheus_port}"],
    )
    (root / "cluster").mkdir()
    prometheus: Prometheus | None = None
    try:
        cluster.start()
        assert cluster.coordinator is not None
        rules = root / "rules.yml"
        rules.write_text(RULES)
        config = prometheus_config(
            f"127.0.0.1:{cluster.coordinator.port}",
            {b: f"127.0.0.1:{s.port}" for b, s in cluster.brokers.items()},
            rule_files=[str(rules)],
            scrape_interval="1s",
        )
        prometheus = Prometheus(binary, root / "prometheus", config, port=prometheus_port).start()
        yield Open(cluster, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        cluster.stop()


@pytest.fixture
def tab(browser, open_cluster: Open) -> Iterator[Tab]:  # type: ignore[no-untyped-def]
    tab = open_tab(browser)
    yield tab
    tab.assert_no_errors()
    tab.close()


def test_the_overview_lists_the_alerts_firing_in_prometheus(tab: Tab, open_cluster: Open) -> None:
    prometheus, page = open_cluster.prometheus, tab.page
    wait_for(lambda: bool(prometheus.firing(ALERT)), 60, f"{ALERT} firing", 0.5)
    page.goto(f"{open_cluster.base}/console/")
    alerts = page.locator("ul.alerts li")
    assert alerts.count() == 1
    text = alerts.first.inner_text()
    assert ALERT in text and "warning" in text
    assert "the coordinator is up <b id=injected>bold</b>" in text  # markup shown as text
    assert page.locator("#injected").count() == 0
    # Prometheus stopped answering: the page says so instead of failing.
    prometheus.stop()
    page.goto(f"{open_cluster.base}/console/")
    assert "did not answer" in page.inner_text("main")


def test_with_auth_off_nobody_signs_in_and_csrf_still_applies(
    browser,  # type: ignore[no-untyped-def]
    tab: Tab,
    open_cluster: Open,
) -> None:
    page, base = tab.page, open_cluster.base
    page.goto(f"{base}/console/login")
    page.wait_for_url(f"{base}/console/")  # no sign-in page: straight to the overview
    assert "authentication is off" in page.inner_text("footer")
    header = page.inner_text("header")
    assert "Sign out" not in header and "Access" not in header
    cookie = next(c for c in tab.context.cookies() if c["name"] == "conveyor_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    # Everything the API allows: create a topic, edit it, produce to it.
    topic = "open-orders"
    page.goto(f"{base}/console/topics")
    page.click("summary:has-text('Create a topic')")
    page.fill("input[name=name]", topic)
    page.click("button:has-text('Create topic')")
    page.wait_for_url(f"{base}/console/topics/{topic}")
    assert page.locator("summary:has-text('Edit configs')").count() == 1
    assert page.locator("summary:has-text('Delete this topic')").count() == 1
    page.click("text=Produce")
    page.fill("textarea[name=value]", "hello")
    page.click("button:has-text('Send')")
    assert "offset" in page.inner_text("#produce-result")
    page.goto(f"{base}/console/access")
    assert "Authentication is off" in page.inner_text("main")
    # CSRF protection holds without auth: the anonymous session has its token.
    missing = page.request.post(f"{base}/console/topics", form={"name": "open-forged"})
    assert missing.status == 403 and "CSRF" in missing.text()
    fresh = open_tab(browser)  # no session at all (another site's form): refused
    try:
        blind = fresh.page.request.post(
            f"{base}/console/topics", form={"name": "open-forged", "csrf_token": csrf_of(page)}
        )
        assert blind.status == 403
    finally:
        fresh.close()
    with conveyor.Admin(base) as admin:
        assert "open-forged" not in [t.name for t in admin.list_topics()]
        assert admin.describe_topic(topic).partitions
