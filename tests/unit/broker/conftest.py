"""Brokers on real PartitionLogs in tmp_path, with an in-memory stand-in for the network:
``FakeNetwork`` answers the coordinator's metadata lookups from a table and delivers
forwarded produces straight to the other BrokerService, so no sockets are opened."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from conveyor.broker.config import BrokerConfig
from conveyor.broker.service import BrokerService
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    BrokerId,
    BrokerInfo,
    Epoch,
    HeartbeatResponse,
    JsonProduceRequest,
    Metadata,
    PartitionInfo,
    ReplicaAssignment,
    TopicConfig,
    TopicDescription,
)
from conveyor.transport.client import AsyncHTTP

T = TypeVar("T")
COORDINATOR = "http://coordinator.test"


def url_of(broker_id: int) -> str:
    return f"http://broker-{broker_id}.test"


class FakeNetwork(AsyncHTTP):
    def __init__(self) -> None:
        super().__init__()
        self.topics: dict[str, TopicDescription] = {}
        self.services: dict[str, BrokerService] = {}
        self.reachable = True
        self.metadata_lookups = 0

    async def call(
        self,
        method: str,
        url: str,
        response_type: type[T],
        body: msgspec.Struct | dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> T:
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        is_metadata = base == COORDINATOR and parts.path == "/v1/metadata"
        self.metadata_lookups += is_metadata
        if not self.reachable:
            raise RetriableError(f"{method} {url}: unreachable", code=ErrorCode.NETWORK_ERROR)
        if is_metadata:
            name = query["topics"]
            if name not in self.topics:
                raise InvalidRequestError("unknown topic", code=ErrorCode.UNKNOWN_TOPIC)
            brokers = [BrokerInfo(broker_id=BrokerId(i), url=url_of(i)) for i in (1, 2, 3)]
            answer = Metadata(cluster_id="c", brokers=brokers, topics=[self.topics[name]])
            return cast(T, answer)
        target = self.services.get(base)
        if target is None:
            raise RetriableError(f"no route to {base}", code=ErrorCode.NETWORK_ERROR)
        segments = parts.path.split("/")  # /v1/topics/T/partitions/P/records
        assert isinstance(body, JsonProduceRequest)
        return cast(
            T,
            await target.produce_json(
                segments[3],
                int(segments[5]),
                body,
                acks=query.get("acks", "all"),  # type: ignore[arg-type]
                timeout_ms=int(query.get("timeout_ms", "30000")),
            ),
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout_s: float | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Raw requests (replica fetches between brokers) have no route here."""
        raise RetriableError(
            f"{method} {url}: no route (FakeNetwork)", code=ErrorCode.NETWORK_ERROR
        )

    async def close(self) -> None:
        return None


def describe(topic: str, leaders: list[int], epoch: int = 1) -> TopicDescription:
    return TopicDescription(
        name=topic,
        partitions=[
            PartitionInfo(
                partition=p,
                leader=BrokerId(leader),
                leader_epoch=Epoch(epoch),
                replicas=[BrokerId(leader)],
                isr=[BrokerId(leader)],
                leader_url=url_of(leader),
            )
            for p, leader in enumerate(leaders)
        ],
        replication_factor=1,
        config=TopicConfig(),
    )


def heartbeat_answer(
    broker_id: int,
    topic: str,
    leaders: list[int],
    *,
    epoch: int = 1,
    replicas: dict[int, list[int]] | None = None,
    isr: dict[int, list[int]] | None = None,
    config: TopicConfig | None = None,
) -> HeartbeatResponse:
    """The coordinator's answer to ``broker_id`` for one topic whose partition p is led by
    ``leaders[p]`` (RF 1 unless ``replicas`` says otherwise)."""
    assignments = []
    for p, leader in enumerate(leaders):
        peers = (replicas or {}).get(p, [leader])
        if broker_id not in peers:
            continue
        assignments.append(
            ReplicaAssignment(
                topic=topic,
                partition=p,
                leader=BrokerId(leader),
                leader_epoch=Epoch(epoch),
                replicas=[BrokerId(b) for b in peers],
                isr=[BrokerId(b) for b in (isr or {}).get(p, peers)],
            )
        )
    return HeartbeatResponse(
        cluster_id="c",
        assignments=assignments,
        topic_configs={topic: config or TopicConfig()},
        brokers=[BrokerInfo(broker_id=BrokerId(i), url=url_of(i)) for i in (1, 2, 3)],
    )


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def run() -> Iterator[Callable[[Callable[[], Awaitable[None]]], None]]:
    """Run an async test body on a fresh loop (pytest-asyncio is not a dependency)."""

    def runner(body: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            await body()

        asyncio.run(main())

    yield runner


@contextlib.asynccontextmanager
async def brokers(
    tmp_path: Path, network: FakeNetwork, *ids: int, **config: Any
) -> AsyncIterator[list[BrokerService]]:
    """Start BrokerServices (data in ``tmp_path/broker-N``) and close them all at the end;
    ``clock=`` gives them a manual clock."""
    started: list[BrokerService] = []
    clock = config.pop("clock", None)
    try:
        for broker_id in ids or (1,):
            service = BrokerService(
                BrokerConfig(
                    broker_id=BrokerId(broker_id),
                    data_dir=tmp_path / f"broker-{broker_id}",
                    advertised_url=url_of(broker_id),
                    coordinator_url=COORDINATOR,
                    **config,
                ),
                http=network,
                clock=clock,
            )
            service.check_data_dir()
            await service.start()
            network.services[url_of(broker_id)] = service
            started.append(service)
        yield started
    finally:
        for service in started:
            network.services.pop(url_of(service.broker_id), None)
            await service.close()
