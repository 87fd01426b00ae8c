"""The shipped Prometheus files pass Prometheus's own checker and unit tests, and the
shipped prometheus.yml is the template `conveyor dev --monitoring` adapts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conveyor.cli.monitoring import SHIPPED_TARGETS, prometheus_config
from tests.monitoring.tools import PROMETHEUS_DIR, require_binaries


def _promtool(*args: str) -> str:
    promtool = require_binaries("promtool")["promtool"]
    result = subprocess.run(
        [promtool, *args], check=False, capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_check_config() -> None:
    # also checks the rule files the config names (alerts.yml)
    output = _promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert "1 rule files found" in output


def test_check_rules() -> None:
    output = _promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert "SUCCESS" in output


def test_alert_unit_tests() -> None:
    """tests/monitoring/alerts_test.yml: each alert fires on the right series, after its
    `for`, with the annotations rendered."""
    _promtool("test", "rules", str(Path(__file__).with_name("alerts_test.yml")))


def test_shipped_config_is_the_rendering_dev_adapts() -> None:
    """`conveyor dev --monitoring` and the tests render the same template with their own
    targets; the shipped file is its rendering for docker-compose's service names."""
    coordinator, brokers = SHIPPED_TARGETS
    rendered = prometheus_config(coordinator, brokers)
    assert (PROMETHEUS_DIR / "prometheus.yml").read_text() == rendered
