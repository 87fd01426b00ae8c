"""The plaintext replica transport reads whole frames however the bytes arrive: in one
segment with the next frame behind it, or a byte at a time with pauses (the bytes the
socket holds are taken at once, the rest waited for), on uvloop (the services' loop) and
asyncio's own."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from conveyor.transport.framed import SIZE, FrameTooLargeError, SocketConnection

LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "uvloop": uvloop.run,
    "asyncio": asyncio.run,
}


def frame(body: bytes) -> bytes:
    return SIZE.pack(len(body)) + body


async def _write(sock: socket.socket, data: bytes, piece: int, pause_s: float) -> None:
    loop = asyncio.get_running_loop()
    for start in range(0, len(data), piece):
        await loop.sock_sendall(sock, data[start : start + piece])
        await asyncio.sleep(pause_s)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    ("size", "piece", "pause_s"),
    [(2048, 1 << 20, 0.0), (2048, 1, 0.0), (2048, 7, 0.001), (1 << 20, 1 << 16, 0.0)],
)
def test_frames_are_read_whole_however_they_arrive(
    loop: str, size: int, piece: int, pause_s: float
) -> None:
    bodies = [b"", b"x", bytes(range(256)) * (size // 256), b"last"]

    async def run() -> list[bytes]:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        connection = SocketConnection(ours)
        try:
            writer = asyncio.ensure_future(
                _write(theirs, b"".join(frame(b) for b in bodies), piece, pause_s)
            )
            got = [bytes(await connection.read_frame(1 << 20)) for _ in bodies]
            await writer
            return got
        finally:
            connection.close()
            theirs.close()

    assert LOOPS[loop](run()) == bodies


@pytest.mark.parametrize("loop", LOOPS)
def test_an_end_mid_frame_and_a_frame_too_large_are_errors(loop: str) -> None:
    async def run() -> None:
        ours, theirs = socket.socketpair()
        connection = SocketConnection(ours)
        try:
            theirs.sendall(frame(b"whole") + SIZE.pack(10) + b"part")
            theirs.close()
            assert bytes(await connection.read_frame(100)) == b"whole"
            with pytest.raises(asyncio.IncompleteReadError):
                await connection.read_frame(100)
        finally:
            connection.close()
        ours, theirs = socket.socketpair()
        connection = SocketConnection(ours)
        try:
            theirs.sendall(SIZE.pack(101))
            with pytest.raises(FrameTooLargeError):
                await connection.read_frame(100)
        finally:
            connection.close()
            theirs.close()

    LOOPS[loop](run())
