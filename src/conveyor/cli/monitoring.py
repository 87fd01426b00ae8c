"""The Prometheus side of ``conveyor dev --monitoring`` (and of tests/monitoring).

:func:`prometheus_config` renders the scrape configuration for a coordinator and its
brokers. ``deploy/prometheus/prometheus.yml`` is this function's output for the
docker-compose cluster (``coordinator:7700``, ``broker-N:770N``; a test keeps the two
identical), and ``conveyor dev --monitoring`` renders the same with 127.0.0.1 and the dev
cluster's ports: the shipped configuration, adapted.

Every broker target carries a ``broker`` label (its id): the dashboards' broker variable
and the alerts read it, and it matches the ``broker`` label of the coordinator's
per-broker metrics.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import conveyor

COORDINATOR_JOB: Final = "conveyor-coordinator"
BROKER_JOB: Final = "conveyor-broker"
DEFAULT_SCRAPE_INTERVAL: Final = "15s"
DEFAULT_PROMETHEUS_PORT: Final = 9090

_HEADER: Final = """\
# Prometheus configuration for a Conveyor cluster: the coordinator and every broker.
# Rendered by conveyor.cli.monitoring.prometheus_config for the docker-compose cluster
# (docker-compose.yml: coordinator:7700, broker-N:770N); `conveyor dev --monitoring` renders
# the same with 127.0.0.1 and its own ports. On other hosts, change the targets; keep the
# `broker` label on every broker target: the dashboards and alerts (alerts.yml) use it.
"""
SHIPPED_TARGETS: Final = ("coordinator:7700", {b: f"broker-{b}:{7700 + b}" for b in (1, 2, 3)})


def prometheus_config(
    coordinator: str,
    brokers: Mapping[int, str],
    rule_files: Sequence[str] = ("alerts.yml",),
    scrape_interval: str = DEFAULT_SCRAPE_INTERVAL,
    evaluation_interval: str | None = None,
    *,
    ca_file: str | None = None,
    token_file: str | None = None,
) -> str:
    """The YAML text of a Prometheus configuration; targets are ``HOST:PORT``. With
    ``ca_file`` the services are scraped over HTTPS, verified against that CA; with
    ``token_file`` Prometheus sends the scrape token it holds (``CONVEYOR_METRICS_TOKEN``
    on the services) as a bearer token."""
    https = (
        []
        if ca_file is None
        else ["    scheme: https", "    tls_config:", f"      ca_file: {_quote(ca_file)}"]
    )
    if token_file is not None:
        https += [
            "    authorization:",
            "      type: Bearer",
            f"      credentials_file: {_quote(token_file)}",
        ]
    lines = [
        _HEADER,
        "global:",
        f"  scrape_interval: {scrape_interval}",
        f"  evaluation_interval: {evaluation_interval or scrape_interval}",
        "",
        "rule_files:",
        *(f"  - {_quote(path)}" for path in rule_files),
        "",
        "scrape_configs:",
        f"  - job_name: {COORDINATOR_JOB}",
        "    metrics_path: /metrics",
        *https,
        "    static_configs:",
        f"      - targets: [{_quote(coordinator)}]",
        f"  - job_name: {BROKER_JOB}",
        "    metrics_path: /metrics",
        *https,
        "    static_configs:",
    ]
    for broker_id, target in sorted(brokers.items()):
        lines += [
            f"      - targets: [{_quote(target)}]",
            f'        labels: {{broker: "{broker_id}"}}',
        ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def deploy_dir() -> Path | None:
    """The repository's ``deploy/`` when running from a checkout, else None."""
    candidate = Path(conveyor.__file__).resolve().parents[2] / "deploy"
    return candidate if (candidate / "prometheus" / "alerts.yml").is_file() else None


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def start_prometheus(
    binary: str, config_path: Path, data_dir: Path, listen: str, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start Prometheus on ``listen`` (``HOST:PORT``) with its TSDB in ``data_dir``; its
    output goes to ``log_path``. The caller stops it (SIGTERM)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address={listen}",
                "--storage.tsdb.retention.time=2d",
                "--web.enable-lifecycle",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def start_for_dev(
    data: Path, port: int, brokers: int, prometheus_port: int, ca: Path | None = None
) -> subprocess.Popen[bytes] | None:
    """``conveyor dev --monitoring``: Prometheus scraping the dev cluster (coordinator on
    ``port``, broker N on ``port + N``; over HTTPS verified against ``ca`` with ``--tls``)
    every 5 s with the shipped alerts, or a message saying why not. Returns the process to
    stop, or None."""
    from conveyor.cli.output import print_line

    binary = prometheus_binary()
    if binary is None:
        print_line(
            "[yellow]--monitoring: no `prometheus` on PATH, so no Prometheus is started "
            "(Debian: apt-get install prometheus, or scripts/system-deps/20-prometheus.sh)"
            "[/yellow]"
        )
        return None
    root = (data / "prometheus").resolve()
    root.mkdir(parents=True, exist_ok=True)
    deploy = deploy_dir()
    rules = [] if deploy is None else [str(deploy / "prometheus" / "alerts.yml")]
    config = prometheus_config(
        f"127.0.0.1:{port}",
        {b: f"127.0.0.1:{port + b}" for b in range(1, brokers + 1)},
        rule_files=rules,
        scrape_interval="5s",
        ca_file=None if ca is None else str(ca.resolve()),
    )
    config_path = root / "prometheus.yml"
    config_path.write_text(config)
    listen = f"127.0.0.1:{prometheus_port}"
    process = start_prometheus(binary, config_path, root / "tsdb", listen, root / "prometheus.log")
    alerts = "with the shipped alerts" if rules else "without alerts (deploy/ not found)"
    print_line(
        f"Prometheus: http://{listen} (scraping every 5 s {alerts}; config {config_path}, "
        f"log {root / 'prometheus.log'})"
    )
    return process


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
