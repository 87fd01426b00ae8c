"""W3 broken down: single-message acknowledged latency on one broker (RF 1, acks=all, the
topic's default fsync before the acknowledgement), three clients against the same broker,
and the disk's own fsync latency, the floor (docs/benchmarks.md, "W3 latency").

    .venv/bin/python scripts/bench_w3_breakdown.py [--count 2000] [--rounds 3]

Clients, alternating by round, each on its own topic after 200 warm-up sends:

* ``conveyor``: Conveyor's sync ``Producer`` (linger 0) over the Kafka listener, one
  ``send(...).result()`` at a time (what ``conveyor bench produce --sequential`` times);
* ``confluent``: confluent-kafka's ``Producer`` (linger.ms 0), ``produce`` then ``flush``;
* ``raw``: a blocking socket sending a pre-encoded one-record Produce v9 (acks -1) and
  reading its answer: the broker's share with no client Python in the way.

Printed per round and client: p50/p99 in microseconds, the client's CPU and the broker
process's CPU (user + system, every thread: the flush thread's fsync included) per send;
then the medians over rounds, and the fsync floor (a 170-byte write + sync loop in the
broker's data directory's file system: appended + ``fsync``, and inside a preallocated
file + ``fdatasync`` as the broker's active segment). To compare two trees, run it with
``PYTHONPATH=<tree>/src`` for each, alternating (the broker runs the importable
``conveyor``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.cluster import Cluster

WARM_UP = 200
VALUE = b"x" * 100


def _quantiles(samples_us: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_us)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(one: Callable[[int], None], broker_pid: int, count: int) -> dict[str, float]:
    for i in range(WARM_UP):
        one(i)
    broker_before, client_before = _cpu_s(broker_pid), time.process_time()
    samples = []
    for i in range(count):
        started = time.perf_counter_ns()
        one(i)
        samples.append((time.perf_counter_ns() - started) / 1000)
    client_s, broker_s = time.process_time() - client_before, _cpu_s(broker_pid) - broker_before
    p50, p99 = _quantiles(samples)
    return {
        "p50": p50,
        "p99": p99,
        "client_cpu_us": client_s / count * 1e6,
        "broker_cpu_us": broker_s / count * 1e6,
    }


def conveyor_w3(cluster: Cluster, topic: str, count: int, broker_pid: int) -> dict[str, float]:
    import conveyor

    with conveyor.Producer(
        cluster.url, acks="all", linger_ms=0, bootstrap_servers=cluster.bootstrap
    ) as producer:
        return _timed(
            lambda i: producer.send(topic, VALUE, key=b"k%d" % (i % 8)).result(10),
            broker_pid,
            count,
        )


def confluent_w3(cluster: Cluster, topic: str, count: int, broker_pid: int) -> dict[str, float]:
    import confluent_kafka

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "linger.ms": 0,
            "acks": "all",
            "enable.idempotence": False,
        }
    )

    def one(i: int) -> None:
        producer.produce(topic, VALUE, key=b"k%d" % (i % 8))
        producer.flush(10)

    return _timed(one, broker_pid, count)


def raw_w3(cluster: Cluster, topic: str, count: int, broker_pid: int) -> dict[str, float]:
    import conveyor
    from conveyor.protocol.kafka.codec import encode_request
    from conveyor.protocol.kafka.produce_request import encode_produce_request
    from conveyor.protocol.records import encode_batch

    with conveyor.Producer(cluster.url, bootstrap_servers=cluster.bootstrap) as producer:
        producer.send(topic, b"create", partition=0).result(30)  # the topic, auto-created
    host, port = cluster.bootstrap.split(",")[0].rsplit(":", 1)
    body = encode_produce_request(9, topic, 0, encode_batch([(b"k0", VALUE)]), -1, 30_000)
    with socket.create_connection((host, int(port))) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def one(i: int) -> None:
            conn.sendall(encode_request(0, 9, i & 0x7FFFFFFF, "w3-raw", body))
            size = int.from_bytes(conn.recv(4, socket.MSG_WAITALL), "big")
            if len(conn.recv(size, socket.MSG_WAITALL)) != size:
                raise ConnectionError("the broker closed the connection")

        return _timed(one, broker_pid, count)


def fsync_floor(directory: Path, count: int, *, preallocated: bool) -> tuple[float, float]:
    """p50 and p99 (us) of a 170-byte write + sync, after 200 of warm-up: appended at the
    file's end then fsync, or (``preallocated``) inside a ``fallocate``d file then
    fdatasync, as the broker's active segment does (docs/storage-format.md)."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=".fsync-floor-")
    try:
        if preallocated:
            os.posix_fallocate(fd, 0, (count + 200) * 170)
        sync = os.fdatasync if preallocated else os.fsync
        samples = []
        for i in range(count + 200):
            started = time.perf_counter_ns()
            os.pwrite(fd, b"r" * 170, i * 170)
            sync(fd)
            if i >= 200:
                samples.append((time.perf_counter_ns() - started) / 1000)
        return _quantiles(samples)
    finally:
        os.close(fd)
        os.unlink(path)


CLIENTS = {"conveyor": conveyor_w3, "confluent": confluent_w3, "raw": raw_w3}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="conveyor,confluent,raw")
    args = parser.parse_args()
    names = args.clients.split(",")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(Path(root), broker_count=1).start()
        try:
            process = cluster.brokers[1].process
            assert process is not None
            for round_ in range(args.rounds):
                for name in names if round_ % 2 == 0 else list(reversed(names)):
                    result = CLIENTS[name](cluster, f"w3-{name}-{round_}", args.count, process.pid)
                    results[name].append(result)
                    shown = " ".join(f"{k} {v:.0f}" for k, v in result.items())
                    print(f"round {round_} {name}: {shown} load {os.getloadavg()[0]:.1f}")
            floors = {
                "append + fsync": fsync_floor(Path(root), args.count, preallocated=False),
                "preallocated + fdatasync (the broker's)": fsync_floor(
                    Path(root), args.count, preallocated=True
                ),
            }
        finally:
            cluster.stop()
    for name, rounds in results.items():
        shown = " ".join(f"{k} {statistics.median(r[k] for r in rounds):.0f}" for k in rounds[0])
        print(f"median {name}: {shown}")
    for what, floor in floors.items():
        print(f"fsync floor, {what}: p50 {floor[0]:.0f} us, p99 {floor[1]:.0f} us")


if __name__ == "__main__":
    main()
