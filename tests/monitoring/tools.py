"""Test helpers: find (or install) Prometheus and the Grafana schema, run Prometheus, ask
its HTTP API. The installs are the idempotent scripts ``make test`` runs anyway
(scripts/system-deps/); a test that still lacks its tool skips with their reason."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.cli.monitoring import start_prometheus
from tests.integration.cluster import free_port, http_ok
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"
SCHEMA_CHECK_DIR = DEPLOY / "grafana" / "schema-check"
SYSTEM_DEPS = ROOT / "scripts" / "system-deps"
DATASOURCE_UID = "conveyor-prometheus"


def _run_install(script: str) -> str:
    result = subprocess.run(
        ["bash", str(SYSTEM_DEPS / script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return (result.stdout + result.stderr).strip()


def require_binaries(*names: str) -> dict[str, str]:
    """Paths of ``names`` (prometheus, promtool), installing them once if missing."""
    found = {name: shutil.which(name) for name in names}
    if not all(found.values()):
        said = _run_install("20-prometheus.sh")
        found = {name: shutil.which(name) for name in names}
        if not all(found.values()):
            missing = [n for n, p in found.items() if p is None]
            pytest.skip(
                f"{missing} not available: {said or 'install the Debian package prometheus'}"
            )
    return {name: path for name, path in found.items() if path is not None}


def require_tsc() -> tuple[str, Path]:
    """(node, tsc script) from deploy/grafana/schema-check, npm-installing it once."""
    tsc = SCHEMA_CHECK_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    schema = SCHEMA_CHECK_DIR / "node_modules" / "@grafana" / "schema"
    said = ""
    if not (tsc.is_file() and schema.is_dir()):
        said = _run_install("30-grafana-schema.sh")
    node = shutil.which("node")
    if node is None or not tsc.is_file() or not schema.is_dir():
        pytest.skip(f"@grafana/schema + typescript not installed: {said or 'no node/npm'}")
    return node, tsc


def shorten_for(rules_text: str, duration: str) -> str:
    """The rules with every ``for:`` set to ``duration``: the test copy that lets alerts
    fire within seconds. Expressions stay exactly as shipped."""
    return re.sub(r"(?m)^(\s*)for: \S+$", rf"\g<1>for: {duration}", rules_text)


def parse_duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    assert match, text
    return int(match.group(1)) * units[match.group(2)]


@dataclass
class Prometheus:
    """A real Prometheus server on a free 127.0.0.1 port."""

    binary: str
    root: Path
    config_text: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "prometheus.log"

    def start(self) -> Prometheus:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "prometheus.yml"
        config.write_text(self.config_text)
        self.process = start_prometheus(
            self.binary, config, self.root / "tsdb", f"127.0.0.1:{self.port}", self.log_path
        )
        try:
            wait_for(lambda: http_ok(self.url + "/-/ready"), 30, "prometheus ready", 0.1)
        except TimeoutError:
            raise TimeoutError(f"prometheus not ready; its log:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data`` or raises with Prometheus's error."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result = data["result"]
        return result if data["resultType"] in ("vector", "matrix") else [result]

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self.api(f"label/{label}/values", **{"match[]": match}))

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def firing(self, alert: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.api("alerts")["alerts"]
            if a["labels"].get("alertname") == alert and a["state"] == "firing"
        ]


class PromQLError(Exception):
    pass
