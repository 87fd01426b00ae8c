"""How long a revoked token keeps working on each broker (docs/security.md, "Revocation").

Usage: .venv/bin/python scripts/measure_revocation.py [--rounds 20] [--brokers 3]
                                                       [--staleness-ms 10000]

One coordinator and N brokers with auth on (real processes, free ports). Each round makes a
token allowed to describe the cluster, waits until every broker accepts it, revokes it, and
polls every broker every 5 ms until it refuses the token: the delay per broker, from the
revoke call's answer. Then the bound for a broker that cannot reach the coordinator: the
coordinator is paused (SIGSTOP) and each broker is polled until it refuses client requests
(503 NOT_READY), from the pause. Prints medians and maxima.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.cluster import Cluster, wait_for

from conveyor.client.security import SecurityAdmin
from conveyor.protocol.errors import ConveyorError
from conveyor.transport.auth import authorization_header
from conveyor.transport.client import SyncHTTP

SECRET = secrets.token_urlsafe(32)
POLL_S = 0.005


def accepted(http: SyncHTTP, broker: str) -> bool:
    try:
        http.request("GET", f"{broker}/v1/partitions")
    except ConveyorError:
        return False
    return True


def refused_after(http: SyncHTTP, brokers: list[str], since: float) -> list[float]:
    """Poll every broker (one thread each) until it refuses; seconds since ``since``."""
    delays = [0.0] * len(brokers)

    def poll(i: int, broker: str) -> None:
        while accepted(http, broker):
            time.sleep(POLL_S)
        delays[i] = time.monotonic() - since

    threads = [
        threading.Thread(target=poll, args=(i, b), daemon=True) for i, b in enumerate(brokers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--staleness-ms", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="conveyor-revocation-"))
    cluster = Cluster(
        root,
        broker_count=args.brokers,
        coordinator_args=["--auth"],
        broker_args=["--auth", "--security-max-staleness-ms", str(args.staleness_ms)],
    )
    os.environ["CONVEYOR_CLUSTER_SECRET"] = SECRET
    cluster.start()
    brokers = [b.url for b in cluster.brokers.values()]
    try:
        delays: list[float] = []
        with SecurityAdmin(cluster.url, token=SECRET) as security:
            security.add_acl("svc", "describe", "cluster", "cluster")
            for _ in range(args.rounds):
                created = security.create_token("svc")
                http = SyncHTTP(authorization=authorization_header(created.token))
                for broker in brokers:
                    wait_for(lambda h=http, b=broker: accepted(h, b), 10, "the token to work")
                security.revoke_token(created.token_id)
                delays += refused_after(http, brokers, time.monotonic())
        print(
            f"revocation, coordinator reachable ({args.rounds} rounds x {len(brokers)} brokers): "
            f"median {statistics.median(delays) * 1000:.0f} ms, "
            f"max {max(delays) * 1000:.0f} ms"
        )
        with SecurityAdmin(cluster.url, token=SECRET) as security:
            token = security.create_token("svc").token
        http = SyncHTTP(authorization=authorization_header(token))
        for broker in brokers:
            wait_for(lambda b=broker: accepted(http, b), 10, "the token to work")
        assert cluster.coordinator is not None and cluster.coordinator.process is not None
        pid = cluster.coordinator.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            cut_off = refused_after(http, brokers, time.monotonic())
        finally:
            os.kill(pid, signal.SIGCONT)
        print(
            f"coordinator unreachable (--security-max-staleness-ms {args.staleness_ms}): "
            f"brokers refuse clients after {', '.join(f'{d * 1000:.0f}' for d in cut_off)} ms"
        )
        print(f"load: {os.getloadavg()[0]:.2f} (1 min average)")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
