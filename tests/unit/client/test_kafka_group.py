"""KafkaHeartbeat's translation between the membership state machine and KIP-848's
ConsumerGroupHeartbeat (client/kafka_group.py), with the coordinator's connection
replaced by a scripted one (the real exchange: tests/integration/test_groups_kafka.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from typing import Any, cast

import pytest

from conveyor.client.kafka_group import GroupCoordinator, KafkaHeartbeat
from conveyor.client.membership import Beat, MembershipSettings
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError

ORDERS = uuid.UUID(int=7)
AUDIT = uuid.UUID(int=9)
RESPONSE = SERVED[ApiKey.CONSUMER_GROUP_HEARTBEAT].response[1]


class Metadata:
    """The two maps KafkaHeartbeat reads, filled by the first refresh."""

    def __init__(self) -> None:
        self.topic_ids: dict[str, uuid.UUID] = {}
        self.topic_names_by_id: dict[uuid.UUID, str] = {}
        self.refreshes = 0

    async def refresh(self, topics: Iterable[str] = ()) -> None:
        self.refreshes += 1
        self.topic_ids = {"orders": ORDERS, "audit": AUDIT}
        self.topic_names_by_id = {v: k for k, v in self.topic_ids.items()}


class Coordinator:
    """Answers each request with the next scripted reply; keeps the requests."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.sent: list[Any] = []

    async def call(
        self, api_key: ApiKey, versions: tuple[int, int], build: Callable[[int], Any]
    ) -> Any:
        self.sent.append(build(versions[1]))
        return self.replies.pop(0)

    def error(self, code: int, what: str) -> ConveyorError:
        real = GroupCoordinator(cast(Any, None), "g", 1_000)
        return real.error(code, what)


def reply(epoch: int, assignment: dict[uuid.UUID, list[int]] | None, **fields: Any) -> Any:
    assigned = None
    if assignment is not None:
        cls = RESPONSE.Assignment
        assigned = cls(
            topic_partitions=[
                cls.TopicPartitions(topic_id=t, partitions=p) for t, p in assignment.items()
            ]
        )
    values: dict[str, Any] = {
        "throttle_time_ms": 0,
        "error_code": 0,
        "error_message": None,
        "member_id": "m-1",
        "member_epoch": epoch,
        "heartbeat_interval_ms": 1_000,
        "assignment": assigned,
    }
    return RESPONSE(**{**values, **fields})


SETTINGS = MembershipSettings(
    group="g",
    client_id="c",
    session_timeout_ms=10_000,
    heartbeat_interval_ms=1_000,
    max_poll_interval_ms=5_000,
    request_timeout_ms=30_000,
)


def sender(coordinator: Coordinator, metadata: Metadata | None = None) -> KafkaHeartbeat:
    return KafkaHeartbeat(SETTINGS, cast(Any, coordinator), cast(Any, metadata or Metadata()))


def beat(member_id: str | None, generation: int = -1, **rest: Any) -> Beat:
    return Beat(member_id, generation, ("orders", "audit"), rest.pop("owned", ()), **rest)


def test_join_stay_and_leave_epochs_and_an_unchanged_assignment() -> None:
    coordinator = Coordinator(
        reply(4, {ORDERS: [0, 1], AUDIT: [2]}),
        reply(5, None),  # no assignment: unchanged
        reply(-1, None),
    )
    heartbeat = sender(coordinator)

    async def run() -> None:
        joined = await heartbeat.beat(beat(None), 1.0)
        assert (joined.member_id, joined.generation) == ("m-1", 4)
        assert joined.assigned == {
            TopicPartition("orders", 0),
            TopicPartition("orders", 1),
            TopicPartition("audit", 2),
        }
        owned = tuple(sorted(joined.assigned))
        stayed = await heartbeat.beat(beat("m-1", 4, owned=owned), 1.0)
        assert stayed.generation == 5 and stayed.assigned == joined.assigned
        await heartbeat.beat(beat("m-1", 5, leave=True), 1.0)

    asyncio.run(run())
    join, stay, leave = coordinator.sent
    assert join.member_epoch == 0 and join.member_id  # KIP-1082: chosen by the client
    assert join.subscribed_topic_names == ["orders", "audit"] and join.topic_partitions == []
    assert join.rebalance_timeout_ms == SETTINGS.max_poll_interval_ms
    assert stay.member_id == "m-1" and stay.member_epoch == 4
    assert sorted((t.topic_id, t.partitions) for t in stay.topic_partitions) == [
        (ORDERS, [0, 1]),
        (AUDIT, [2]),
    ]
    assert leave.member_epoch == -1


def test_a_rejoin_forgets_the_last_assignment() -> None:
    coordinator = Coordinator(reply(2, {ORDERS: [0]}), reply(3, None))
    heartbeat = sender(coordinator)

    async def run() -> None:
        await heartbeat.beat(beat(None), 1.0)
        again = await heartbeat.beat(beat(None), 1.0)  # fenced, joining again
        assert again.assigned == frozenset()

    asyncio.run(run())


def test_a_member_that_stopped_polling_leaves_and_is_told_to_rejoin() -> None:
    coordinator = Coordinator(reply(-1, None))
    heartbeat = sender(coordinator)
    with pytest.raises(ConveyorError) as refused:
        asyncio.run(heartbeat.beat(beat("m-1", 3, poll_age_ms=6_000), 1.0))
    assert refused.value.code is ErrorCode.UNKNOWN_MEMBER
    (leave,) = coordinator.sent
    assert leave.member_epoch == -1


@pytest.mark.parametrize(
    ("kafka", "conveyor"),
    [
        (KafkaError.FENCED_MEMBER_EPOCH, ErrorCode.FENCED_MEMBER),
        (KafkaError.UNKNOWN_MEMBER_ID, ErrorCode.UNKNOWN_MEMBER),
        (KafkaError.STALE_MEMBER_EPOCH, ErrorCode.ILLEGAL_GENERATION),
        (KafkaError.UNRELEASED_INSTANCE_ID, ErrorCode.UNRELEASED_INSTANCE_ID),
        (KafkaError.NOT_COORDINATOR, ErrorCode.NOT_COORDINATOR),
    ],
)
def test_refusals_are_the_clients_typed_errors(kafka: KafkaError, conveyor: ErrorCode) -> None:
    heartbeat = sender(Coordinator(reply(3, None, error_code=kafka)))
    with pytest.raises(ConveyorError) as refused:
        asyncio.run(heartbeat.beat(beat("m-1", 3), 1.0))
    assert refused.value.code is conveyor


def test_a_short_interval_means_partitions_are_still_coming() -> None:
    heartbeat = sender(Coordinator(reply(3, {ORDERS: [0]}, heartbeat_interval_ms=100)))
    assert asyncio.run(heartbeat.beat(beat(None), 1.0)).pending


def test_a_coordinator_that_moved_is_found_again() -> None:
    coordinator = GroupCoordinator(cast(Any, None), "g", 1_000)
    coordinator._address = "127.0.0.1:1"
    error = coordinator.error(KafkaError.NOT_COORDINATOR, "OffsetCommit")
    assert error.retriable and coordinator._address is None
    coordinator._address = "127.0.0.1:1"
    coordinator.error(KafkaError.FENCED_MEMBER_EPOCH, "OffsetCommit")
    assert coordinator._address == "127.0.0.1:1"
