"""The active coordinator cut from etcd (nftables on loopback addresses, as the chaos
suite's ``partition-coordinator-etcd`` fault): it steps down by its own clock before its
lease can have expired at etcd, a standby takes over, and no two coordinators were ever
active at once (checked from every coordinator's log of epochs and actions).

Runs on a loopback /24 and an nftables table of its own (``CONVEYOR_CHAOS_NETWORK`` /
``CONVEYOR_CHAOS_TABLE``, chosen from this process's id), so it cannot cut or delete
another run's (a chaos campaign's, another suite's). Needs root and nft: skipped otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor.chaos import netfault
from conveyor.chaos.cluster import ETCD_PARTIES, HA_LEASE_TTL_MS, ChaosCluster
from conveyor.chaos.ha import parse_log, two_actives
from tests.ha.conftest import require_etcd
from tests.ha.harness import status
from tests.integration.cluster import wait_for

TTL_S = HA_LEASE_TTL_MS / 1000


@pytest.fixture
def own_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This run's network and table; the table deleted whatever happens."""
    monkeypatch.setenv("CONVEYOR_CHAOS_NETWORK", f"127.77.{os.getpid() % 250}")
    monkeypatch.setenv("CONVEYOR_CHAOS_TABLE", f"conveyor_ha_test_{os.getpid()}")
    netfault.configure_from_environment()
    try:
        reason = netfault.unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        yield
    finally:
        netfault.remove()
        monkeypatch.undo()
        netfault.configure_from_environment()


@pytest.fixture
def cluster(tmp_path: Path, own_network: None) -> Iterator[ChaosCluster]:
    require_etcd()
    chaos = ChaosCluster(tmp_path, broker_count=1, ha=True)
    netfault.install(chaos.parties_for(1))  # before the services: every connection marked
    try:
        chaos.start()
        yield chaos
    finally:
        chaos.stop()


def role(url: str) -> str | None:
    found = status(url)
    return None if found is None else str(found.get("role"))


def test_the_active_coordinator_cut_from_etcd_steps_down_and_another_takes_over(
    cluster: ChaosCluster,
) -> None:
    old = cluster.active()
    assert old is not None
    with conveyor.Admin(cluster.url) as admin:
        admin.create_topic("before", partitions=1, replication_factor=1)
    cut_at = time.monotonic()
    netfault.apply(netfault.split([cluster.party_of(old)], ETCD_PARTIES))
    wait_for(lambda: role(old.url) != "active", 10, "the cut coordinator stepping down")
    stepped_down_s = time.monotonic() - cut_at
    wait_for(lambda: cluster.active() not in (None, old), 15, "a standby taking over")
    takeover_s = time.monotonic() - cut_at
    print(f"cut from etcd: stepped down after {stepped_down_s:.2f} s, another active after "
          f"{takeover_s:.2f} s (lease ttl {TTL_S} s)")  # fmt: skip
    # by its own clock: no keep-alive came back, so it stopped at ttl - margin after the
    # last one (etcd expires the lease only at ttl), whatever etcd said
    assert "its lease may have expired (own clock): stepping down" in old.tail(200_000)
    assert stepped_down_s < TTL_S + 1.0  # the status poll itself may be late on a busy host
    new = cluster.active()
    assert new is not None and new is not old
    with conveyor.Admin(cluster.url) as admin:  # the new one decides while the old is cut
        admin.create_topic("during-cut", partitions=1, replication_factor=1)
    assert role(old.url) == "standby"
    netfault.heal()
    wait_for(
        lambda: (status(old.url) or {}).get("active_url") == new.url,
        15,
        "the healed coordinator standing by, naming the new active one",
    )
    with conveyor.Admin(cluster.url) as admin:
        assert {"before", "during-cut"} <= {t.name for t in admin.list_topics()}
    events = [
        event
        for service in cluster.coordinators
        for event in parse_log(service.name, service.tail(2_000_000).splitlines())
    ]
    assert [e for e in events if e.kind == "active"], "no epoch events in the logs"
    problems = two_actives(events)
    assert not problems, "\n".join(problems)
