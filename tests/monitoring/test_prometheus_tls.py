"""A real Prometheus scraping a cluster that serves only HTTPS (``conveyor dev --tls
--monitoring`` renders the same configuration): the services' certificates verified
against the cluster's CA, every target up."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.cli.monitoring import prometheus_config
from conveyor.transport.certs import init_certs
from tests.integration.cluster import Cluster
from tests.monitoring.tools import Prometheus, require_binaries
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


def test_prometheus_scrapes_an_https_cluster_verified_against_its_ca(tmp_path: Path) -> None:
    binary = require_binaries("prometheus")["prometheus"]
    certs = init_certs(tmp_path / "certs")
    cluster = Cluster(tmp_path / "cluster", broker_count=2, tls_dir=certs.directory)
    prometheus: Prometheus | None = None
    try:
        cluster.start()
        assert cluster.coordinator is not None
        assert cluster.url.startswith("https://")
        targets = {b: f"127.0.0.1:{s.port}" for b, s in cluster.brokers.items()}
        coordinator = f"127.0.0.1:{cluster.coordinator.port}"
        config = prometheus_config(
            coordinator, targets, rule_files=[], scrape_interval="1s", ca_file=str(certs.ca)
        )
        assert "scheme: https" in config
        prometheus = Prometheus(binary, tmp_path / "prometheus", config).start()
        wait_for(lambda: len(prometheus.query("up == 1")) == 3, 30, "3 HTTPS targets up")
        scraped = prometheus.query("conveyor_coordinator_brokers_alive")
        assert scraped and float(scraped[0]["value"][1]) == 2
    finally:
        if prometheus is not None:
            prometheus.stop()
        cluster.stop()
