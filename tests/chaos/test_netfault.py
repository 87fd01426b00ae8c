"""nftables partitions: the pure rule builders, then real cuts between real processes.

The live tests need root and nft (the partition faults' own requirements) and skip with
the reason otherwise. They start tiny echo servers as "services" (each with its party's
group id, on its party's address) and check who can still reach whom.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from conveyor.chaos import netfault
from conveyor.chaos.netfault import HARNESS, address_of, gid_of

CONNECT_TIMEOUT_S = 0.5
PARTIES = (0, 1, 2)


def test_isolate_cuts_every_direction_including_the_harness() -> None:
    cuts = netfault.isolate(1, [HARNESS, 0, 1, 2])
    assert cuts == {(1, HARNESS), (HARNESS, 1), (1, 0), (0, 1), (1, 2), (2, 1)}


def test_split_cuts_between_groups_only() -> None:
    assert netfault.split([0], [1, 2]) == {(0, 1), (1, 0), (0, 2), (2, 0)}


def test_one_way_cuts_a_single_direction() -> None:
    assert netfault.one_way(2, [0, 1, 2]) == {(2, 0), (2, 1)}


def test_a_cut_drops_both_connection_directions_it_can_travel() -> None:
    rules = netfault.cut_rules([(1, 2)])
    net = netfault.NETWORK  # 127.0.0 unless CONVEYOR_CHAOS_NETWORK names another
    assert rules == [
        f"ct mark 60011 ct original ip daddr {net}.12 ct direction original drop",
        f"ct mark 60012 ct original ip daddr {net}.11 ct direction reply drop",
    ]


def test_rules_only_ever_name_chaos_addresses() -> None:
    everything = netfault.isolate(0, [HARNESS, 0, 1, 2, 3, 4, 5])
    net = netfault.NETWORK  # 127.0.0 unless CONVEYOR_CHAOS_NETWORK names another /24
    assert net.startswith("127.")
    for rule in [*netfault.cut_rules(everything), netfault.table_script(range(6))]:
        for word in rule.replace(";", " ").split():
            if word.count(".") == 3 and word[0].isdigit():
                assert word.startswith(f"{net}.") and int(word.rsplit(".", 1)[1]) >= 10


def test_a_party_cannot_be_cut_from_itself() -> None:
    with pytest.raises(ValueError, match="itself"):
        netfault.cut_rules([(1, 1)])


# ---- live ----------------------------------------------------------------------------------

SERVER = textwrap.dedent(
    """
    import socket, sys
    server = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            data = conn.recv(64)
            conn.sendall(data)
    """
)
CLIENT = textwrap.dedent(
    """
    import socket, sys
    address, timeout = (sys.argv[1], int(sys.argv[2])), float(sys.argv[3])
    try:
        with socket.create_connection(address, timeout=timeout) as s:
            s.sendall(b"ping")
            print("ok" if s.recv(64) == b"ping" else "bad")
    except OSError:
        print("cut")
    """
)


@pytest.fixture
def servers() -> Iterator[dict[int, int]]:
    reason = netfault.unavailable_reason()
    if reason:
        pytest.skip(reason)
    netfault.install(PARTIES)
    ports: dict[int, int] = {}
    processes = []
    try:
        for party in PARTIES:
            with socket.socket() as s:
                s.bind((address_of(party), 0))
                ports[party] = s.getsockname()[1]
            process = subprocess.Popen(
                [sys.executable, "-c", SERVER, address_of(party), str(ports[party])],
                stdout=subprocess.PIPE, text=True, group=gid_of(party), extra_groups=[],
            )  # fmt: skip
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
            processes.append(process)
        yield ports
    finally:
        netfault.remove()
        for process in processes:
            process.kill()
            process.wait(5)
            if process.stdout is not None:
                process.stdout.close()


def reach(ports: dict[int, int], sender: int, receiver: int) -> bool:
    """Whether ``sender`` (a party's gid, or the harness) completes a ping to ``receiver``."""
    group = None if sender == HARNESS else gid_of(sender)
    argv = [sys.executable, "-c", CLIENT, address_of(receiver), str(ports[receiver])]
    done = subprocess.run(
        [*argv, str(CONNECT_TIMEOUT_S)], capture_output=True, text=True, timeout=10,
        group=group, extra_groups=None if group is None else [], check=True,
    )  # fmt: skip
    return done.stdout.strip() == "ok"


def test_live_isolation_split_and_one_way(servers: dict[int, int]) -> None:
    assert reach(servers, 1, 2) and reach(servers, HARNESS, 1)
    netfault.apply(netfault.isolate(1, [HARNESS, *PARTIES]))
    assert not reach(servers, 2, 1) and not reach(servers, 1, 2)
    assert not reach(servers, HARNESS, 1) and not reach(servers, 1, 0)
    assert reach(servers, 2, 0) and reach(servers, HARNESS, 2)
    netfault.apply(netfault.split([0], [1, 2]))
    assert not reach(servers, 1, 0) and not reach(servers, 0, 2)
    assert reach(servers, 1, 2) and reach(servers, HARNESS, 0)
    netfault.apply(netfault.one_way(2, [1]))  # 2's packets to 1 are lost: no handshake
    assert not reach(servers, 2, 1)
    assert reach(servers, 1, 0) and reach(servers, 0, 2)
    netfault.heal()
    # at once: a ping that connects within CONNECT_TIMEOUT_S had no SYN retransmitted (the
    # first retry waits 1 s), whatever the load adds to the clients' own start-up
    assert reach(servers, 2, 1) and reach(servers, 1, 0)


def test_the_table_is_gone_after_remove(servers: dict[int, int]) -> None:
    netfault.apply(netfault.isolate(1, [HARNESS, *PARTIES]))
    netfault.remove()
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    assert netfault.TABLE not in listed.stdout.split()  # other runs use longer names
    assert reach(servers, HARNESS, 1)
