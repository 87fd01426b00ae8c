"""The Kafka listener started but not yet serving (a broker before its registration): the
port is taken and listening, a client's request waits, and is answered once it serves."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Awaitable, Callable

import pytest

from conveyor.transport.kafka_server import (
    ConnectionInfo,
    FrameSession,
    KafkaListener,
    KafkaListenerSettings,
    Reply,
)
from conveyor.transport.runner import new_event_loop


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
