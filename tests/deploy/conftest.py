"""Fixtures of the container tests: podman ready to use (session) and the compose
deployment up (module), both removed afterwards except the cached base images."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from conveyor import __version__
from tests.deploy.compose import ComposeProject, admin_token, deployment_ca, running_project
from tests.deploy.http import HostView
from tests.deploy.podman import (
    BASE_IMAGE,
    REPO_ROOT,
    Podman,
    ensure_base_image,
    ensure_prometheus_image,
    install_tools,
    wait_for,
)

CLUSTER_SERVICES = ("coordinator", "broker-1", "broker-2", "broker-3", "prometheus")
ALL_SERVICES = ("init", *CLUSTER_SERVICES, "bootstrap", "demo-producer", "demo-consumer")


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
    with running_project(
        podman, conveyor_image, work_dir, "conveyortest", CLUSTER_SERVICES, logged=ALL_SERVICES
    ) as project:
        host = HostView(project.ports, deployment_ca(project, work_dir), admin_token(project))
        wait_for(lambda: host.alive_brokers() == {1, 2, 3}, 60, "3 brokers registered")
        yield Deployment(project, host)
