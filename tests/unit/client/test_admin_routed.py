"""The default Admin transport's routing table, and that each call follows it."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from conveyor.client.admin_routed import ROUTES, RoutedAdmin, with_leader_urls
from conveyor.client.admin_transport import AdminTransport
from conveyor.protocol.messages import BrokerId, Epoch, PartitionInfo, TopicConfig, TopicDescription

ARGS: dict[str, tuple[Any, ...]] = {
    "create_topic": ("t", 1, 1, None),
    "list_topics": (),
    "describe_topic": ("t",),
    "delete_topic": ("t",),
    "add_partitions": ("t", 2),
    "alter_topic_config": ("t", {}, []),
    "cluster": (),
    "decommission": (1, False),
    "delete_records": ({}, 1000),
    "list_groups": (),
    "describe_group": ("g",),
    "delete_group": ("g",),
    "reset_offsets": ("g", "t", 0, None),
}


class _Recorder:
    """Stands for one side: records which operations it was sent."""

    def __init__(self) -> None:
        self.url = "http://c"
        self.sent: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any) -> Any:
            self.sent.append(name)
            return TopicDescription(
                name="t", partitions=[], replication_factor=1, config=TopicConfig()
            )

        return call


def test_every_operation_has_a_route() -> None:
    operations = {
        name
        for name, _ in inspect.getmembers(AdminTransport, inspect.isfunction)
        if not name.startswith("_") and name != "close"
    }
    assert set(ROUTES) == operations == set(ARGS)
    # the data path's reads go to the brokers; what the coordinator decides, to it
    assert {op for op, route in ROUTES.items() if route == "kafka"} == {"describe_topic"}


def test_each_call_goes_where_its_route_says() -> None:
    for operation, route in ROUTES.items():
        coordinator, brokers = _Recorder(), _Recorder()
        routed = RoutedAdmin(coordinator, brokers)  # type: ignore[arg-type]
        asyncio.run(getattr(routed, operation)(*ARGS[operation]))
        if route == "kafka":
            assert (coordinator.sent, brokers.sent) == ([], [operation])
        else:
            assert coordinator.sent == [operation], operation
            # a topic created or grown is answered once the brokers' Metadata has it
            settles = operation in ("create_topic", "add_partitions")
            assert brokers.sent == (["settled"] if settles else []), operation


def test_leader_urls_are_the_brokers_rest_urls() -> None:
    def partition(number: int, leader: int | None) -> PartitionInfo:
        return PartitionInfo(
            partition=number,
            leader=None if leader is None else BrokerId(leader),
            leader_epoch=Epoch(0),
            replicas=[],
            isr=[],
            leader_url="127.0.0.1:9092",  # Kafka's Metadata: a Kafka address
        )

    described = TopicDescription(
        name="t",
        partitions=[partition(0, 1), partition(1, None), partition(2, 3)],
        replication_factor=1,
        config=TopicConfig(),
    )
    urls = {1: "http://b1:8080", 2: "http://b2:8080"}
    answered = with_leader_urls(described, urls)
    assert [p.leader_url for p in answered.partitions] == ["http://b1:8080", None, None]
