"""QueueCore's routing of partitions to leaders when a leader is unknown (client/queue_core).

Found by the chaos queue workload (seed 2424): a member refreshed its metadata while its
partition's leader was being elected, cached "no leader", and never asked for that
partition again while keeping it assigned (140 s, until the run ended).
"""

from __future__ import annotations

import asyncio

from conveyor.client.metadata import PartitionRoute
from conveyor.client.queue_core import AckFailure, QueueCore, QueueSettings
from conveyor.protocol.share import AckRange


class Metadata:
    """Routes that change at the next refresh, counting refreshes."""

    def __init__(self, now: dict[int, str | None], after_refresh: dict[int, str | None]) -> None:
        self.now, self.after, self.refreshes = now, after_refresh, 0

    async def routes(self, topic: str) -> tuple[PartitionRoute, ...]:
        return tuple(PartitionRoute(p, None, url, 0) for p, url in sorted(self.now.items()))

    async def refresh(self, topics: object = (), **_: object) -> None:
        self.refreshes += 1
        self.now = self.after


def core_with(metadata: Metadata) -> QueueCore:
    core = QueueCore(QueueSettings(url="http://127.0.0.1:9", topic="t", group="g"))
    core.metadata = metadata  # type: ignore[assignment]
    return core


def test_a_partition_without_a_known_leader_is_looked_up_again() -> None:
    async def run() -> None:
        metadata = Metadata({0: None, 1: "http://b1"}, {0: "http://b2", 1: "http://b1"})
        core = core_with(metadata)
        assert await core._by_leader([0, 1]) == {"http://b1": [1], "http://b2": [0]}
        assert metadata.refreshes == 1
        assert await core._by_leader([0, 1]) == {"http://b1": [1], "http://b2": [0]}
        assert metadata.refreshes == 1  # all routed: no more refreshes
        await core.http.close()

    asyncio.run(run())


def test_lookups_of_a_leaderless_partition_are_spaced() -> None:
    async def run() -> None:
        metadata = Metadata({0: None}, {0: None})
        core = core_with(metadata)
        for _ in range(5):
            assert await core._by_leader([0]) == {}
        assert metadata.refreshes == 1  # at most one per LEADERLESS_REFRESH_S
        await core.http.close()

    asyncio.run(run())


def test_acknowledgements_of_a_leaderless_partition_fail_instead_of_vanishing() -> None:
    async def run() -> None:
        core = core_with(Metadata({0: None, 1: None}, {0: None, 1: None}))
        core.pending.add(0, 5, 1, "accept")
        failures = await core.commit()
        assert failures == [
            AckFailure(0, 5, 5, "accept", "LEADER_NOT_AVAILABLE", "no leader known")
        ]
        await core.http.close()

    asyncio.run(run())


def test_routed_acknowledgements_are_not_failed() -> None:
    core = core_with(Metadata({}, {}))
    failures: list[AckFailure] = []
    acks = {1: [AckRange(partition=1, first_offset=3, last_offset=3)]}
    core._fail_unrouted({"http://b1": [1]}, acks, failures)
    assert failures == []
