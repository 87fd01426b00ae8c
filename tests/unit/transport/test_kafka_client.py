"""The client's Kafka connection against a scripted broker on a loopback socket, which
decodes requests and encodes answers with the listener's own codec: pipelining and its
limit, correlation ids, ApiVersions fallback, timeouts and broken answers. The real
broker is in tests/kafka/test_kafka_client.py."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conveyor.client.kafka_sender import produce_answer
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import (
    DecodedRequest,
    api_versions_error,
    decode_request,
    encode_response,
    new_request,
)
from conveyor.protocol.kafka.produce_request import encode_produce_request
from conveyor.protocol.records import encode_batch
from conveyor.transport.kafka_client import (
    KafkaClientOptions,
    KafkaConnection,
    KafkaConnections,
    split_address,
)
from tests.unit.protocol.kafka.test_produce_response import null_partitions_answer

Answer = Callable[[DecodedRequest], Awaitable[bytes | None]]


def _versions(request: DecodedRequest) -> bytes:
    response = SERVED[ApiKey.API_VERSIONS].response[request.api_version]
    ranges = [
        response.ApiVersion(api_key=k, min_version=s.min_version, max_version=s.max_version)
        for k, s in SERVED.items()
    ]
    body = response(error_code=0, api_keys=ranges)
    return encode_response(18, request.api_version, request.header.correlation_id, body)


def _metadata(request: DecodedRequest, controller_id: int = 1) -> bytes:
    body = SERVED[ApiKey.METADATA].response[request.api_version](
        brokers=[], topics=[], controller_id=controller_id
    )
    return encode_response(3, request.api_version, request.header.correlation_id, body)


class ScriptedBroker:
    """Answers ApiVersions itself and hands every other request to ``answer`` (whose
    bytes, if any, are sent back framed)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.received: list[DecodedRequest] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedBroker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks = []
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = decode_request(await reader.readexactly(size))
                self.received.append(request)
                if request.api_key == ApiKey.API_VERSIONS:
                    writer.write(_framed(_versions(request)))
                    continue
                tasks.append(asyncio.create_task(self._answer(request, writer)))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _answer(self, request: DecodedRequest, writer: asyncio.StreamWriter) -> None:
        frame = await self.answer(request)
        if frame is not None and not writer.is_closing():
            writer.write(_framed(frame))


def _framed(frame: bytes) -> bytes:
    return struct.pack(">i", len(frame)) + frame


def _metadata_request() -> Any:
    return new_request(ApiKey.METADATA, 12, topics=[], allow_auto_topic_creation=False)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_requests_are_pipelined_and_answers_matched_in_order() -> None:
    """Three requests reach the broker before it answers any; each caller gets its own
    answer (the broker tags them by controller id)."""
    arrived = asyncio.Event()

    async def answer(request: DecodedRequest) -> bytes:
        if len(broker.received) >= 4:  # ApiVersions + 3
            arrived.set()
        await arrived.wait()
        return _metadata(request, controller_id=request.header.correlation_id)

    async def scenario() -> None:
        async with ScriptedBroker(answer) as b:
            nonlocal broker
            broker = b
            connection = await KafkaConnection.open(b.address, KafkaClientOptions())
            assert connection.version(ApiKey.METADATA, 0, 12) == 12
            replies = await asyncio.gather(
                *(connection.call(ApiKey.METADATA, 12, _metadata_request()) for _ in range(3))
            )
            assert [r.controller_id for r in replies] == [1, 2, 3]
            await connection.close()

    broker: ScriptedBroker
    run(scenario)


def test_in_flight_requests_are_limited() -> None:
    waiting: list[asyncio.Future[None]] = []
    most = 0

    async def answer(request: DecodedRequest) -> bytes:
        nonlocal most
        gate = asyncio.get_running_loop().create_future()
        waiting.append(gate)
        most = max(most, sum(not g.done() for g in waiting))
        asyncio.get_running_loop().call_later(0.01, gate.set_result, None)
        await gate
        return _metadata(request)

    async def scenario() -> None:
        async with ScriptedBroker(answer) as b:
            options = KafkaClientOptions(max_in_flight=2)
            connection = await KafkaConnection.open(b.address, options)
            await asyncio.gather(
                *(connection.call(ApiKey.METADATA, 12, _metadata_request()) for _ in range(7))
            )
            assert len(waiting) == 7
            await connection.close()

    run(scenario)
    assert most == 2


def test_an_answer_its_decoder_cannot_read_breaks_the_connection() -> None:
    """A Produce answer with a null partition array: kafka-python reads it as None, and
    the producer's decoder fails on it. That used to fail the batches with a TypeError
    ("unexpected error"); now, as any broken answer, it closes the connection and the
    request fails retriably (the producer retries its batches)."""

    async def answer(request: DecodedRequest) -> bytes:
        return null_partitions_answer(request.header.correlation_id)

    async def scenario() -> None:
        async with ScriptedBroker(answer) as b:
            connection = await KafkaConnection.open(b.address, KafkaClientOptions())
            body = encode_produce_request(11, "t", 0, encode_batch([(b"k", b"v")]), -1, 5_000)
            waiting = await connection.start_call(ApiKey.PRODUCE, 11, body, decode=produce_answer)
            with pytest.raises(ConveyorError, match="unreadable answer") as broken:
                await waiting
            assert broken.value.code is ErrorCode.NETWORK_ERROR and broken.value.retriable
            assert connection.closed

    run(scenario)


def test_an_answer_out_of_order_breaks_the_connection() -> None:
    async def answer(request: DecodedRequest) -> bytes:
        body = SERVED[ApiKey.METADATA].response[12](brokers=[], topics=[])
        return encode_response(3, 12, request.header.correlation_id + 100, body)

    async def scenario() -> None:
        async with ScriptedBroker(answer) as b:
            connection = await KafkaConnection.open(b.address, KafkaClientOptions())
            calls = [connection.call(ApiKey.METADATA, 12, _metadata_request()) for _ in range(2)]
            for outcome in await asyncio.gather(*calls, return_exceptions=True):
                assert isinstance(outcome, ConveyorError)
                assert outcome.code is ErrorCode.NETWORK_ERROR and outcome.retriable
            assert connection.closed
            with pytest.raises(ConveyorError):
                await connection.call(ApiKey.METADATA, 12, _metadata_request())

    run(scenario)


def test_a_frame_above_the_limit_breaks_the_connection() -> None:
    async def answer(request: DecodedRequest) -> bytes:
        return _metadata(request) + b"\0" * 2000

    async def scenario() -> None:
        async with ScriptedBroker(answer) as b:
            options = KafkaClientOptions(max_frame_bytes=1000)
            connection = await KafkaConnection.open(b.address, options)
            with pytest.raises(ConveyorError, match="broken answer"):
                await connection.call(ApiKey.METADATA, 12, _metadata_request())

    run(scenario)


def test_a_request_without_an_answer_times_out_and_closes() -> None:
    async def answer(request: DecodedRequest) -> None:
        await asyncio.sleep(30)

    async def scenario() -> None:
        async with ScriptedBroker(answer) as b:
            connection = await KafkaConnection.open(b.address, KafkaClientOptions())
            with pytest.raises(ConveyorError) as timed_out:
                await connection.call(ApiKey.METADATA, 12, _metadata_request(), timeout_ms=50)
            assert timed_out.value.code is ErrorCode.REQUEST_TIMED_OUT
            assert connection.closed

    run(scenario)


def test_api_versions_falls_back_to_what_the_broker_offers() -> None:
    async def scenario() -> None:
        asked: list[int] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = decode_request(await reader.readexactly(size))
                asked.append(request.api_version)
                if request.api_version > 2:  # an old broker: ApiVersions v0-2
                    frame = api_versions_error(request.header.correlation_id, [(18, 0, 2)])
                else:
                    frame = _versions(request)
                writer.write(_framed(frame))

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = await KafkaConnection.open(f"127.0.0.1:{port}", KafkaClientOptions())
        assert asked == [3, 2]
        assert connection.api_range(ApiKey.PRODUCE) == (3, 11)
        with pytest.raises(ConveyorError) as unsupported:
            connection.version(ApiKey.PRODUCE, 12, 13)
        assert unsupported.value.code is ErrorCode.UNSUPPORTED_VERSION
        await connection.close()
        server.close()

    run(scenario)


def test_a_refused_connection_is_a_retriable_network_error() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pool = KafkaConnections(KafkaClientOptions(connect_timeout_ms=2000))
        with pytest.raises(ConveyorError) as refused:
            await pool.get(f"127.0.0.1:{port}")
        assert refused.value.code is ErrorCode.NETWORK_ERROR and refused.value.retriable
        await pool.close()

    run(scenario)


def test_the_pool_reuses_and_reopens_connections() -> None:
    async def answer(request: DecodedRequest) -> bytes:
        return _metadata(request)

    async def scenario() -> None:
        async with ScriptedBroker(answer) as b:
            pool = KafkaConnections(KafkaClientOptions())
            first, second = await asyncio.gather(pool.get(b.address), pool.get(b.address))
            assert first is second  # one dial for concurrent first uses
            await first.close()
            third = await pool.get(b.address)
            assert third is not first and not third.closed
            await third.call(ApiKey.METADATA, 12, _metadata_request())
            await pool.close()

    run(scenario)


def test_a_dial_whose_caller_was_cancelled_is_still_closed_with_the_pool() -> None:
    """The caller gives up (cancelled) while the shielded dial goes on and connects: the
    pool keeps the connection, and its close closes it (else it stays open, unknown)."""

    async def answer(request: DecodedRequest) -> bytes:
        return _metadata(request)

    async def scenario() -> None:
        async with ScriptedBroker(answer) as b:
            pool = KafkaConnections(KafkaClientOptions())
            caller = asyncio.create_task(pool.get(b.address))
            await asyncio.sleep(0)  # the dial has started
            (dial,) = pool._dialing.values()
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            connection = await dial  # it went on, and connected
            assert await pool.get(b.address) is connection  # kept by the pool
            await pool.close()
            assert connection.closed

    run(scenario)


@pytest.mark.parametrize("address", ["localhost", "h:0", "h:70000", ":9", "h:x"])
def test_malformed_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        split_address(address)
    assert split_address("[::1]:9092") == ("::1", 9092)
