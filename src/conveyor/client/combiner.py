"""Produce requests shared by the batches of one topic ready at the same moment.

The sender starts one task per ready batch. Those started in the same pass of the event
loop, bound for the same leader and topic, go out as one multi-partition request
(``POST /v1/topics/{topic}/batches``, see ``protocol.framing``), as Kafka's producer sends
one ``ProduceRequest`` per broker: with many partitions and small batches the broker's
cost per request, not per record, is what limits latency (docs/benchmarks.md, W4). A
batch alone takes the single-partition route. Each batch still gets its own outcome (its
partition's offsets or error), so the sender's retries stay per batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final

import msgspec

from conveyor.protocol.errors import ConveyorError, error_from_dict
from conveyor.protocol.framing import encode_produce_many
from conveyor.protocol.messages import (
    BATCH_CONTENT_TYPE,
    FRAMED_PRODUCE_CONTENT_TYPE,
    ProduceManyResponse,
    ProduceResponse,
)
from conveyor.transport.client import AsyncHTTP

# A combined request stays under 1 MiB (aiohttp warns about larger bytes bodies, and the
# broker's request limit is 16 MiB): past it the next batches start another request.
COMBINED_BYTES_MAX: Final = 1024 * 1024 - 64 * 1024  # the rest for the JSON header
PARTS_PER_REQUEST_MAX: Final = 1000  # ~40 header bytes each: well inside the 64 KiB
_SINGLE: Final = msgspec.json.Decoder(ProduceResponse)
_MANY: Final = msgspec.json.Decoder(ProduceManyResponse)


@dataclass(slots=True)
class _Pending:
    parts: list[tuple[int, bytes]] = field(default_factory=list)
    futures: list[asyncio.Future[int]] = field(default_factory=list)
    size: int = 0


class ProduceCombiner:
    def __init__(self, http: AsyncHTTP, query: str, timeout_s: float) -> None:
        self._http = http
        self._query = query  # "acks=...&timeout_ms=..."
        self._timeout_s = timeout_s
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._requests: set[asyncio.Task[None]] = set()

    async def produce(self, leader_url: str, topic: str, partition: int, payload: bytes) -> int:
        """Send one batch (with whatever else is ready for this leader and topic); its
        base offset, or its partition's error raised as a ``ConveyorError``."""
        loop = asyncio.get_running_loop()
        key = (leader_url, topic)
        pending = self._pending.get(key)
        if (
            pending is None
            or pending.size + len(payload) > COMBINED_BYTES_MAX
            or len(pending.parts) >= PARTS_PER_REQUEST_MAX
            or any(p == partition for p, _ in pending.parts)
        ):
            pending = self._pending[key] = _Pending()
            loop.call_soon(self._flush, key, pending)
        future: asyncio.Future[int] = loop.create_future()
        pending.size += len(payload)
        pending.parts.append((partition, payload))
        pending.futures.append(future)
        return await future

    def _flush(self, key: tuple[str, str], pending: _Pending) -> None:
        if self._pending.get(key) is pending:
            del self._pending[key]
        task = asyncio.ensure_future(self._send(key, pending))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _send(self, key: tuple[str, str], pending: _Pending) -> None:
        leader_url, topic = key
        try:
            outcomes = await self._request(leader_url, topic, pending.parts)
        except ConveyorError as exc:  # the whole request failed (network, auth, ...)
            outcomes = [exc] * len(pending.parts)
        except Exception as exc:  # a bug or an unexpected reply: each batch fails with it
            outcomes = [exc] * len(pending.parts)
        for future, outcome in zip(pending.futures, outcomes, strict=True):
            if future.done():
                continue  # its sender task was cancelled (the producer closed)
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _request(
        self, leader_url: str, topic: str, parts: list[tuple[int, bytes]]
    ) -> list[int | BaseException]:
        timeout_s = self._timeout_s
        if len(parts) == 1:
            partition, payload = parts[0]
            url = f"{leader_url}/v1/topics/{topic}/partitions/{partition}/records?{self._query}"
            _, _, body = await self._http.request(
                "POST", url, body=payload, content_type=BATCH_CONTENT_TYPE, timeout_s=timeout_s
            )
            return [_single_offset(body)]
        url = f"{leader_url}/v1/topics/{topic}/batches?{self._query}"
        _, _, body = await self._http.request(
            "POST",
            url,
            body=encode_produce_many(parts),
            content_type=FRAMED_PRODUCE_CONTENT_TYPE,
            timeout_s=timeout_s,
        )
        try:
            answer = _MANY.decode(body)
        except msgspec.DecodeError as exc:  # a broker bug: do not resend the batches
            raise ConveyorError(f"bad produce response: {exc}") from exc
        if [r.partition for r in answer.partitions] != [p for p, _ in parts]:
            raise ConveyorError("bad produce response: partitions do not match the request")
        return [
            r.base_offset if r.error is None else error_from_dict(msgspec.structs.asdict(r.error))
            for r in answer.partitions
        ]


def _single_offset(body: bytes) -> int:
    if not body:
        return -1
    try:
        return _SINGLE.decode(body).base_offset
    except msgspec.DecodeError as exc:  # a broker bug: do not resend the batch
        raise ConveyorError(f"bad produce response: {exc}") from exc
