"""Network partitions with nftables, in a table of our own that is always deleted.

Rules match only the chaos cluster's loopback addresses (127.0.0.10 and up, see
:mod:`conveyor.chaos.cluster`), never any other address. The table is deleted on heal, in
``finally`` by the runner, and by an ``atexit`` hook in case the runner dies before that.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
from typing import Final

log = logging.getLogger(__name__)

TABLE: Final = "conveyor_chaos"


def unavailable_reason() -> str | None:
    """Why partitions cannot run here, or None when they can."""
    if shutil.which("nft") is None:
        return "nft not installed (run scripts/system-deps/40-nftables.sh as root)"
    if os.geteuid() != 0:
        return "nft needs root"
    return None


def _nft(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", *args], check=check, capture_output=True, text=True, timeout=10)


def _rule_for(address: str) -> str:
    if not address.startswith("127.0.0.") or address in ("127.0.0.1", "127.0.0.0"):
        raise ValueError(f"refusing to partition {address}: only chaos loopback addresses")
    return f"ip daddr {address} drop; ip saddr {address} drop;"


def isolate(addresses: list[str]) -> None:
    """Drop every packet to or from ``addresses`` (replaces any earlier isolation)."""
    heal()
    rules = " ".join(_rule_for(a) for a in addresses)
    script = (
        f"table ip {TABLE} {{ chain input {{ type filter hook input priority -10; "
        f"policy accept; {rules} }} }}"
    )
    atexit.register(heal)
    result = subprocess.run(
        ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10, check=False
    )
    if result.returncode != 0:
        heal()
        raise RuntimeError(f"nft failed: {result.stderr.strip()}")
    log.info("partition: isolated %s", addresses)


def heal() -> None:
    """Delete our table if it exists; idempotent."""
    if shutil.which("nft") is None:
        return
    listed = _nft("list", "tables", check=False)
    if f"table ip {TABLE}" in listed.stdout:
        _nft("delete", "table", "ip", TABLE, check=False)
        log.info("partition: healed (table %s deleted)", TABLE)
