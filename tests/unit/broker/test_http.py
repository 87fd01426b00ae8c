"""The HTTP adapter on a real aiohttp server (loopback) over a BrokerService on tmp_path."""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import msgspec
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from conveyor.broker.http import PARTITION_PATH, broker_routes
from conveyor.broker.service import BrokerService
from conveyor.protocol.batch import CRC_START
from conveyor.protocol.messages import (
    BATCH_CONTENT_TYPE,
    DeletedRecords,
    ErrorBody,
    FetchResponse,
    HostedPartitions,
    PartitionOffsets,
    ProduceResponse,
    RoutedProduceResponse,
)
from conveyor.protocol.records import decode_batches, encode_batch
from conveyor.transport.server import build_app, openapi_document
from tests.unit.broker.conftest import FakeNetwork, brokers, describe, heartbeat_answer

Run = Callable[[Callable[[], Awaitable[None]]], None]
RECORDS = "/v1/topics/t/partitions/0/records"


@contextlib.asynccontextmanager
async def client(tmp_path: Path, network: FakeNetwork) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with brokers(tmp_path, network) as (broker,):
        network.topics["t"] = describe("t", [1])
        await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
        app = build_app("broker", broker_routes(broker), client_max_size=4 * 1024 * 1024)
        async with TestClient(TestServer(app)) as test_client:
            yield test_client


async def error_of(response: ClientResponse, status: int, code: str) -> None:
    body = msgspec.json.decode(await response.read(), type=ErrorBody)
    assert (response.status, body.code) == (status, code), body


async def log_end(http: TestClient) -> int:  # type: ignore[type-arg]
    response = await http.get("/v1/topics/t/partitions/0/offsets")
    return msgspec.json.decode(await response.read(), type=PartitionOffsets).log_end_offset


def test_binary_round_trip_and_headers(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with client(tmp_path, network) as http:
            data = encode_batch([(b"k", b"v1"), (None, b"\xff\xfe")])
            response = await http.post(
                RECORDS, data=data, headers={"Content-Type": BATCH_CONTENT_TYPE}
            )
            assert response.status == 200, await response.text()
            produced = msgspec.json.decode(await response.read(), type=ProduceResponse)
            assert (produced.base_offset, produced.last_offset) == (0, 1)
            response = await http.get(RECORDS + "?offset=0", headers={"Accept": BATCH_CONTENT_TYPE})
            raw = await response.read()
            assert response.content_type == BATCH_CONTENT_TYPE
            assert response.headers["X-Conveyor-High-Watermark"] == "2"
            assert response.headers["X-Conveyor-Log-Start-Offset"] == "0"
            assert response.headers["X-Conveyor-Log-End-Offset"] == "2"
            assert response.headers["X-Conveyor-Leader-Epoch"] == "1"
            # As stored: the producer's bytes but for the stamped offset and epoch prefix.
            assert raw[16:] == data[16:]
            response = await http.get(RECORDS + "?offset=1")
            fetched = msgspec.json.decode(await response.read(), type=FetchResponse)
            assert [(r.offset, r.value, r.value_encoding) for r in fetched.records] == [
                (1, base64.b64encode(b"\xff\xfe").decode(), "base64")
            ]
            assert fetched.next_offset == 2 and fetched.high_watermark == 2
            response = await http.get(RECORDS + "?offset=2", headers={"Accept": BATCH_CONTENT_TYPE})
            assert response.status == 200 and await response.read() == b""
            response = await http.get(RECORDS + "?offset=2")
            empty = msgspec.json.decode(await response.read(), type=FetchResponse)
            assert empty.records == [] and empty.next_offset == 2

    run(body)


def test_json_produce_and_routing(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with client(tmp_path, network) as http:
            payload = {
                "records": [
                    {"key": "a", "value": "hello", "headers": {"h": "1"}},
                    {"value": base64.b64encode(b"\x00\x01").decode(), "value_encoding": "base64"},
                ]
            }
            response = await http.post(RECORDS + "?acks=1", json=payload)
            assert response.status == 200, await response.text()
            response = await http.post("/v1/topics/t/records", json=payload)
            routed = msgspec.json.decode(await response.read(), type=RoutedProduceResponse)
            assert [(r.partition, r.offset) for r in routed.results] == [(0, 2), (0, 3)]
            response = await http.get(RECORDS + "?offset=0", headers={"Accept": BATCH_CONTENT_TYPE})
            values = [r.value for r in decode_batches(await response.read())]
            assert values == [b"hello", b"\x00\x01"] * 2
            response = await http.get("/v1/partitions")
            hosted = msgspec.json.decode(await response.read(), type=HostedPartitions)
            assert [(p.topic, p.role, p.log_end_offset) for p in hosted.partitions] == [
                ("t", "leader", 4)
            ]

    run(body)


def test_bad_requests(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with client(tmp_path, network) as http:
            json_type = {"Content-Type": "application/json"}
            batch_type = {"Content-Type": BATCH_CONTENT_TYPE}
            corrupt = bytearray(encode_batch([(None, b"x")]))
            corrupt[CRC_START + 3] ^= 1
            big = io.BytesIO(encode_batch([(None, b"x" * 2_000_000)]))
            huge = io.BytesIO(b"x" * 5_000_000)
            post, get = http.post, http.get
            cases: list[tuple[Callable[[], Awaitable[ClientResponse]], int, str]] = [
                (lambda: post(RECORDS, data=b"{nope", headers=json_type), 400, "INVALID_REQUEST"),
                (
                    lambda: post(RECORDS, data=b"x", headers={"Content-Type": "text/plain"}),
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                ),
                (
                    lambda: post(RECORDS, data=bytes(corrupt), headers=batch_type),
                    400,
                    "CORRUPT_MESSAGE",
                ),
                (lambda: post(RECORDS, data=big, headers=batch_type), 413, "MESSAGE_TOO_LARGE"),
                (lambda: post(RECORDS, data=huge, headers=batch_type), 413, "MESSAGE_TOO_LARGE"),
                (
                    lambda: post("/v1/topics/b%20d/partitions/0/records", json={"records": []}),
                    400,
                    "INVALID_TOPIC",
                ),
                (lambda: post(RECORDS + "?acks=2", json={"records": []}), 400, "INVALID_REQUEST"),
                (
                    lambda: post(
                        RECORDS, json={"records": [{"value": "%", "value_encoding": "base64"}]}
                    ),
                    400,
                    "INVALID_REQUEST",
                ),
                (lambda: get(RECORDS + "?offset=-1"), 400, "INVALID_REQUEST"),
                (lambda: get(RECORDS + "?offset=abc"), 400, "INVALID_REQUEST"),
                (lambda: get(RECORDS), 400, "INVALID_REQUEST"),
                (lambda: get(RECORDS + "?offset=9"), 416, "OFFSET_OUT_OF_RANGE"),
                (
                    lambda: get("/v1/topics/nope/partitions/0/records?offset=0"),
                    404,
                    "UNKNOWN_TOPIC",
                ),
                (
                    lambda: get("/v1/topics/t/partitions/3/records?offset=0"),
                    404,
                    "UNKNOWN_PARTITION",
                ),
                (
                    lambda: get("/v1/topics/t/partitions/-1/records?offset=0"),
                    404,
                    "UNKNOWN_PARTITION",
                ),
                (
                    lambda: post("/v1/topics/t/records", data=b"x", headers=batch_type),
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                ),
            ]
            for request, status, code in cases:
                await error_of(await request(), status, code)
            assert await log_end(http) == 0

    run(body)


def test_openapi_document_lists_the_routes() -> None:
    routes = broker_routes(cast(BrokerService, None))
    paths = openapi_document("broker", routes)["paths"]
    assert {PARTITION_PATH + "/records", PARTITION_PATH + "/offsets", "/v1/partitions"} <= set(
        paths
    )
    assert {"get", "post", "delete"} <= set(paths[PARTITION_PATH + "/records"])


def test_delete_records(tmp_path: Path, network: FakeNetwork, run: Run) -> None:
    async def body() -> None:
        async with client(tmp_path, network) as http:
            batch_type = {"Content-Type": BATCH_CONTENT_TYPE}
            for _ in range(3):
                data = encode_batch([(None, b"a"), (None, b"b")])
                assert (await http.post(RECORDS, data=data, headers=batch_type)).status == 200
            response = await http.delete(RECORDS + "?before_offset=3")
            assert response.status == 200, await response.text()
            deleted = msgspec.json.decode(await response.read(), type=DeletedRecords)
            assert (deleted.topic, deleted.partition, deleted.low_watermark) == ("t", 0, 3)
            # the batch holding 3 comes whole; the JSON form skips the records below
            response = await http.get(RECORDS + "?offset=3")
            fetched = msgspec.json.decode(await response.read(), type=FetchResponse)
            assert fetched.log_start_offset == 3
            assert [r.offset for r in fetched.records] == [3, 4, 5]
            await error_of(await http.get(RECORDS + "?offset=2"), 416, "OFFSET_OUT_OF_RANGE")
            for query, status, code in [
                ("", 400, "INVALID_REQUEST"),
                ("?before_offset=x", 400, "INVALID_REQUEST"),
                ("?before_offset=7", 416, "OFFSET_OUT_OF_RANGE"),
                ("?before_offset=-5", 416, "OFFSET_OUT_OF_RANGE"),
            ]:
                await error_of(await http.delete(RECORDS + query), status, code)
            response = await http.delete(RECORDS + "?before_offset=-1")
            assert (
                msgspec.json.decode(await response.read(), type=DeletedRecords).low_watermark == 6
            )
            response = await http.delete("/v1/topics/t/partitions/9/records?before_offset=0")
            await error_of(response, 404, "UNKNOWN_PARTITION")

    run(body)
