"""The Kafka listener started but not yet serving (a broker before its registration): the
port is taken and listening, a client's request waits, and is answered once it serves."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from conveyor.transport.kafka_server import (
    ConnectionInfo,
    FrameSession,
    KafkaListener,
    KafkaListenerSettings,
    Reply,
)
from conveyor.transport.limits import ConnectionLimits
from conveyor.transport.runner import new_event_loop
from tests.waiting import wait_for_async


class Echo:
    """Answers every frame with itself."""

    async def _answer(self, frame: bytes) -> Reply:
        return Reply(frame)

    def handle(self, frame: bytes) -> Awaitable[Reply | None]:
        return self._answer(frame)

    def closed(self) -> None:
        pass


def echo(_: ConnectionInfo) -> FrameSession:
    return Echo()


FRAME = b"a request of 24 bytes..."  # at least a request header's 10 bytes
SIZED = struct.pack(">i", len(FRAME)) + FRAME


def _ask(port: int, answered: Callable[[socket.socket], None]) -> bytes:
    """Connect, send one frame, let ``answered`` act, then read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(SIZED)
        answered(client)
        return _read_answer(client)


def _read_answer(client: socket.socket) -> bytes:
    """The echoed frame, or what came of it before the connection closed."""
    data = b""
    while len(data) < len(SIZED):
        chunk = client.recv(len(SIZED) - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_a_listener_not_serving_holds_requests_until_it_serves() -> None:
    loop = new_event_loop()  # uvloop, as the services run
    checked = threading.Event()

    def nothing_yet(client: socket.socket) -> None:
        client.settimeout(0.3)  # a bound on a negative: no answer before serve()
        with pytest.raises(TimeoutError):
            client.recv(1)
        client.settimeout(10)
        checked.set()

    async def main() -> bytes:
        listener = KafkaListener(KafkaListenerSettings("127.0.0.1", 0), echo)
        await listener.start(serving=False)
        port = listener.port
        taken = KafkaListener(KafkaListenerSettings("127.0.0.1", port), echo)
        with pytest.raises(OSError):  # listening already: the port is in use
            await taken.start(serving=False)
        asking = asyncio.ensure_future(asyncio.to_thread(_ask, port, nothing_yet))
        try:
            await asyncio.to_thread(checked.wait, 30)
            await listener.serve()
            return await asking
        finally:
            await listener.close()

    try:
        assert loop.run_until_complete(main()) == SIZED
        assert checked.is_set()
    finally:
        loop.close()


def _exchange(client: socket.socket) -> bytes:
    client.sendall(SIZED)
    return _read_answer(client)


def test_a_connection_is_closed_after_idle_timeout_without_a_frame_not_before() -> None:
    """Frames more often than the idle timeout keep a connection open past it (the idle
    timer re-arms from the last frame); silence for the timeout closes it."""
    loop = new_event_loop()
    idle_s = 2.0
    settings = KafkaListenerSettings(
        "127.0.0.1", 0, limits=ConnectionLimits(idle_timeout_ms=int(idle_s * 1000))
    )

    def client(port: int) -> tuple[list[bytes], float, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            started = time.monotonic()
            answers = []
            while time.monotonic() - started < 1.5 * idle_s:  # busy past one timeout
                answers.append(_exchange(conn))
                time.sleep(idle_s / 8)  # pacing, well inside the timeout
            quiet = time.monotonic()
            closed = conn.recv(1)  # b"" once the listener closes the idle connection
            return answers, time.monotonic() - quiet, closed

    async def main() -> tuple[list[bytes], float, bytes, int]:
        listener = KafkaListener(settings, echo)
        await listener.start()
        try:
            answers, waited_s, closed = await asyncio.to_thread(client, listener.port)
            return answers, waited_s, closed, listener.stats.idle_closed
        finally:
            await listener.close()

    try:
        answers, waited_s, closed, idle_closed = loop.run_until_complete(main())
    finally:
        loop.close()
    assert answers and all(answer == SIZED for answer in answers)
    assert closed == b""
    assert idle_closed == 1
    assert waited_s >= idle_s * 0.5  # closed for its silence, not at once


def test_requests_in_flight_counts_every_read_request_until_its_answer_is_ready() -> None:
    """The broker's backlog (a flush round runs inline only when one request is all there
    is, storage/flusher.py): two frames sent together are both counted before either is
    answered, and the count is back to 0 once they are."""
    loop = new_event_loop()
    seen: list[int] = []
    holder: list[KafkaListener] = []

    class Counting(Echo):
        async def _answer(self, frame: bytes) -> Reply:
            seen.append(holder[0].stats.requests_in_flight)
            return Reply(frame)

    def client(port: int) -> list[bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(SIZED + SIZED)  # one segment on loopback: read together
            first = _read_answer(conn)
            return [first, _read_answer(conn), _exchange(conn)]

    async def main() -> list[bytes]:
        listener = KafkaListener(KafkaListenerSettings("127.0.0.1", 0), lambda _: Counting())
        holder.append(listener)
        await listener.start()
        try:
            answers = await asyncio.to_thread(client, listener.port)
            # the last answer's done callback runs a loop pass after it is written
            await wait_for_async(
                lambda: listener.stats.requests_in_flight == 0, 10, "the count back to 0"
            )
            return answers
        finally:
            await listener.close()

    try:
        assert loop.run_until_complete(main()) == [SIZED] * 3
    finally:
        loop.close()
    assert seen[0] == 2  # both read before the first answer ran
    assert seen[2] == 1  # the third, alone
