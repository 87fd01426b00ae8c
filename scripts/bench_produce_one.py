"""The broker's CPU for one small Produce request (W3's: one 100-byte record, one
partition, acks=all), in one process without sockets: a frame -> ``KafkaSession`` -> the
Produce handler -> ``BrokerService.produce`` on real logs in a temporary directory (the
unit tests' FakeNetwork stands in for the coordinator) -> the encoded answer.

Prints, per Produce version (v3-v8 non-flexible, v9-v11 flexible), the CPU time
(``time.process_time``: every thread, the flusher's fsync included) of the request
decode alone (``codec.decode_request``) and of the whole request, per request, as the
median of ``--rounds`` rounds. ``--flush never`` leaves the fsync out (the Python alone);
``--profile`` adds cProfile's top entries for v9. To compare two trees, run it with
``PYTHONPATH=<tree>/src`` for each, alternating.

Usage: .venv/bin/python scripts/bench_produce_one.py [--requests 3000] [--rounds 5]
       [--versions 3,8,9,11] [--flush always|never] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.unit.broker.conftest import FakeNetwork, brokers, heartbeat_answer

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.produce import ProduceHandler
from conveyor.broker.kafka.registry import Registry
from conveyor.broker.kafka.session import KafkaSession, SessionSettings
from conveyor.protocol.kafka.apis import ApiKey, is_flexible
from conveyor.protocol.kafka.codec import decode_request
from conveyor.protocol.kafka.produce_request import encode_produce_request
from conveyor.protocol.records import BatchBuilder
from conveyor.protocol.topics import FlushPolicy
from conveyor.transport.kafka_server import ConnectionInfo


class _Source:
    snapshot = None

    async def catch_up(self) -> bool:
        return False


def _frame(version: int) -> bytes:
    builder = BatchBuilder()
    builder.append(b"x" * 100, key=None)
    body = encode_produce_request(version, "t", 0, builder.build(base_offset=0), -1, 30_000)
    client = b"rdkafka"
    header = struct.pack(">hhih", ApiKey.PRODUCE, version, 7, len(client)) + client
    if is_flexible(ApiKey.PRODUCE, version):
        header += b"\x00"
    return header + bytes(body)


def _cpu_us(work: object, count: int) -> float:
    started = time.process_time()
    work(count)  # type: ignore[operator]
    return (time.process_time() - started) / count * 1e6


async def main(args: argparse.Namespace) -> None:
    versions = [int(v) for v in args.versions.split(",")]
    flush = FlushPolicy(args.flush)
    with tempfile.TemporaryDirectory() as directory:
        network = FakeNetwork()
        async with brokers(Path(directory), network, flush_override=flush) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            registry = Registry()
            authorizer = Authorizer(_Source(), False)  # type: ignore[arg-type]
            produce = ProduceHandler(broker.produce, SimpleNamespace(brokers={}), authorizer)  # type: ignore[arg-type]
            registry.add(ApiKey.PRODUCE, produce)
            info = ConnectionInfo("p", "a", False, None)
            session = KafkaSession(info, registry, SessionSettings(False))

            for version in versions:
                frame = _frame(version)

                def decode(count: int, frame: bytes = frame) -> None:
                    for _ in range(count):
                        decode_request(frame)

                async def serve(count: int, frame: bytes = frame) -> None:
                    for _ in range(count):
                        reply = await session.handle(frame)
                        assert reply is not None
                        reply.done()

                await serve(200)
                decodes, requests = [], []
                for _ in range(args.rounds):
                    decodes.append(_cpu_us(decode, args.requests))
                    started = time.process_time()
                    await serve(args.requests)
                    requests.append((time.process_time() - started) / args.requests * 1e6)
                print(
                    f"v{version}: decode {statistics.median(decodes):.1f} us, "
                    f"request {statistics.median(requests):.1f} us "
                    f"(rounds: {' / '.join(f'{r:.0f}' for r in requests)})"
                )
                if args.profile and version == 9:
                    profile = cProfile.Profile()
                    profile.enable()
                    await serve(args.requests)
                    profile.disable()
                    stats = pstats.Stats(profile)
                    stats.sort_stats(os.environ.get("SORT", "tottime")).print_stats(40)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--versions", default="3,8,9,11")
    parser.add_argument("--flush", default="always", choices=["always", "never"])
    parser.add_argument("--profile", action="store_true")
    asyncio.run(main(parser.parse_args()))
