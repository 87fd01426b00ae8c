"""The broker's Kafka Produce and Fetch paths in one process, without sockets: frames
(built with kafka-python) -> KafkaSession -> the Produce/Fetch handlers -> BrokerService
on real logs in a temporary directory (the unit tests' FakeNetwork stands in for the
coordinator). Prints the CPU time (``time.process_time``: every thread, the flusher's
fsyncs included) per request and per message; ``--profile`` adds cProfile's top entries.

Usage: .venv/bin/python scripts/bench_kafka_inprocess.py [RECORDS_PER_BATCH] [REQUESTS]
       [--profile]   (8 partitions per request, 100-byte records, acks=all)
"""

import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.kafka.wire import request_frame
from tests.unit.broker.conftest import FakeNetwork, brokers, heartbeat_answer

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.fetch import FetchHandler
from conveyor.broker.kafka.produce import ProduceHandler
from conveyor.broker.kafka.registry import Registry
from conveyor.broker.kafka.session import KafkaSession, SessionSettings
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.records import BatchBuilder
from conveyor.transport.kafka_server import ConnectionInfo

PARTS = 8
PER = int(sys.argv[1]) if len(sys.argv) > 1 else 50
N = int(sys.argv[2]) if len(sys.argv) > 2 else 400
PROFILE = "--profile" in sys.argv


class _Source:
    snapshot = None

    async def catch_up(self):
        return False


def batch():
    b = BatchBuilder()
    for _ in range(PER):
        b.append(b"x" * 100, key=b"k")
    return b.build(base_offset=0)


def produce_frame(v=9):
    req = SERVED[ApiKey.PRODUCE].request[v]
    td = req.TopicProduceData
    rec = batch()
    body = req(
        transactional_id=None,
        acks=-1,
        timeout_ms=30000,
        topic_data=[
            td(
                name="t",
                partition_data=[
                    td.PartitionProduceData(index=i, records=rec) for i in range(PARTS)
                ],
            )
        ],
    ).encode(version=v)
    return request_frame(0, v, body)[4:]


def fetch_frame(offsets, v=11):
    req = SERVED[ApiKey.FETCH].request[v]
    ft = req.FetchTopic
    body = req(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=50 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            ft(
                topic="t",
                partitions=[
                    ft.FetchPartition(
                        partition=i,
                        current_leader_epoch=-1,
                        fetch_offset=offsets[i],
                        log_start_offset=-1,
                        partition_max_bytes=1 << 20,
                    )
                    for i in range(PARTS)
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
    ).encode(version=v)
    return request_frame(1, v, body)[4:]


async def main():
    with tempfile.TemporaryDirectory() as d:
        network = FakeNetwork()
        async with brokers(Path(d), network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1] * PARTS))
            auth = Authorizer(_Source(), False)
            reg = Registry()
            reg.add(
                ApiKey.PRODUCE, ProduceHandler(broker.produce, SimpleNamespace(brokers={}), auth)
            )
            reg.add(
                ApiKey.FETCH,
                FetchHandler(broker.fetch, broker.offsets, broker.fetch_memory.release, auth),
            )
            session = KafkaSession(
                ConnectionInfo("p", "a", False, None), reg, SessionSettings(False)
            )
            pf = produce_frame()

            async def produce_n(n):
                for _ in range(n):
                    reply = await session.handle(pf)
                    reply.done()

            await produce_n(19)
            reply = await session.handle(pf)
            reply.done()
            answer = SERVED[ApiKey.PRODUCE].response[9].decode(bytes(reply.data)[5:], version=9)
            errors = {p.error_code for t in answer.responses for p in t.partition_responses}
            if errors != {0}:
                raise SystemExit(f"produce answered error codes {errors} (batch too large?)")
            prof = cProfile.Profile() if PROFILE else None
            t = time.process_time()
            if prof:
                prof.enable()
            await produce_n(N)
            if prof:
                prof.disable()
            dt = time.process_time() - t
            print(
                f"produce: {dt / N * 1e6:.0f} us/request "
                f"({PARTS} partitions x {PER} records), {dt / (N * PARTS * PER) * 1e6:.3f} us/msg"
            )
            if prof:
                pstats.Stats(prof).sort_stats(os.environ.get("SORT", "tottime")).print_stats(45)
            offsets = [0] * PARTS
            # each fetch reads 1 MiB per partition: as many whole batches as fit, at least one
            step = PER * max(1, (1 << 20) // len(batch()))
            fetches = 0
            prof = cProfile.Profile() if PROFILE else None
            t = time.process_time()
            total = 0
            if prof:
                prof.enable()
            while offsets[0] < (N + 20) * PER:
                reply = await session.handle(fetch_frame(offsets))
                total += (
                    sum(len(x) for x in reply.data)
                    if isinstance(reply.data, (list, tuple))
                    else len(reply.data)
                )
                reply.done()
                offsets = [o + step for o in offsets]
                fetches += 1
            if prof:
                prof.disable()
            dt = time.process_time() - t
            print(
                f"fetch: {dt / fetches * 1e6:.0f} us/request, "
                f"{dt / (fetches * PARTS * step) * 1e6:.3f} us/msg, {total} bytes"
            )
            if prof:
                pstats.Stats(prof).sort_stats("tottime").print_stats(20)


asyncio.run(main())
