"""Fixtures of the container tests: podman ready to use (session) and the compose
deployment up (module), both removed afterwards except the cached base images."""

from __future__ import annotations

import os
import re
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor import __version__
from tests.deploy.compose import ComposeProject, Ports, dump_logs
from tests.deploy.http import HostView
from tests.deploy.podman import (
    BASE_IMAGE,
    PROMETHEUS_IMAGE,
    REPO_ROOT,
    HealthDriver,
    Podman,
    api_service,
    ensure_base_image,
    ensure_prometheus_image,
    install_tools,
    wait_for,
)

CLUSTER_SERVICES = ("coordinator", "broker-1", "broker-2", "broker-3", "prometheus")
ALL_SERVICES = ("init", *CLUSTER_SERVICES, "bootstrap", "demo-producer", "demo-consumer")
ADMIN_PRINCIPAL = "deploy-test-admin"
HEALTHY_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """Podman with the tools installed and the base image present (built once, kept)."""
    skip_reason = install_tools()
    if skip_reason is not None:
        pytest.skip(skip_reason)
    engine = Podman.create(tmp_path_factory.mktemp("podman"))
    ensure_base_image(engine)
    return engine


@pytest.fixture(scope="session")
def conveyor_image(podman: Podman) -> Iterator[str]:
    """The repository's Dockerfile built on the local base; removed after the session."""
    tag = f"localhost/conveyor-test:{uuid.uuid4().hex[:12]}"
    podman.build(
        tag, REPO_ROOT, REPO_ROOT / "Dockerfile", BASE_IMAGE=BASE_IMAGE, VERSION=__version__
    )
    try:
        yield tag
    finally:
        podman.run("rmi", "--force", tag, check=False)


@dataclass(frozen=True)
class Deployment:
    project: ComposeProject
    host: HostView


@pytest.fixture(scope="module")
def deployment(
    podman: Podman, conveyor_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """docker-compose.yml up through podman: coordinator, three brokers and Prometheus
    (Grafana is not started: its image cannot be built here). Torn down with its volumes
    and network at the end; the service logs are kept in the temp dir for failures."""
    ensure_prometheus_image(podman)
    work_dir = tmp_path_factory.mktemp("compose")
    name = f"conveyortest{os.getpid()}{uuid.uuid4().hex[:6]}"
    ports = Ports()
    with api_service(podman, work_dir / "podman.sock") as docker_host:
        project = ComposeProject(podman, docker_host, name, conveyor_image, PROMETHEUS_IMAGE, ports)
        try:
            with HealthDriver(podman, name):
                project.up(*CLUSTER_SERVICES)
                project.wait_healthy(CLUSTER_SERVICES, HEALTHY_TIMEOUT_S)
                host = HostView(ports, _deployment_ca(project, work_dir), _admin_token(project))
                wait_for(lambda: host.alive_brokers() == {1, 2, 3}, 60, "3 brokers registered")
                yield Deployment(project, host)
        finally:
            dump_logs(project, ALL_SERVICES, work_dir / "services.log")
            print(f"service logs of {name}: {work_dir / 'services.log'}")  # shown on failure
            try:
                project.down()
            finally:
                leftovers = project.leftovers()
                project.remove_leftovers()
            assert not any(leftovers.values()), f"docker-compose down left {leftovers}"


def _deployment_ca(project: ComposeProject, work_dir: Path) -> ssl.SSLContext:
    """A TLS context trusting the CA the init service put in the secrets volume."""
    ca_path = work_dir / "ca.pem"
    project.podman.run("cp", f"{project.container('coordinator')}:/secrets/ca.pem", str(ca_path))
    return ssl.create_default_context(cafile=str(ca_path))


def _admin_token(project: ComposeProject) -> str:
    """An admin token made with the cluster secret, as docs/deployment.md shows: the
    coordinator's container speaks as the cluster (CONVEYOR_CLUSTER_SECRET_FILE)."""
    exec_conveyor = ("exec", "-T", "coordinator", "conveyor")
    project.compose(*exec_conveyor, "acl", "add", ADMIN_PRINCIPAL, "admin", "--cluster")
    output = project.compose(*exec_conveyor, "token", "create", ADMIN_PRINCIPAL)
    match = re.search(r"^cvt_\S+$", output, re.MULTILINE)
    assert match is not None, f"no token in {output!r}"
    return match.group(0)
