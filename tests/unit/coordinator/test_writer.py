"""Group commit (coordinator/writer.py) over an in-memory store that counts its writes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from conveyor.coordinator import state as core
from conveyor.coordinator.model import ClusterState, Record
from conveyor.coordinator.state import Result
from conveyor.coordinator.writer import TransitionWriter
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import OffsetCommitRequest, PartitionOffset
from tests.unit.coordinator.helpers import with_brokers, with_topic


class MemoryStore:
    """A store whose writes take a while (as an etcd round does) and may fail."""

    cluster_id = "test-cluster"
    location = "memory"

    def __init__(self) -> None:
        self.writes: list[list[Record]] = []
        self.fail_next: ConveyorError | None = None

    async def load(self) -> ClusterState:
        raise NotImplementedError

    async def write(self, records: Sequence[Record], state: ClusterState) -> None:
        await asyncio.sleep(0.01)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.writes.append(list(records))

    async def close(self) -> None:
        return None


def commit(partition: int, offset: int) -> Any:
    request = OffsetCommitRequest(
        offsets=[PartitionOffset(topic="t", partition=partition, offset=offset)]
    )
    return lambda s: core.commit_offsets(s, "g", request, 0)


def writer_with(
    store: MemoryStore, failures: list[ConveyorError] | None = None
) -> TransitionWriter:
    applied: list[Result[Any]] = []
    writer = TransitionWriter(
        check_active=lambda: None,
        on_applied=lambda _previous, results: applied.extend(results),
        on_write_failed=(failures if failures is not None else []).append,
    )
    writer.open(store, with_topic(with_brokers([1]), "t", partitions=8))
    return writer


def test_commits_waiting_together_share_one_store_write() -> None:
    store = MemoryStore()

    async def scenario() -> None:
        writer = writer_with(store)
        replies = await asyncio.gather(*(writer.submit(commit(p % 8, p)) for p in range(64)))
        assert len(replies) == 64
        assert writer.state is not None
        assert writer.state.offsets[("g", "t", 7)].offset == 63  # the last one wins, in order
        # all queued before the writer ran (or, at worst, all but the first): shared
        assert len(store.writes) <= 2
        assert sum(len(w) for w in store.writes) == 64

    asyncio.run(scenario())


def test_a_refused_decision_fails_only_its_own_caller() -> None:
    store = MemoryStore()

    async def scenario() -> None:
        writer = writer_with(store)
        bad = commit(99, 1)  # no partition 99
        results = await asyncio.gather(
            writer.submit(commit(0, 5)), writer.submit(bad), writer.submit(commit(1, 6)),
            return_exceptions=True,
        )  # fmt: skip
        assert isinstance(results[1], InvalidRequestError)
        assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception)
        assert writer.state is not None and ("g", "t", 1) in writer.state.offsets

    asyncio.run(scenario())


def test_a_failed_write_fails_its_batch_and_leaves_the_state_as_it_was() -> None:
    store = MemoryStore()
    failures: list[ConveyorError] = []

    async def scenario() -> None:
        writer = writer_with(store, failures)
        before = writer.state
        store.fail_next = RetriableError("etcd unreachable", code=ErrorCode.NOT_READY)
        with pytest.raises(RetriableError, match="unreachable"):
            await writer.submit(commit(0, 5))
        assert writer.state is before
        assert [f.message for f in failures] == ["etcd unreachable"]
        await writer.submit(commit(0, 6))  # the next write goes through
        assert writer.state is not None and writer.state.offsets[("g", "t", 0)].offset == 6

    asyncio.run(scenario())


def test_abort_fails_everything_queued_and_drops_the_state() -> None:
    store = MemoryStore()

    async def scenario() -> None:
        writer = writer_with(store)
        queued = [writer.submit(commit(p, p)) for p in range(4)]
        await asyncio.sleep(0)
        lost = RetriableError("lease lost", code=ErrorCode.NOT_COORDINATOR)
        await writer.abort(lost)
        for task in queued:
            with pytest.raises(RetriableError, match="lease lost"):
                await task
        assert writer.state is None
        with pytest.raises(RetriableError, match="lease lost"):
            await writer.submit(commit(0, 1))

    asyncio.run(scenario())


def test_no_decision_once_the_lease_check_fails() -> None:
    store = MemoryStore()

    async def scenario() -> None:
        allowed = [True]

        def check() -> None:
            if not allowed[0]:
                raise RetriableError("lease expired", code=ErrorCode.NOT_COORDINATOR)

        writer = TransitionWriter(check, lambda *_: None, lambda _: None)
        writer.open(store, with_topic(with_brokers([1]), "t", partitions=1))
        await writer.submit(commit(0, 1))
        allowed[0] = False
        with pytest.raises(RetriableError, match="lease expired"):
            await writer.submit(commit(0, 2))
        assert len(store.writes) == 1

    asyncio.run(scenario())
