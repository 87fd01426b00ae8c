"""Network partitions with nftables, in a table of our own that is always deleted.

Loopback connections leave from 127.0.0.1 whatever address a service listens on, so an
address alone tells who a connection goes *to*, not who opened it. Each chaos service
therefore runs with its own group id (``GID_BASE + index``, see
:mod:`conveyor.chaos.cluster`); the table's ``stamp`` chain stamps every new connection with
its opener's gid (``ct mark``; 0 for the harness's own clients), and the listener is the
connection's original destination address. A *cut* ``(sender, receiver)`` drops the packets
``sender`` sends to ``receiver`` on every connection between them, whichever side opened
it; a symmetric partition is two cuts, an asymmetric one a single direction.

Rules match only the chaos cluster's loopback addresses (127.0.0.10 and up), never any other
address. The table is created before the services start (so every connection is marked),
emptied of cuts on heal, and deleted by the runner in ``finally``, by an ``atexit`` hook and
by the SIGTERM/SIGINT/SIGHUP handlers :func:`remove_on_signals` installs.

Parties: ``0`` the coordinator, ``N`` broker N, :data:`HARNESS` the workload's clients.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Final

log = logging.getLogger(__name__)

# One run at a time per network and table. Two chaos runs on one machine (say, two
# developers' suites) would cut each other's services and delete each other's table: give
# one of them another /24 of loopback and another table name through the environment
# (CONVEYOR_CHAOS_NETWORK, CONVEYOR_CHAOS_TABLE), read at import and by
# :func:`configure_from_environment` (a test that sets them for itself).
TABLE = "conveyor_chaos"
NETWORK = "127.0.0"  # a loopback /24
ADDRESS_BASE: Final = 10  # party i listens on NETWORK.(10+i)


def configure_from_environment() -> None:
    """Take the network and table from the environment (defaults when unset)."""
    global TABLE, NETWORK  # the run's one network and table, read by every function
    network = os.environ.get("CONVEYOR_CHAOS_NETWORK") or "127.0.0"
    octets = network.split(".")
    loopback = len(octets) == 3 and octets[0] == "127"
    if not loopback or not all(o.isdigit() and int(o) < 256 for o in octets):
        raise ValueError(f"CONVEYOR_CHAOS_NETWORK={network!r} is not a loopback /24 like 127.0.5")
    table = os.environ.get("CONVEYOR_CHAOS_TABLE") or "conveyor_chaos"
    if not table.replace("_", "").isalnum() or len(table) > 64:
        raise ValueError(f"CONVEYOR_CHAOS_TABLE={table!r} is not a plain nftables table name")
    TABLE, NETWORK = table, network


configure_from_environment()
GID_BASE: Final = 60010  # party i runs with gid 60010+i (and connections it opens: that mark)
HARNESS: Final = -1
Cut = tuple[int, int]  # packets sent by the first party to the second are dropped


def address_of(party: int) -> str:
    """Loopback address of service ``party`` (0: coordinator, N: broker N)."""
    if party < 0:
        raise ValueError("the harness has no address of its own")
    return f"{NETWORK}.{ADDRESS_BASE + party}"


def gid_of(party: int) -> int:
    return GID_BASE + party


def _mark_of(party: int) -> int:
    return 0 if party == HARNESS else gid_of(party)


def unavailable_reason() -> str | None:
    """Why partitions cannot run here, or None when they can (checked by creating and
    deleting the table once: a container may lack nftables or conntrack support)."""
    if shutil.which("nft") is None:
        return "nft not installed (run scripts/system-deps/40-nftables.sh as root)"
    if os.geteuid() != 0:
        return "nft and per-service group ids need root"
    if _table_exists():
        return None  # ours, in use
    try:
        _nft_script(table_script([0]))
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return f"the kernel refused our nftables table: {e}"
    finally:
        remove()
    return None


# ---- pure: which cuts each partition makes, and the rules for them ------------------------


def isolate(target: int, parties: Iterable[int]) -> frozenset[Cut]:
    """``target`` neither sends to nor receives from anyone (the harness included)."""
    others = [p for p in parties if p != target]
    return frozenset({(target, p) for p in others} | {(p, target) for p in others})


def split(group_a: Iterable[int], group_b: Iterable[int]) -> frozenset[Cut]:
    """No traffic between the two groups in either direction; within each group all flows."""
    a, b = list(group_a), list(group_b)
    return frozenset({(x, y) for x in a for y in b} | {(y, x) for x in a for y in b})


def one_way(sender: int, receivers: Iterable[int]) -> frozenset[Cut]:
    """``sender``'s packets to ``receivers`` are dropped; theirs to it still arrive."""
    return frozenset((sender, r) for r in receivers if r != sender)


def cut_rules(cuts: Iterable[Cut]) -> list[str]:
    """nft rules (for a chain on the input hook) dropping the packets of each cut.

    A packet from S to R travels either on a connection S opened to R (``ct mark`` S,
    original destination R, original direction) or on one R opened to S (mark R, original
    destination S, reply direction). The harness never listens, so a cut towards it only
    needs the second form and a cut from it only the first.

    >>> cut_rules([(1, 0)])[0]
    'ct mark 60011 ct original ip daddr 127.0.0.10 ct direction original drop'
    """
    rules = []
    for sender, receiver in sorted(set(cuts)):
        if sender == receiver:
            raise ValueError(f"a party cannot be cut from itself: {sender}")
        if receiver != HARNESS:
            rules.append(
                f"ct mark {_mark_of(sender)} ct original ip daddr {address_of(receiver)} "
                "ct direction original drop"
            )
        if sender != HARNESS:
            rules.append(
                f"ct mark {_mark_of(receiver)} ct original ip daddr {address_of(sender)} "
                "ct direction reply drop"
            )
    return rules


def table_script(parties: Iterable[int]) -> str:
    """The whole table: a ``stamp`` chain stamping connections by their opener's gid and an
    empty ``cuts`` chain (recreated from scratch: any old table of ours is replaced)."""
    marks = " ".join(
        f"ct state new meta skgid {gid_of(p)} ct mark set {gid_of(p)};"
        for p in sorted(parties)
        if p >= 0
    )
    return (
        f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        f"  chain stamp {{ type filter hook output priority -10; policy accept; {marks} }}\n"
        f"  chain cuts {{ type filter hook input priority -10; policy accept; }}\n"
        f"}}\n"
    )


def cuts_script(cuts: Iterable[Cut]) -> str:
    """Replace the cuts, atomically (one nft transaction)."""
    lines = [f"flush chain ip {TABLE} cuts"]
    lines += [f"add rule ip {TABLE} cuts {rule}" for rule in cut_rules(cuts)]
    return "\n".join(lines) + "\n"


# ---- I/O: apply scripts --------------------------------------------------------------------


def _nft_script(script: str) -> None:
    result = subprocess.run(
        ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"nft failed: {result.stderr.strip()}")


def install(parties: Iterable[int]) -> None:
    """Create the table (before the services start, so every connection gets its mark)."""
    atexit.register(remove)
    _nft_script(table_script(parties))
    log.info("partition: table %s installed", TABLE)


def apply(cuts: Iterable[Cut]) -> None:
    """Replace the active cuts with ``cuts``."""
    cuts = frozenset(cuts)
    _nft_script(cuts_script(cuts))
    log.info("partition: cut %s", sorted(cuts))


def heal() -> None:
    """Drop every cut (the table stays, for the marks); idempotent."""
    if _table_exists():
        subprocess.run(
            ["nft", "flush", "chain", "ip", TABLE, "cuts"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        log.info("partition: healed")


def remove() -> None:
    """Delete our table if it exists; idempotent."""
    if _table_exists():
        subprocess.run(
            ["nft", "delete", "table", "ip", TABLE],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        log.info("partition: table %s deleted", TABLE)


def _table_exists() -> bool:
    if shutil.which("nft") is None:
        return False
    listed = subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, timeout=10, check=False
    )
    return f"table ip {TABLE}" in listed.stdout


_installed: set[int] = set()  # signals whose handler already removes the table


def remove_on_signals() -> None:
    """On SIGTERM, SIGINT or SIGHUP: delete the table, then act as the old handler would.
    Only the main thread may install handlers; elsewhere this does nothing."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if signum in _installed:
            continue
        try:
            previous = signal.getsignal(signum)
            signal.signal(signum, _handler(previous))
            _installed.add(signum)
        except ValueError:  # not the main thread
            return


def _handler(previous: object) -> Callable[[int, FrameType | None], None]:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        remove()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return on_signal
