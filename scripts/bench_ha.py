"""Coordinator high-availability measurements (docs/benchmarks.md, "Coordinator on etcd").

    python scripts/bench_ha.py commits     # offset commits/s, SQLite vs etcd (3 members)
    python scripts/bench_ha.py latency     # topic creation and metadata write latency
    python scripts/bench_ha.py takeover    # SIGKILL the active coordinator, 10 times
    python scripts/bench_ha.py apply       # model.apply of one commit vs offsets held
    python scripts/bench_ha.py store       # the etcd store alone: offsets/s by batch size
    python scripts/bench_ha.py http        # commits over HTTP driven by wrk (C), with the
                                           # coordinator's CPU per commit; an empty GET too

Everything runs here on loopback with free ports: real coordinators (python -m
conveyor.coordinator), a real 3-member etcd (conveyor.cli.etcd_local), no broker unless
the measurement needs one. Each result is printed with the machine's load average.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from conveyor.cli.etcd_local import LocalEtcd, _free_port

PYTHON = sys.executable
COMMITTERS = int(os.environ.get("COMMITTERS", "128"))
DURATION_S = float(os.environ.get("DURATION_S", "10"))


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def status(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/v1/coordinator", timeout=1) as response:  # noqa: S310
            found: dict[str, Any] = json.load(response)
            return found
    except (OSError, ValueError):
        return None


def wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


@contextmanager
def coordinators(root: Path, store: str, count: int, ttl_ms: int = 2000) -> Iterator[list[Any]]:
    """``count`` coordinators on ``store`` (``sqlite`` or an etcd URL); yields [(proc, url)]."""
    started = []
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        port = _free_port("127.0.0.1")
        argv = [PYTHON, "-m", "conveyor.coordinator", "--listen", f"127.0.0.1:{port}",
                "--data", str(root / f"c{index}"), "--store", store, "--prefix", "/bench",
                "--lease-ttl-ms", str(ttl_ms), "--log-level", "WARNING", "--no-console"]  # fmt: skip
        log = (root / f"c{index}.log").open("ab")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        started.append((process, f"http://127.0.0.1:{port}"))
    try:
        wait(lambda: any((status(u) or {}).get("role") in ("active", "single") for _, u in started),
             30, "an active coordinator")  # fmt: skip
        yield started
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.terminate()
        for process, _ in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def active_url(started: list[Any]) -> str:
    for _, url in started:
        if (status(url) or {}).get("role") in ("active", "single"):
            return str(url)
    raise RuntimeError("no active coordinator")


async def register_and_create(url: str, session: aiohttp.ClientSession, topic: str) -> None:
    heartbeat = {"broker_id": 1, "url": "http://127.0.0.1:1"}
    async with session.post(f"{url}/v1/brokers/heartbeat", json=heartbeat) as response:
        response.raise_for_status()
    body = {"name": topic, "partitions": 8, "replication_factor": 1}
    async with session.post(f"{url}/v1/topics", json=body) as response:
        assert response.status in (201, 409), await response.text()


async def commit_load(url: str, committers: int, duration_s: float) -> float:
    """Commits/s: ``committers`` simple consumers, each its own group, committing one
    offset after another as fast as answers come back."""
    connector = aiohttp.TCPConnector(limit=committers)
    async with aiohttp.ClientSession(connector=connector) as session:
        await register_and_create(url, session, "bench")
        done = 0
        deadline = time.monotonic() + duration_s

        async def committer(index: int) -> None:
            nonlocal done
            offset = 0
            while time.monotonic() < deadline:
                offset += 1
                body = {"offsets": [{"topic": "bench", "partition": index % 8, "offset": offset}]}
                async with session.post(f"{url}/v1/groups/g{index}/offsets", json=body) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1

        started = time.monotonic()
        await asyncio.gather(*(committer(i) for i in range(committers)))
        return done / (time.monotonic() - started)


async def store_commits(service: Any, committers: int, duration_s: float) -> float:
    """Commits/s through the service itself (no HTTP): what the store and the group commit
    sustain, the machine's HTTP ceiling aside."""
    from conveyor.protocol.messages import (
        BrokerHeartbeat,
        BrokerId,
        CreateTopicRequest,
        OffsetCommitRequest,
        PartitionOffset,
    )

    await service.heartbeat(BrokerHeartbeat(broker_id=BrokerId(1), url="http://127.0.0.1:1"))
    await service.create_topic(CreateTopicRequest(name="bench", partitions=8, replication_factor=1))
    done = 0
    deadline = time.monotonic() + duration_s

    async def committer(index: int) -> None:
        nonlocal done
        offset = 0
        while time.monotonic() < deadline:
            offset += 1
            offsets = [PartitionOffset(topic="bench", partition=index % 8, offset=offset)]
            await service.commit_offsets(f"g{index}", OffsetCommitRequest(offsets=offsets))
            done += 1

    started, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(committer(i) for i in range(committers)))
    CPU_RATE.append(done / max(1e-9, time.process_time() - cpu))
    return done / (time.monotonic() - started)


CPU_RATE: list[float] = []  # commits per CPU-second of the process, last run


async def in_process(root: Path, etcd: LocalEtcd | None, batch_max: int) -> float:
    from conveyor.coordinator import writer
    from conveyor.coordinator.etcd_store import EtcdLayout, EtcdMetadataStore
    from conveyor.coordinator.service import CoordinatorService, CoordinatorSettings
    from conveyor.transport.etcd import EtcdClient, EtcdSettings, compare, op_put, parse_endpoints

    writer.BATCH_TRANSITIONS_MAX = batch_max
    service = CoordinatorService(CoordinatorSettings(data_dir=root))
    if etcd is None:
        await service.start(run_expiry=False)
        try:
            return await store_commits(service, COMMITTERS, DURATION_S)
        finally:
            await service.close()
    client = EtcdClient(EtcdSettings(parse_endpoints(etcd.store_url)))
    layout = EtcdLayout(f"/bench-{root.name}-{batch_max}")
    claimed = await client.txn(
        [compare(layout.leader, "CREATE", 0)], [op_put(layout.leader, b'{"url": "x"}')]
    )
    store = await EtcdMetadataStore.open(client, layout, claimed.header.revision)
    await service.activate(store, claimed.header.revision, run_expiry=False)
    try:
        return await store_commits(service, COMMITTERS, DURATION_S)
    finally:
        await service.close()
        await client.close()


def bench_store_commits(root: Path, etcd: LocalEtcd) -> None:
    for name, target, batch_max in (
        ("sqlite", None, 256),
        ("etcd", etcd, 256),
        ("etcd, no batching", etcd, 1),
    ):
        rate = asyncio.run(in_process(root / f"store-{name[:4]}-{batch_max}", target, batch_max))
        print(f"commits/s in-process {name}: {rate:.0f}, {CPU_RATE[-1]:.0f} per CPU-second "
              f"({COMMITTERS} committers, {DURATION_S:.0f} s; load {load()})", flush=True)  # fmt: skip


def bench_commits(root: Path, etcd: LocalEtcd) -> None:
    for name, store, count in (("sqlite", "sqlite", 1), ("etcd", etcd.store_url, 3)):
        with coordinators(root / name, store, count) as started:
            rate = asyncio.run(commit_load(active_url(started), COMMITTERS, DURATION_S))
        print(f"commits/s {name}: {rate:.0f} ({COMMITTERS} committers, {DURATION_S:.0f} s; "
              f"load {load()})", flush=True)  # fmt: skip


async def latencies(url: str, count: int) -> tuple[list[float], list[float]]:
    """Topic creation (1 partition) and a metadata write with no decision around it (a
    one-offset commit, sequential): milliseconds each."""
    async with aiohttp.ClientSession() as session:
        await register_and_create(url, session, "warm")
        creates, writes = [], []
        for index in range(count):
            started = time.perf_counter()
            body = {"name": f"t{index}", "partitions": 1, "replication_factor": 1}
            async with session.post(f"{url}/v1/topics", json=body) as response:
                assert response.status == 201, await response.text()
            creates.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            commit = {"offsets": [{"topic": "warm", "partition": 0, "offset": index}]}
            async with session.post(f"{url}/v1/groups/lat/offsets", json=commit) as response:
                assert response.status == 200
            writes.append((time.perf_counter() - started) * 1000)
        return creates, writes


def bench_latency(root: Path, etcd: LocalEtcd) -> None:
    for name, store, count in (("sqlite", "sqlite", 1), ("etcd", etcd.store_url, 3)):
        with coordinators(root / f"lat-{name}", store, count) as started:
            creates, writes = asyncio.run(latencies(active_url(started), 100))
        for what, values in (("topic creation", creates), ("metadata write", writes)):
            values.sort()
            print(f"{what} ms {name}: median {statistics.median(values):.1f} "
                  f"p99 {values[98]:.1f} (100 sequential; load {load()})", flush=True)  # fmt: skip


def bench_takeover(root: Path, etcd: LocalEtcd, rounds: int = 10) -> None:
    times = []
    with coordinators(root / "takeover", etcd.store_url, 3) as started:
        for _ in range(rounds):
            wait(lambda: sum((status(u) or {}).get("role") == "active" for _, u in started) == 1,
                 30, "one active")  # fmt: skip
            victim = next(i for i, (_, u) in enumerate(started)
                          if (status(u) or {}).get("role") == "active")  # fmt: skip
            process, url = started[victim]
            began = time.monotonic()
            process.send_signal(signal.SIGKILL)
            process.wait()
            wait(lambda: any((status(u) or {}).get("role") == "active"
                             for i, (_, u) in enumerate(started) if i != victim), 30, "takeover")  # fmt: skip
            times.append(time.monotonic() - began)
            port = url.rsplit(":", 1)[1]  # restart it as a standby for the next round
            argv = process.args
            log = (root / "takeover" / f"c{victim}.log").open("ab")
            started[victim] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), url)
            wait(lambda p=port: status(f"http://127.0.0.1:{p}") is not None, 30, "restarted")
    print(f"takeover s after SIGKILL (lease 2 s, 10 rounds): median "
          f"{statistics.median(times):.2f} max {max(times):.2f} "
          f"all {[round(t, 2) for t in times]} (load {load()})", flush=True)  # fmt: skip


def bench_apply(root: Path, etcd: LocalEtcd) -> None:
    """One offset commit through ``model.apply`` (what every commit costs the state,
    live and on recovery) with 100 to 100,000 offsets already held."""
    from conveyor.coordinator.model import (
        Broker,
        BrokerRecord,
        ClusterState,
        CommittedOffset,
        OffsetRecord,
        Partition,
        PartitionRecord,
        Topic,
        TopicRecord,
        apply,
    )  # fmt: skip
    from conveyor.protocol.messages import BrokerId, Epoch, TopicConfig

    one = BrokerId(1)
    base: list[Any] = [BrokerRecord(Broker(one, "http://127.0.0.1:1", True, 0)),
                       TopicRecord(Topic("t", 100, 1, TopicConfig(), 0))]  # fmt: skip
    base += [PartitionRecord(Partition("t", p, (one,), one, Epoch(0), (one,))) for p in range(100)]
    for held in (100, 10_000, 100_000):
        state = apply(ClusterState("bench"), base + [
            OffsetRecord(CommittedOffset(f"g{i}", "t", i % 100, 1, None, 0)) for i in range(held)
        ])  # fmt: skip
        rounds = 2000
        started = time.perf_counter()
        for i in range(rounds):
            commit = CommittedOffset(f"g{i % held}", "t", i % 100, i, None, 0)
            state = apply(state, [OffsetRecord(commit)])
        micros = (time.perf_counter() - started) * 1e6 / rounds
        print(f"apply of one commit with {held} offsets held: {micros:.1f} us (load {load()})",
              flush=True)  # fmt: skip


def bench_store(root: Path, etcd: LocalEtcd) -> None:
    """``EtcdMetadataStore.write`` alone, one batch after another (what the writer does):
    committed offsets per second by batch size, no coordinator logic around it."""
    for batch in (1, 16, 256):
        rate, rounds = asyncio.run(_store_rate(etcd, f"/bench-store-{root.name}-{batch}", batch))
        print(f"etcd store alone, {batch} offsets per write: {rate:.0f} offsets/s, "
              f"{rounds / DURATION_S:.0f} writes/s ({DURATION_S:.0f} s; load {load()})",
              flush=True)  # fmt: skip


async def _store_rate(etcd: LocalEtcd, prefix: str, batch: int) -> tuple[float, int]:
    from conveyor.coordinator.etcd_store import EtcdLayout, EtcdMetadataStore
    from conveyor.coordinator.model import ClusterState, CommittedOffset, OffsetRecord
    from conveyor.transport.etcd import EtcdClient, EtcdSettings, compare, op_put, parse_endpoints

    client = EtcdClient(EtcdSettings(parse_endpoints(etcd.store_url)))
    layout = EtcdLayout(prefix)
    try:
        claimed = await client.txn(
            [compare(layout.leader, "CREATE", 0)], [op_put(layout.leader, b'{"url": "x"}')]
        )
        store = await EtcdMetadataStore.open(client, layout, claimed.header.revision)
        state = await store.load()
        done = rounds = 0
        deadline = time.monotonic() + DURATION_S
        started = time.monotonic()
        while time.monotonic() < deadline:
            records = [OffsetRecord(CommittedOffset(f"g{i}", "t", 0, rounds, None, 0))
                       for i in range(batch)]  # fmt: skip
            await store.write(records, state if rounds % 1000 else ClusterState(state.cluster_id))
            done, rounds = done + batch, rounds + 1
        return done / (time.monotonic() - started), rounds
    finally:
        await client.close()


WRK_COMMIT = """
counter = 0
request = function()
  counter = counter + 1
  local g = counter % 128
  local body = '{"offsets":[{"topic":"bench","partition":' .. (g % 8) .. ',"offset":' .. counter .. '}]}'
  return wrk.format("POST", "/v1/groups/g" .. g .. "/offsets",
                    {["Content-Type"]="application/json"}, body)
end
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_http(root: Path, etcd: LocalEtcd) -> None:
    """Commits over HTTP with the load from wrk (C, one thread, 128 connections: the
    Python load generator cost as much CPU per request as the coordinator), and an empty
    ``GET /healthz`` for the HTTP stack's own floor; per run the requests/s and the active
    coordinator's CPU per request (/proc), which the machine's load changes less."""
    import shutil

    if shutil.which("wrk") is None:
        print("wrk not installed (apt-get install wrk): skipped", flush=True)
        return
    script = root / "commit.lua"
    script.write_text(WRK_COMMIT)
    for name, store, count in (("sqlite", "sqlite", 1), ("etcd", etcd.store_url, 3)):
        with coordinators(root / f"http-{name}", store, count) as started:
            url = active_url(started)
            process = next(p for p, u in started if u == url)
            asyncio.run(_create_bench_topic(url))
            for what, target in (("commit", ["-s", str(script), url]),
                                 ("GET /healthz", [url + "/healthz"])):  # fmt: skip
                before = _cpu_s(process.pid)
                argv = ["wrk", "-t1", "-c128", f"-d{DURATION_S:.0f}s", *target]
                output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
                used = _cpu_s(process.pid) - before
                total = int(next(line for line in output.splitlines()
                                 if "requests in" in line).split()[0])  # fmt: skip
                errors = [line.strip() for line in output.splitlines() if "Non-2xx" in line]
                print(f"http {what} {name}: {total / DURATION_S:.0f}/s, coordinator "
                      f"{1e6 * used / max(1, total):.0f} us CPU per request, "
                      f"{used / DURATION_S:.2f} of a core {errors or ''} (load {load()})",
                      flush=True)  # fmt: skip


async def _create_bench_topic(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        await register_and_create(url, session, "bench")


def main() -> int:
    what = sys.argv[1:] or ["commits", "latency", "takeover"]
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-ha-"))
    with LocalEtcd(root / "etcd") as etcd:
        for name in what:
            benches = {
                "commits": bench_commits,
                "store-commits": bench_store_commits,
                "latency": bench_latency,
                "takeover": bench_takeover,
                "apply": bench_apply,
                "store": bench_store,
                "http": bench_http,
            }
            benches[name](root, etcd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
