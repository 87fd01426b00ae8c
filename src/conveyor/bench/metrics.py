"""Metric cardinality benchmark: a broker leading 100 topics x 8 partitions renders /metrics.

Run: ``python -m conveyor.bench.metrics`` (``--help`` for the sizes). Results are recorded in
docs/benchmarks.md ("Metrics"). Targets from issue 6: the page under 1 MiB, rendered in
under 50 ms.

The broker is a real :class:`BrokerService` on real partition logs in a temporary
directory, brought to its state by the path a live broker takes: a heartbeat response
assigns every partition to it as leader with replicas [1, 2, 3] (so each partition also
exports two follower-lag series, the worst case), one batch is produced to and fetched
from every partition (so every traffic counter exists), and every data route has been
observed by the request metrics with a success and an error. What is timed is exactly
what ``GET /metrics`` runs: ``generate_latest`` over the application's registry (process,
GC and platform collectors, HTTP metrics, broker metrics). Nothing listens on a socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import make_mocked_request

from conveyor.bench.machine import describe_machine
from conveyor.broker.config import BrokerConfig
from conveyor.broker.http import build_broker_app
from conveyor.broker.metrics import REQUEST_KINDS
from conveyor.broker.service import BrokerService
from conveyor.protocol.messages import (
    BrokerId,
    BrokerInfo,
    Epoch,
    HeartbeatResponse,
    ReplicaAssignment,
    TopicConfig,
)
from conveyor.protocol.records import encode_batch
from conveyor.storage import FlushPolicy
from conveyor.transport.metrics import HTTP_METRICS_KEY, REGISTRY_KEY, render

SIZE_BYTES_TARGET = 1024 * 1024
RENDER_MS_TARGET = 50.0


def _assignments(topics: int, partitions: int) -> HeartbeatResponse:
    replicas = [BrokerId(1), BrokerId(2), BrokerId(3)]
    names = [f"topic-{t:03d}" for t in range(topics)]
    return HeartbeatResponse(
        cluster_id="bench",
        assignments=[
            ReplicaAssignment(
                topic=name,
                partition=p,
                leader=BrokerId(1),
                leader_epoch=Epoch(1),
                replicas=replicas,
                isr=replicas,
            )
            for name in names
            for p in range(partitions)
        ],
        topic_configs={name: TopicConfig() for name in names},
        brokers=[BrokerInfo(broker_id=b, url=f"http://127.0.0.1:{7700 + b}") for b in replicas],
    )


async def _broker(data_dir: Path, topics: int, partitions: int) -> BrokerService:
    config = BrokerConfig(
        broker_id=BrokerId(1),
        data_dir=data_dir,
        flush_override=FlushPolicy.parse("interval:1000"),
    )
    service = BrokerService(config)
    service.check_data_dir()
    await service.start()
    await service.apply_heartbeat_response(_assignments(topics, partitions))
    batch = encode_batch([(b"key", b"x" * 100)] * 10, timestamp_ms=1_700_000_000_000)
    for tp in list(service.replicas.logs):
        await service.produce(tp.topic, tp.partition, batch, acks="1")
        await service.fetch(tp.topic, tp.partition, 0)
    return service


def _observe_routes(service: BrokerService, app: Any) -> None:
    """Every data route seen once answering 200 and once with an error."""
    http = app[HTTP_METRICS_KEY]
    for method, route in REQUEST_KINDS:
        path = route.replace("{topic}", "topic-000").replace("{partition}", "0")
        request = make_mocked_request(method, path + "?acks=all", app=app)
        http.observe(request, route, 200, None, 0.001)
        http.observe(request, route, 421, "NOT_LEADER", 0.001)


def _time_hot_path(service: BrokerService, app: Any, calls: int) -> dict[str, float]:
    """What a produce request pays: the request metrics (HTTP + broker observer) and the
    traffic count (a header walk of the batch)."""
    batch = encode_batch([(None, b"x" * 100)] * 10, timestamp_ms=1_700_000_000_000)
    produced = service.metrics.produced
    started = time.perf_counter()
    for _ in range(calls):
        produced("topic-000", 0, batch)
    produced_ns = (time.perf_counter() - started) / calls * 1e9
    route = "/v1/topics/{topic}/partitions/{partition}/records"
    request = make_mocked_request("POST", "/v1/topics/topic-000/partitions/0/records", app=app)
    observe = app[HTTP_METRICS_KEY].observe
    started = time.perf_counter()
    for _ in range(calls):
        observe(request, route, 200, None, 0.001)
    observe_ns = (time.perf_counter() - started) / calls * 1e9
    return {"produced_call_ns": round(produced_ns), "request_observe_ns": round(observe_ns)}


def run(topics: int, partitions: int, renders: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="conveyor-bench-metrics-") as tmp:
            service = await _broker(Path(tmp), topics, partitions)
            try:
                app = build_broker_app(service)
                _observe_routes(service, app)
                registry = app[REGISTRY_KEY]
                render(registry)  # warm-up: first-render costs (imports, caches)
                times_ms = []
                text = b""
                for _ in range(renders):
                    started = time.perf_counter()
                    text = render(registry)
                    times_ms.append((time.perf_counter() - started) * 1000)
                lines = text.decode().splitlines()
                result = {
                    "topics": topics,
                    "partitions_per_topic": partitions,
                    "partitions": len(service.replicas.logs),
                    "series": sum(1 for line in lines if line and not line.startswith("#")),
                    "size_bytes": len(text),
                    "render_ms_median": round(statistics.median(times_ms), 2),
                    "render_ms_p90": round(sorted(times_ms)[int(len(times_ms) * 0.9) - 1], 2),
                    "render_ms_max": round(max(times_ms), 2),
                    "renders": renders,
                    **_time_hot_path(service, app, 100_000),
                    "machine": describe_machine(Path(tmp)).to_dict(),
                }
            finally:
                await service.close()
        return result

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor.bench.metrics",
        description="Size and render time of a broker's /metrics at a given partition count.",
    )
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=8, help="per topic")
    parser.add_argument("--renders", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run(args.topics, args.partitions, args.renders)
    size_ok = result["size_bytes"] < SIZE_BYTES_TARGET
    time_ok = result["render_ms_median"] < RENDER_MS_TARGET
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['partitions']} partitions, {result['series']} series\n"
            f"size:   {result['size_bytes']:,} bytes "
            f"({result['size_bytes'] / 1024 / 1024:.2f} MiB; target < 1 MiB: "
            f"{'PASS' if size_ok else 'MISS'})\n"
            f"render: median {result['render_ms_median']} ms, p90 {result['render_ms_p90']} ms, "
            f"max {result['render_ms_max']} ms over {result['renders']} renders "
            f"(target median < {RENDER_MS_TARGET:.0f} ms: {'PASS' if time_ok else 'MISS'})\n"
            f"hot path per produce request: traffic count {result['produced_call_ns']} ns, "
            f"request metrics {result['request_observe_ns']} ns"
        )
    return 0 if size_ok and time_ok else 1


if __name__ == "__main__":
    sys.exit(main())
