"""BrokerService against real PartitionLogs in tmp_path; the network is FakeNetwork."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conveyor.broker.reconcile import TopicPartition
from conveyor.protocol.batch import CRC_START
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.messages import JsonProduceRequest, JsonRecord, TopicConfig
from conveyor.protocol.partitioner import partition_for_key
from conveyor.protocol.records import decode_batches, encode_batch
from conveyor.storage import FlushPolicy
from tests.unit.broker.conftest import FakeNetwork, brokers, describe, heartbeat_answer, url_of

Run = Callable[[Callable[[], Awaitable[None]]], None]


def batch(*values: bytes, key: bytes | None = None) -> bytes:
    return encode_batch([(key, v) for v in values], timestamp_ms=1_700_000_000_000)


async def expect(code: ErrorCode, call: Awaitable[object]) -> ConveyorError:
    with pytest.raises(ConveyorError) as caught:
        await call
    assert caught.value.code is code, caught.value
    return caught.value


def test_produce_then_fetch_whole_batches(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1], epoch=3))
            first = await broker.produce("t", 0, batch(b"a", b"b"), acks="all")
            second = await broker.produce("t", 0, batch(b"c") + batch(b"d"), acks="all")
            assert (first.base_offset, first.last_offset, first.leader_epoch) == (0, 1, 3)
            assert (second.base_offset, second.last_offset) == (2, 3)
            result = await broker.fetch("t", 0, 1)
            assert [r.value for r in decode_batches(result.batches)] == [b"a", b"b", b"c", b"d"]
            assert result.batches == broker.replicas.logs[TopicPartition("t", 0)].read(0, 1 << 20)
            assert (result.log_start_offset, result.log_end_offset) == (0, 4)
            assert result.high_watermark == 4 and result.leader_epoch == 3

    run(body)


def test_json_produce_utf8_and_base64(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            request = JsonProduceRequest(
                records=[
                    JsonRecord(key="k", value="text"),
                    JsonRecord(value="AAEC/w==", value_encoding="base64"),
                ]
            )
            answer = await broker.produce_json("t", 0, request)
            assert (answer.base_offset, answer.last_offset) == (0, 1)
            result = await broker.fetch("t", 0, 0)
            got = [(r.key, r.value) for r in decode_batches(result.batches)]
            assert got == [(b"k", b"text"), (None, b"\x00\x01\x02\xff")]

    run(body)


def test_bad_input_writes_nothing(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            config = TopicConfig(max_message_bytes=1024)
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1], config=config))
            await broker.produce("t", 0, batch(b"x"))
            corrupt = bytearray(batch(b"hello"))
            corrupt[CRC_START + 5] ^= 0xFF
            await expect(ErrorCode.CORRUPT_MESSAGE, broker.produce("t", 0, bytes(corrupt)))
            await expect(ErrorCode.CORRUPT_MESSAGE, broker.produce("t", 0, batch(b"ok") + b"junk"))
            await expect(ErrorCode.MESSAGE_TOO_LARGE, broker.produce("t", 0, batch(b"x" * 2000)))
            await expect(ErrorCode.INVALID_TOPIC, broker.produce("bad/name", 0, batch(b"x")))
            bad_json = JsonProduceRequest(records=[JsonRecord(value="!", value_encoding="base64")])
            await expect(ErrorCode.INVALID_REQUEST, broker.produce_json("t", 0, bad_json))
            await expect(ErrorCode.INVALID_REQUEST, broker.fetch("t", 0, -1))
            error = await expect(ErrorCode.OFFSET_OUT_OF_RANGE, broker.fetch("t", 0, 5))
            assert error.details == {"offset": 5, "log_start_offset": 0, "log_end_offset": 1}
            assert broker.replicas.logs[TopicPartition("t", 0)].log_end_offset == 1

    run(body)


def test_unknown_topic_partition_and_not_leader(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    async def body() -> None:
        network.topics["t"] = describe("t", [1, 2], epoch=4)
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1, 2], epoch=4))
            await expect(ErrorCode.UNKNOWN_TOPIC, broker.produce("nope", 0, batch(b"x")))
            await expect(ErrorCode.UNKNOWN_PARTITION, broker.fetch("t", 7, 0))
            error = await expect(ErrorCode.NOT_LEADER, broker.produce("t", 1, batch(b"x")))
            assert error.details["leader"] == 2
            assert error.details["leader_url"] == url_of(2)
            assert error.details["leader_epoch"] == 4
            # Repeated lookups of an unknown topic cost the coordinator one per second.
            lookups = network.metadata_lookups
            for _ in range(5):
                await expect(ErrorCode.UNKNOWN_TOPIC, broker.fetch("nope", 0, 0))
            assert network.metadata_lookups == lookups

    run(body)


def test_not_leader_from_heartbeat_when_coordinator_down(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            answer = heartbeat_answer(1, "t", [2], replicas={0: [2, 1]})
            await broker.apply_heartbeat_response(answer)
            network.reachable = False
            error = await expect(ErrorCode.NOT_LEADER, broker.produce("t", 0, batch(b"x")))
            assert error.details["leader"] == 2 and error.details["leader_url"] == url_of(2)
            error = await expect(ErrorCode.NOT_LEADER, broker.produce("other", 0, batch(b"x")))
            assert "leader" not in error.details

    run(body)


def test_acks_all_needs_min_insync(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            answer = heartbeat_answer(1, "t", [1], replicas={0: [1, 2, 3]}, isr={0: [1]})
            await broker.apply_heartbeat_response(answer)
            await expect(ErrorCode.NOT_ENOUGH_REPLICAS, broker.produce("t", 0, batch(b"x")))
            assert broker.replicas.logs[TopicPartition("t", 0)].log_end_offset == 0
            await broker.produce("t", 0, batch(b"x"), acks="1")

    run(body)


def test_leader_epoch_fencing(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1], epoch=5))
            await expect(ErrorCode.STALE_EPOCH, broker.produce("t", 0, batch(b"x"), leader_epoch=4))
            await expect(ErrorCode.LEADER_NOT_AVAILABLE, broker.fetch("t", 0, 0, leader_epoch=6))
            await broker.produce("t", 0, batch(b"x"), leader_epoch=5)

    run(body)


def test_long_poll_returns_when_data_lands(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            started = time.monotonic()
            waiting = asyncio.create_task(broker.fetch("t", 0, 0, max_wait_ms=20_000))
            await asyncio.sleep(0)  # let the fetch find nothing and wait
            assert not waiting.done()
            await broker.produce("t", 0, batch(b"late"), acks="1")
            result = await asyncio.wait_for(waiting, 10)
            assert [r.value for r in decode_batches(result.batches)] == [b"late"]
            assert time.monotonic() - started < 10

    run(body)


def test_long_poll_times_out_empty_and_shutdown_wakes(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            assert (await broker.fetch("t", 0, 0, max_wait_ms=20)).batches == b""
            waiting = asyncio.create_task(broker.fetch("t", 0, 0, max_wait_ms=20_000))
            await asyncio.sleep(0)
            broker.begin_shutdown()
            assert (await asyncio.wait_for(waiting, 10)).batches == b""

    run(body)


def test_interval_flush_and_high_watermark(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        flush = FlushPolicy("interval", 10_000)
        async with brokers(tmp_path, network, flush_override=flush) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            await broker.produce("t", 0, batch(b"a"), acks="all")
            offsets = await broker.offsets("t", 0, timestamp_ms=0)
            assert (offsets.high_watermark, offsets.log_end_offset) == (1, 1)
            assert offsets.offset_for_timestamp == 0

    run(body)


def test_restart_keeps_data_and_reopens_before_heartbeat(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1, 1]))
            await broker.produce("t", 1, batch(b"kept"))
        async with brokers(tmp_path, network) as (broker,):
            hosted = broker.hosted().partitions
            assert [(p.topic, p.partition, p.role, p.log_end_offset) for p in hosted] == [
                ("t", 0, "follower", 0),
                ("t", 1, "follower", 1),
            ]
            # Role unknown until the coordinator answers; it says broker 1: not yet, retry.
            network.topics["t"] = describe("t", [1, 1])
            await expect(ErrorCode.LEADER_NOT_AVAILABLE, broker.fetch("t", 1, 0))
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1, 1]))
            result = await broker.fetch("t", 1, 0)
            assert [r.value for r in decode_batches(result.batches)] == [b"kept"]

    run(body)


def test_reassignment_deletes_and_config_change_reopens(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1, 1]))
            await broker.produce("t", 0, batch(b"x"))
            config = TopicConfig(segment_bytes=4096)
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1, 2], config=config))
            assert not (tmp_path / "broker-1" / "t-1").exists()
            partition_log = broker.replicas.logs[TopicPartition("t", 0)]
            assert partition_log.config.segment_bytes_max == 4096
            assert (await broker.fetch("t", 0, 0)).batches != b""
            await broker.produce("t", 0, batch(b"y"))

    run(body)


def test_other_cluster_is_refused(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            assert await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
        async with brokers(tmp_path, network) as (broker,):
            answer = heartbeat_answer(1, "t", [])
            answer.cluster_id = "another"
            assert not await broker.apply_heartbeat_response(answer)
            assert (tmp_path / "broker-1" / "t-0").exists()

    run(body)


def test_routing_spreads_by_key_and_forwards(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    async def body() -> None:
        leaders = [1, 2, 1, 2]
        network.topics["t"] = describe("t", leaders)
        async with brokers(tmp_path, network, 1, 2) as (one, two):
            await one.apply_heartbeat_response(heartbeat_answer(1, "t", leaders))
            await two.apply_heartbeat_response(heartbeat_answer(2, "t", leaders))
            keys = [f"key-{i}" for i in range(12)]
            request = JsonProduceRequest(records=[JsonRecord(key=k, value=k) for k in keys])
            answer = await one.route_json("t", request)
            expected = [partition_for_key(k.encode(), 4) for k in keys]
            assert [r.partition for r in answer.results] == expected
            assert all(r.error is None for r in answer.results)
            for p, leader in enumerate(leaders):
                owner = one if leader == 1 else two
                data = (await owner.fetch("t", p, 0)).batches
                got = [(r.offset, (r.key or b"").decode()) for r in decode_batches(data)]
                want = [
                    (r.offset, keys[i]) for i, r in enumerate(answer.results) if r.partition == p
                ]
                assert got == want

    run(body)


def test_routing_unknown_topic(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            request = JsonProduceRequest(records=[JsonRecord(value="x")])
            await expect(ErrorCode.UNKNOWN_TOPIC, broker.route_json("nope", request))

    run(body)


def test_metadata_outage_is_rate_limited_and_serves_stale(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    async def body() -> None:
        network.topics["t"] = describe("t", [2])
        async with brokers(tmp_path, network) as (broker,):
            assert await broker.metadata.topic("t") is not None
            network.reachable = False
            lookups = network.metadata_lookups
            for _ in range(5):
                error = await expect(ErrorCode.NOT_LEADER, broker.produce("u", 0, batch(b"x")))
                assert "leader" not in error.details
            assert network.metadata_lookups == lookups + 1  # one failed lookup, remembered
            error = await expect(ErrorCode.NOT_LEADER, broker.produce("t", 0, batch(b"x")))
            assert error.details["leader_url"] == url_of(2)  # from the cached entry

    run(body)
