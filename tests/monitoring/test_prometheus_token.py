"""``/metrics`` behind a scrape token (CONVEYOR_METRICS_TOKEN): refused without it, and a
real Prometheus configured as docs/monitoring.md shows (``authorization`` with a
``credentials_file``) scrapes every service."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conveyor.cli.monitoring import prometheus_config
from tests.integration.cluster import Cluster
from tests.monitoring.tools import Prometheus, require_binaries
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
TOKEN = "scrape-token-for-tests-0123456789"


def status_of(url: str, token: str | None) -> int:
    request = urllib.request.Request(url + "/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_prometheus_scrapes_with_the_token_and_nobody_else_can(tmp_path: Path) -> None:
    binary = require_binaries("prometheus")["prometheus"]
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN + "\n")
    env = {"CONVEYOR_METRICS_TOKEN_FILE": str(token_file)}  # as a mounted secret
    cluster = Cluster(tmp_path / "cluster", broker_count=1, env=env).start()
    prometheus: Prometheus | None = None
    try:
        for url in (cluster.url, cluster.brokers[1].url):
            assert status_of(url, None) == 401
            assert status_of(url, "wrong-token") == 401
            assert status_of(url, TOKEN) == 200
        assert cluster.coordinator is not None
        config = prometheus_config(
            f"127.0.0.1:{cluster.coordinator.port}",
            {1: f"127.0.0.1:{cluster.brokers[1].port}"},
            rule_files=[],
            scrape_interval="1s",
            ca_file=None if cluster.ca is None else str(cluster.ca),
            token_file=str(token_file),
        )
        assert "credentials_file" in config
        prometheus = Prometheus(binary, tmp_path / "prometheus", config).start()
        wait_for(lambda: len(prometheus.query("up == 1")) == 2, 30, "both targets up")
        assert prometheus.query("conveyor_coordinator_brokers_alive")
    finally:
        if prometheus is not None:
            prometheus.stop()
        cluster.stop()
