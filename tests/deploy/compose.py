"""The repository's docker-compose.yml, run by Debian's docker-compose (v1) against
podman's Docker-compatible API, as one uniquely named project that is removed whole."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.podman import (
    PROMETHEUS_IMAGE,
    REPO_ROOT,
    HealthDriver,
    Podman,
    api_service,
    wait_for,
)
from tests.integration.cluster import free_port

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
HA_ENV_FILE = REPO_ROOT / "deploy" / "compose" / "ha.env"  # the `ha` profile's variables
BROKER_IDS = (1, 2, 3)
UP_TIMEOUT_S = 300.0
DOWN_TIMEOUT_S = 180.0
HEALTHY_TIMEOUT_S = 120.0
ADMIN_PRINCIPAL = "deploy-test-admin"


def ha_env() -> dict[str, str]:
    """The CONVEYOR_* variables of deploy/compose/ha.env (docs/deployment.md's --env-file)."""
    lines = HA_ENV_FILE.read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs if name.startswith("CONVEYOR_")}


@dataclass(frozen=True)
class Ports:
    """Host ports the project publishes on 127.0.0.1 (free ones: other tests run too)."""

    coordinator: int = field(default_factory=free_port)
    prometheus: int = field(default_factory=free_port)
    brokers: dict[int, int] = field(
        default_factory=lambda: {broker_id: free_port() for broker_id in BROKER_IDS}
    )
    kafka: dict[int, int] = field(
        default_factory=lambda: {broker_id: free_port() for broker_id in BROKER_IDS}
    )
    # the `ha` profile's coordinator-2 and coordinator-3
    standbys: dict[int, int] = field(default_factory=lambda: {2: free_port(), 3: free_port()})

    def env(self) -> dict[str, str]:
        env = {
            "CONVEYOR_PUBLISH_ADDRESS": "127.0.0.1",
            "CONVEYOR_PUBLISH_COORDINATOR": str(self.coordinator),
            "CONVEYOR_PUBLISH_PROMETHEUS": str(self.prometheus),
        }
        for number, port in self.standbys.items():
            env[f"CONVEYOR_PUBLISH_COORDINATOR_{number}"] = str(port)
        for broker_id, port in self.brokers.items():
            env[f"CONVEYOR_PUBLISH_BROKER_{broker_id}"] = str(port)
        for broker_id, port in self.kafka.items():  # 9092.. by default: maybe taken here
            env[f"CONVEYOR_PUBLISH_BROKER_{broker_id}_KAFKA"] = str(port)
        return env


@dataclass
class ComposeProject:
    podman: Podman
    docker_host: str
    name: str
    image: str
    prometheus_image: str
    ports: Ports
    # Files layered over docker-compose.yml (deploy/compose/plain-http.yml), and the
    # variables they need (CONVEYOR_SCHEME=http).
    overrides: tuple[Path, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)  # the `ha` profile's, say

    def compose(self, *args: str, timeout_s: float = UP_TIMEOUT_S) -> str:
        env = self.podman.env(
            {
                "DOCKER_HOST": self.docker_host,
                "CONVEYOR_IMAGE": self.image,
                "CONVEYOR_PROMETHEUS_IMAGE": self.prometheus_image,
                **self.ports.env(),
                **self.extra_env,
            }
        )
        files = [arg for path in (COMPOSE_FILE, *self.overrides) for arg in ("-f", str(path))]
        argv = ["docker-compose", *files, "--project-directory", str(REPO_ROOT)]
        result = subprocess.run(
            [*argv, "-p", self.name, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"docker-compose {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout + result.stderr

    def up(self, *services: str, profiles: tuple[str, ...] = ()) -> None:
        """``up -d`` the named services (and their dependencies) from the existing image.
        docker-compose itself waits for each ``service_healthy`` dependency."""
        options = [arg for profile in profiles for arg in ("--profile", profile)]
        self.compose(*options, "up", "-d", "--no-build", *services)

    def down(self) -> None:
        profiles = ("--profile", "demo", "--profile", "ha")
        self.compose(*profiles, "down", "--volumes", "--remove-orphans")

    def container(self, service: str) -> str:
        names = self.podman.run(
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={self.name}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}",
        ).stdout.split()
        if len(names) != 1:
            raise RuntimeError(f"expected one container for {service}, found {names}")
        return names[0]

    def health(self, service: str) -> str:
        return self.podman.inspect(self.container(service), "{{.State.Health.Status}}")

    def wait_healthy(self, services: tuple[str, ...], timeout_s: float) -> None:
        wait_for(
            lambda: all(self.health(service) == "healthy" for service in services),
            timeout_s,
            f"{', '.join(services)} to report healthy",
        )

    def logs(self, service: str) -> str:
        result = self.podman.run("logs", self.container(service), check=False)
        return result.stdout + result.stderr

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks still labelled with this project."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {
            "container": self.podman.run("ps", "-a", "--filter", label, "--format", "{{.Names}}"),
            "volume": self.podman.run("volume", "ls", "--filter", label, "--format", "{{.Name}}"),
            "network": self.podman.run("network", "ls", "--filter", label, "--format", "{{.Name}}"),
        }
        return {kind: result.stdout.split() for kind, result in found.items()}

    def remove_leftovers(self) -> None:
        """Last resort after a failed ``down``: remove by name what the project created."""
        leftovers = self.leftovers()
        for name in leftovers["container"]:
            self.podman.run("rm", "--force", "--volumes", name, check=False)
        for name in leftovers["volume"]:
            self.podman.run("volume", "rm", "--force", name, check=False)
        for name in leftovers["network"]:
            self.podman.run("network", "rm", "--force", name, check=False)


def dump_logs(project: ComposeProject, services: tuple[str, ...], path: Path) -> None:
    """Every service's log in one file, for the failure report."""
    with path.open("w") as out:
        for service in services:
            try:
                out.write(f"===== {service}\n{project.logs(service)}\n")
            except RuntimeError as exc:
                out.write(f"===== {service}: {exc}\n")


@contextmanager
def running_project(
    podman: Podman,
    image: str,
    work_dir: Path,
    name_prefix: str,
    services: tuple[str, ...],
    *,
    logged: tuple[str, ...],
    profiles: tuple[str, ...] = (),
    overrides: tuple[Path, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[ComposeProject]:
    """A uniquely named project with ``services`` up and healthy, through podman's API
    service. Afterwards the ``logged`` services' logs go to ``work_dir/services.log``
    (printed: shown on failure) and the project is taken down with its volumes and
    network; anything it leaves is removed, then reported as a failure."""
    name = f"{name_prefix}{os.getpid()}{uuid.uuid4().hex[:6]}"
    with api_service(podman, work_dir / "podman.sock") as docker_host:
        project = ComposeProject(
            podman,
            docker_host,
            name,
            image,
            PROMETHEUS_IMAGE,
            Ports(),
            overrides=overrides,
            extra_env=extra_env or {},
        )
        try:
            with HealthDriver(podman, name):
                project.up(*services, profiles=profiles)
                project.wait_healthy(services, HEALTHY_TIMEOUT_S)
                yield project
        finally:
            dump_logs(project, logged, work_dir / "services.log")
            print(f"service logs of {name}: {work_dir / 'services.log'}")  # shown on failure
            try:
                project.down()
            finally:
                leftovers = project.leftovers()
                project.remove_leftovers()
            assert not any(leftovers.values()), f"docker-compose down left {leftovers}"


def deployment_ca(project: ComposeProject, work_dir: Path) -> ssl.SSLContext:
    """A TLS context trusting the CA the init service put in the secrets volume."""
    ca_path = work_dir / "ca.pem"
    project.podman.run("cp", f"{project.container('coordinator')}:/secrets/ca.pem", str(ca_path))
    return ssl.create_default_context(cafile=str(ca_path))


def admin_token(project: ComposeProject) -> str:
    """An admin token made with the cluster secret, as docs/deployment.md shows: the
    coordinator's container speaks as the cluster (CONVEYOR_CLUSTER_SECRET_FILE)."""
    exec_conveyor = ("exec", "-T", "coordinator", "conveyor")
    project.compose(*exec_conveyor, "acl", "add", ADMIN_PRINCIPAL, "admin", "--cluster")
    output = project.compose(*exec_conveyor, "token", "create", ADMIN_PRINCIPAL)
    match = re.search(r"^cvt_\S+$", output, re.MULTILINE)
    assert match is not None, f"no token in {output!r}"
    return match.group(0)
