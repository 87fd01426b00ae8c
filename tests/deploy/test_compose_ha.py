"""docker-compose.yml's `ha` profile for real, through podman: three etcd members (Debian's
etcd-server in the tests' stand-in image) with client and peer TLS, three coordinators on
them with deploy/compose/ha.env, three brokers. One coordinator is active; killing its
container hands the cluster to another, which goes on creating topics; acknowledged
messages survive. Slow (three more containers than the default deployment and an image
build): run by ``make test-deploy-ha``, skipped otherwise; ``make test`` validates the
profile offline (tests/deploy/test_manifests.py)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import pytest

from tests.deploy.compose import (
    ComposeProject,
    admin_token,
    deployment_ca,
    ha_env,
    running_project,
)
from tests.deploy.http import HostView, HTTPStatusError, request_json
from tests.deploy.podman import ETCD_IMAGE, Podman, ensure_etcd_image, wait_for

pytestmark = pytest.mark.skipif(
    os.environ.get("CONVEYOR_TEST_COMPOSE_HA") != "1",
    reason="the compose HA profile runs with `make test-deploy-ha` (CONVEYOR_TEST_COMPOSE_HA=1)",
)

COORDINATORS = ("coordinator", "coordinator-2", "coordinator-3")
SERVICES = ("etcd-1", "etcd-2", "etcd-3", *COORDINATORS, "broker-1", "broker-2", "broker-3")


@dataclasses.dataclass
class HaDeployment:
    project: ComposeProject
    host: HostView

    def coordinator_ports(self) -> dict[str, int]:
        ports = self.project.ports
        return {"coordinator": ports.coordinator} | {
            f"coordinator-{n}": port for n, port in ports.standbys.items()
        }

    def roles(self) -> dict[str, str | None]:
        roles: dict[str, str | None] = {}
        for name, port in self.coordinator_ports().items():
            try:
                url = f"https://127.0.0.1:{port}/v1/coordinator"
                roles[name] = request_json("GET", url, context=self.host.context)["role"]
            except (OSError, HTTPStatusError, ValueError):
                roles[name] = None
        return roles

    def active(self) -> str | None:
        found = [name for name, role in self.roles().items() if role == "active"]
        return found[0] if len(found) == 1 else None

    def view_of(self, coordinator: str) -> HostView:
        """The host's view through ``coordinator``'s published port."""
        ports = dataclasses.replace(
            self.project.ports, coordinator=self.coordinator_ports()[coordinator]
        )
        return dataclasses.replace(self.host, ports=ports)


@pytest.fixture(scope="module")
def ha(
    podman: Podman, conveyor_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HaDeployment]:
    ensure_etcd_image(podman)
    work_dir = tmp_path_factory.mktemp("compose-ha")
    with running_project(
        podman,
        conveyor_image,
        work_dir,
        "conveyorha",
        SERVICES,
        logged=("init", *SERVICES),
        profiles=("ha",),
        extra_env={**ha_env(), "CONVEYOR_ETCD_IMAGE": ETCD_IMAGE},
    ) as project:
        deployment = HaDeployment(
            project, HostView(project.ports, deployment_ca(project, work_dir), "")
        )
        wait_for(lambda: deployment.active() is not None, 60, "one active coordinator")
        token = admin_token(project)
        deployment.host = dataclasses.replace(deployment.host, token=token)
        yield deployment


def test_one_active_coordinator_and_a_takeover_when_its_container_dies(ha: HaDeployment) -> None:
    roles = ha.roles()
    assert sorted(roles.values(), key=str) == ["active", "standby", "standby"], roles
    active = ha.active()
    assert active is not None
    view = ha.view_of(active)
    wait_for(lambda: view.alive_brokers() == {1, 2, 3}, 60, "3 brokers registered")
    view.create_topic("ha-orders", partitions=1)
    wait_for(lambda: view.leaders("ha-orders")[0] is not None, 30, "a leader for ha-orders-0")
    leader = view.leaders("ha-orders")[0]
    assert leader is not None
    values = [f"before-{i}" for i in range(20)]
    firsts: list[int] = []

    def produced() -> bool:  # a leader serves once its broker's heartbeat brought the news
        try:
            firsts.append(view.produce(leader, "ha-orders", 0, values))
        except HTTPStatusError as exc:
            if exc.status != 503:
                raise
            return False
        return True

    wait_for(produced, 60, "the leader of ha-orders-0 taking writes")
    first = firsts[0]
    ha.project.podman.run("kill", ha.project.container(active))
    wait_for(lambda: ha.active() not in (None, active), 60, "another coordinator active")
    new = ha.active()
    assert new is not None and new != active
    after = ha.view_of(new)
    after.create_topic("ha-after", partitions=1)  # the new one decides
    assert {"ha-orders", "ha-after"} <= {t for t in _topics(after)}
    records = after.fetch_all(leader, "ha-orders", 0)
    assert [records[first + i] for i in range(20)] == values


def _topics(view: HostView) -> set[str]:
    listed = view.request("GET", f"{view.coordinator_url}/v1/topics")
    return {t["name"] for t in listed["topics"]}
