"""Security benchmark (issue 10): produce throughput with TLS and auth on, against plain
HTTP, measured in the same run.

Usage: .venv/bin/python scripts/bench_security.py [--runs 3] [--messages 200000]

Two clusters of one coordinator and one broker: plain HTTP without auth, and HTTPS with
mutual TLS on internal routes and auth on (a token with ``produce`` on the topic only, so
every request goes through the ACL check). One Python producer sends 100-byte messages over
8 keys to an 8-partition RF 1 topic, acks=1, alternating between the clusters; medians of
``--runs``. Target: ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.cluster import Cluster

from conveyor.client import Admin, Producer
from conveyor.client.security import SecurityAdmin
from conveyor.transport.certs import init_certs
from conveyor.transport.tls import TLSConfig

SECRET = secrets.token_urlsafe(32)
TOPIC = "bench"


def produce_rate(url: str, tls: TLSConfig, token: str | None, messages: int) -> float:
    if token is None:
        os.environ.pop("CONVEYOR_TOKEN", None)
    else:
        os.environ["CONVEYOR_TOKEN"] = token  # the producer reads its credentials here
    value = b"x" * 100
    keys = [f"key-{i}" for i in range(8)]
    with Producer(url, acks="1", linger_ms=5, tls=tls) as producer:
        producer.send(TOPIC, value, key=keys[0]).result(timeout=60)  # metadata
        started = time.perf_counter()
        for n in range(messages):
            producer.send(TOPIC, value, key=keys[n & 7])
        producer.flush()
        return messages / (time.perf_counter() - started)


def secure_cluster(root: Path) -> tuple[Cluster, TLSConfig, str]:
    init_certs(root / "certs")
    cluster = Cluster(
        root,
        broker_count=1,
        tls_dir=root / "certs",
        coordinator_args=["--auth"],
        broker_args=["--auth"],
    )
    os.environ["CONVEYOR_CLUSTER_SECRET"] = SECRET
    try:
        cluster.start()
    finally:
        del os.environ["CONVEYOR_CLUSTER_SECRET"]
    tls = TLSConfig(cafile=str(root / "certs" / "ca.pem"))
    with Admin(cluster.url, tls=tls, token=SECRET) as admin:
        admin.create_topic(TOPIC, partitions=8, replication_factor=1)
    with SecurityAdmin(cluster.url, tls=tls, token=SECRET) as security:
        security.add_acl("bench", "produce", "topic", TOPIC)
        token = security.create_token("bench").token
    time.sleep(2.5)  # two heartbeats: the broker has the token and the rule
    return cluster, tls, token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        plain = Cluster(Path(root) / "plain", broker_count=1).start()
        secure, tls, token = secure_cluster(Path(root) / "secure")
        try:
            with Admin(plain.url) as admin:
                admin.create_topic(TOPIC, partitions=8, replication_factor=1)
            plain_rates: list[float] = []
            secure_rates: list[float] = []
            for run in range(args.runs):
                plain_rates.append(produce_rate(plain.url, TLSConfig(), None, args.messages))
                secure_rates.append(produce_rate(secure.url, tls, token, args.messages))
                ratio = secure_rates[-1] / plain_rates[-1]
                print(
                    f"run {run + 1}: plain {plain_rates[-1]:,.0f} msg/s, TLS+auth "
                    f"{secure_rates[-1]:,.0f} msg/s, ratio {ratio:.2f}",
                    flush=True,
                )
            p, s = statistics.median(plain_rates), statistics.median(secure_rates)
            # Each run's pair is measured back to back, so the median of per-run ratios is
            # less exposed to other load on a shared machine than the ratio of medians.
            ratios = [b / a for a, b in zip(plain_rates, secure_rates, strict=True)]
            r = statistics.median(ratios)
            verdict = "met" if r >= 0.8 else "NOT met"
            print(
                f"median: plain {p:,.0f} msg/s, TLS+auth {s:,.0f} msg/s, ratio of medians "
                f"{s / p:.2f}, median ratio {r:.2f} (target >= 0.8: {verdict})"
            )
        finally:
            plain.stop()
            secure.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
