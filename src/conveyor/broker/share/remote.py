"""What a share-partition's shell asks of other services: the share-state store (here or
on the leader of the right ``__share_state`` partition), the group's settings (from the
coordinator, cached), and the dead-letter topic (an idempotent produce, here or forwarded).

Each class takes narrow dependencies (callables, the HTTP client, the metadata cache)
rather than the broker service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

import msgspec

from conveyor.broker.share.store import StateStore
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError, outcome_unknown
from conveyor.protocol.messages import (
    BATCH_CONTENT_TYPE,
    BrokerId,
    InitProducerIdRequest,
    InitProducerIdResponse,
    TopicDescription,
)
from conveyor.protocol.partitioner import partition_for_key
from conveyor.protocol.share import (
    STATE_CONTENT_TYPE,
    STATE_TOPIC,
    ShareGroupInfo,
    StateEntry,
    StateReadRequest,
    StateReadResponse,
    StateWriteRequest,
    encode_wire,
)
from conveyor.transport.client import AsyncHTTP

log = logging.getLogger(__name__)

STATE_READ_PATH: Final = "/internal/v1/share-state/read"
STATE_WRITE_PATH: Final = "/internal/v1/share-state/write"
_ATTEMPTS_MAX: Final = 40  # about 10 s of retries while a state partition fails over
_MOVED: Final = frozenset(
    (ErrorCode.NOT_LEADER, ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.NETWORK_ERROR)
)
CONFIG_TTL_MS: Final = 5_000
T = TypeVar("T")


class Metadata(Protocol):
    async def topic(
        self, topic: str, *, auto_create: bool = False, force: bool = False
    ) -> TopicDescription | None: ...

    def leader_url(self, leader: BrokerId | None, hint: str | None = None) -> str | None: ...


def _final(error: ConveyorError, uncertain: ConveyorError | None) -> ConveyorError:
    """What a failed call raises: ``error``, or an unknown outcome when an earlier attempt
    may have been applied (pure: tested in tests/unit/broker/share/test_remote_outcome.py)."""
    if uncertain is None or outcome_unknown(error):
        return error
    return RetriableError(
        f"the outcome is unknown: an attempt may have been applied ({uncertain.message}), "
        f"then {error.code.name}: {error.message}",
        code=ErrorCode.REQUEST_TIMED_OUT,
        outcome_unknown=True,
    )


async def _leader_url(metadata: Metadata, topic: str, partition: int, force: bool) -> str:
    description = await metadata.topic(topic, force=force)
    info = None
    if description is not None:
        info = next((p for p in description.partitions if p.partition == partition), None)
    url = None if info is None else metadata.leader_url(info.leader, info.leader_url)
    if url is None:
        raise RetriableError(
            f"{topic}-{partition} has no leader serving yet", code=ErrorCode.LEADER_NOT_AVAILABLE
        )
    return url


class RoutedStateClient:
    """The share-state store of a key's ``__share_state`` partition: the local store when
    this broker leads it, else the leader over HTTP (retried while it moves)."""

    def __init__(self, store: StateStore, metadata: Metadata, http: AsyncHTTP) -> None:
        self._store = store
        self._metadata = metadata
        self._http = http

    async def partition_of(self, key: bytes) -> int:
        description = await self._metadata.topic(STATE_TOPIC)
        if description is None or not description.partitions:
            raise RetriableError(
                f"{STATE_TOPIC} does not exist yet", code=ErrorCode.LEADER_NOT_AVAILABLE
            )
        return partition_for_key(key, len(description.partitions))

    async def read(self, key: bytes, epoch: int) -> list[bytes]:
        number = await self.partition_of(key)
        request = StateReadRequest(partition=number, key=key, epoch=epoch)

        async def local() -> list[bytes]:
            return (await self._store.read(request)).values

        async def remote(url: str) -> list[bytes]:
            data = await self._post(url + STATE_READ_PATH, encode_wire(request))
            return msgspec.msgpack.decode(data, type=StateReadResponse).values

        return await self._routed(number, local, remote)

    async def write(self, key: bytes, epoch: int, entries: list[StateEntry]) -> None:
        number = await self.partition_of(key)
        request = StateWriteRequest(partition=number, key=key, epoch=epoch, entries=entries)

        async def local() -> None:
            await self._store.write(request)

        async def remote(url: str) -> None:
            await self._post(url + STATE_WRITE_PATH, encode_wire(request))

        await self._routed(number, local, remote)

    async def _post(self, url: str, body: bytes) -> bytes:
        _, _, data = await self._http.request(
            "POST", url, body=body, content_type=STATE_CONTENT_TYPE, accept=STATE_CONTENT_TYPE
        )
        return data

    async def _routed(
        self,
        number: int,
        local: Callable[[], Awaitable[T]],
        remote: Callable[[str], Awaitable[T]],
    ) -> T:
        """``local()`` when this broker leads partition ``number``, else ``remote`` at its
        leader, again while the leader moves. A write whose attempt failed in a way that
        may have applied it (``outcome_unknown``) and whose retry is then refused (a newer
        leader's fence: STALE_EPOCH) ends in an unknown outcome, never in that refusal:
        the first attempt's records may be in the log, and a writer told "refused" would
        tell its client that acknowledgements it recorded were not (chaos queue seed 411:
        an accept applied and answered refused)."""
        force = False
        uncertain: ConveyorError | None = None  # an attempt that may have been applied
        for attempt in range(_ATTEMPTS_MAX):
            try:
                hint = ""
                try:
                    return await local()
                except RetriableError as moved:
                    if moved.code is not ErrorCode.NOT_LEADER:
                        raise
                    if outcome_unknown(moved):
                        uncertain = moved
                    hint = str(moved.details.get("leader_url") or "")
                url = hint or await _leader_url(self._metadata, STATE_TOPIC, number, force)
                return await remote(url)
            except ConveyorError as exc:
                if outcome_unknown(exc):
                    uncertain = exc
                if exc.code not in _MOVED or attempt == _ATTEMPTS_MAX - 1:
                    final = _final(exc, uncertain)
                    if final is exc:
                        raise
                    raise final from exc
                log.debug("%s-%d: retrying (%s)", STATE_TOPIC, number, exc)
            force = True
            await asyncio.sleep(min(0.05 * 2**attempt, 0.5))
        raise AssertionError("unreachable")  # the loop returns or raises


@dataclass(slots=True)
class _Cached:
    info: ShareGroupInfo
    fetched_ms: int


class GroupConfigs:
    """Share groups' settings from the coordinator, cached ``CONFIG_TTL_MS`` (a member that
    knows a newer version asks for a refresh)."""

    def __init__(self, http: AsyncHTTP, coordinator_url: str, now_ms: Callable[[], int]) -> None:
        self._http = http
        self._url = coordinator_url.rstrip("/")
        self._now_ms = now_ms
        self._cache: dict[str, _Cached] = {}

    async def get(self, group: str, min_version: int = 0) -> ShareGroupInfo:
        now = self._now_ms()
        cached = self._cache.get(group)
        if (
            cached is not None
            and cached.info.version >= min_version
            and now - cached.fetched_ms < CONFIG_TTL_MS
        ):
            return cached.info
        info = await self._http.call(
            "GET", f"{self._url}/v1/share-groups/{group}/config", ShareGroupInfo
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[group] = _Cached(info, now)
        return info


class DeadLetterSink:
    """Writes dead-letter batches: the producer id from the coordinator, the topic
    (created on first use) through its leader, here or forwarded."""

    def __init__(
        self,
        *,
        http: AsyncHTTP,
        coordinator_url: str,
        metadata: Metadata,
        produce_local: Callable[[str, int, bytes], Awaitable[object]],
    ) -> None:
        self._http = http
        self._url = coordinator_url.rstrip("/")
        self._metadata = metadata
        self._produce_local = produce_local

    async def init_producer(self) -> tuple[int, int]:
        answer = await self._http.call(
            "POST", f"{self._url}/v1/producers/init", InitProducerIdResponse,
            body=InitProducerIdRequest(),
        )  # fmt: skip
        return answer.producer_id, answer.producer_epoch

    async def partition_count(self, topic: str) -> int:
        description = await self._metadata.topic(topic, auto_create=True)
        if description is None or not description.partitions:
            raise RetriableError(
                f"dead-letter topic {topic} is not available", code=ErrorCode.LEADER_NOT_AVAILABLE
            )
        return len(description.partitions)

    async def produce(self, topic: str, partition: int, batch: bytes) -> None:
        """Stored once whatever the retries: a duplicate of an earlier write is success."""
        try:
            hint = ""
            try:
                await self._produce_local(topic, partition, batch)
                return
            except RetriableError as moved:
                if moved.code is not ErrorCode.NOT_LEADER:
                    raise
                hint = str(moved.details.get("leader_url") or "")
            url = hint or await _leader_url(self._metadata, topic, partition, True)
            target = f"{url}/v1/topics/{topic}/partitions/{partition}/records?acks=all"
            await self._http.request("POST", target, body=batch, content_type=BATCH_CONTENT_TYPE)
        except ConveyorError as exc:
            if exc.code is not ErrorCode.DUPLICATE_SEQUENCE:
                raise
