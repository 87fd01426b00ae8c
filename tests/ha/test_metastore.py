"""The metadata store contract, run against both backends (SQLite file, real etcd): what
the coordinator writes is what it recovers, all of a write or none of it. Then what only
etcd has: fencing by epoch, snapshots, one cluster per prefix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conveyor.cli.etcd_local import LocalEtcd
from conveyor.coordinator import state as core
from conveyor.coordinator.etcd_store import EtcdLayout, EtcdMetadataStore
from conveyor.coordinator.metastore import MetadataStore, SqliteMetadataStore, StoreFencedError
from conveyor.coordinator.model import ClusterState, Record, snapshot_records
from conveyor.coordinator.state import Result
from conveyor.protocol.errors import StorageError
from conveyor.protocol.messages import (
    CreateTopicRequest,
    OffsetCommitRequest,
    PartitionOffset,
    TopicConfig,
)
from conveyor.transport.etcd import EtcdClient, EtcdSettings, compare, op_put, parse_endpoints
from tests.unit.coordinator.helpers import DEFAULTS, INTERVAL_MS, heartbeat

T = TypeVar("T")
Opener = Callable[[], AbstractAsyncContextManager[MetadataStore]]


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def claim(client: EtcdClient, layout: EtcdLayout, url: str = "http://test") -> int:
    """Take the election key as the coordinator's campaign would (no lease: the test
    holds it until it deletes it); the epoch is its create revision."""
    response = await client.txn(
        [compare(layout.leader, "CREATE", 0)],
        [op_put(layout.leader, json.dumps({"url": url}).encode())],
    )
    assert response.succeeded, "the election key is taken"
    return response.header.revision


def etcd_client(cluster: LocalEtcd) -> EtcdClient:
    return EtcdClient(EtcdSettings(parse_endpoints(cluster.store_url)))


@pytest.fixture(params=["sqlite", "etcd"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same store again on each call (a coordinator restart)."""
    if request.param == "sqlite":

        @asynccontextmanager
        async def sqlite() -> AsyncIterator[MetadataStore]:
            store = await SqliteMetadataStore.open(tmp_path / "coordinator")
            try:
                yield store
            finally:
                await store.close()

        return sqlite
    cluster: LocalEtcd = request.getfixturevalue("shared_etcd")
    layout = EtcdLayout(request.getfixturevalue("prefix"))
    epochs: list[int] = []

    @asynccontextmanager
    async def etcd() -> AsyncIterator[MetadataStore]:
        client = etcd_client(cluster)
        try:
            if not epochs:
                epochs.append(await claim(client, layout))
            # a small snapshot threshold: the tests cross it, so loads replay both parts
            yield await EtcdMetadataStore.open(client, layout, epochs[0], snapshot_bytes_min=2048)
        finally:
            await client.close()

    return etcd


Step = Callable[[ClusterState], Result[Any]]


def steps() -> list[Step]:
    """Every kind of durable record: brokers (registered, dead), topics with a config,
    partitions (a big topic too), offsets, a deleted topic and its offsets, producers."""
    commit = OffsetCommitRequest(
        offsets=[
            PartitionOffset(topic="orders", partition=3, offset=17, metadata="x"),
            PartitionOffset(topic="gone", partition=0, offset=1),
        ]
    )
    from conveyor.coordinator import control
    from conveyor.protocol.messages import InitProducerIdRequest

    return [
        lambda s: core.handle_heartbeat(s, heartbeat(1), 10, INTERVAL_MS),
        lambda s: core.handle_heartbeat(s, heartbeat(2), 10, INTERVAL_MS),
        lambda s: core.create_topic(
            s,
            CreateTopicRequest(
                name="orders", partitions=4, config=TopicConfig(flush="interval:50")
            ),
            20,
            DEFAULTS,
        ),
        lambda s: core.create_topic(
            s, CreateTopicRequest(name="big", partitions=2000), 21, DEFAULTS
        ),
        lambda s: core.create_topic(s, CreateTopicRequest(name="gone", partitions=1), 22, DEFAULTS),
        lambda s: core.commit_offsets(s, "g", commit, 30),
        lambda s: control.init_producer_id(s, InitProducerIdRequest()),
        lambda s: core.delete_topic(s, "gone"),
        lambda s: core.expire_brokers(s, 10_000, 6000),
    ]


async def drive(store: MetadataStore, todo: Sequence[Step]) -> ClusterState:
    """Run transitions as the service does: persist the durable records, keep the state."""
    state = await store.load()
    for step in todo:
        result = step(state)
        await store.write(result.durable_records, result.state)
        state = result.state
    return state


def durable_view(state: ClusterState) -> list[Record]:
    """What a store must give back: the durable parts, in a canonical order."""
    return sorted(snapshot_records(state), key=repr)


def test_what_was_written_is_what_loads(opener: Opener) -> None:
    async def scenario() -> None:
        async with opener() as store:
            written = await drive(store, steps())
            cluster_id = store.cluster_id
        async with opener() as store:
            loaded = await store.load()
            assert store.cluster_id == cluster_id == loaded.cluster_id
        assert durable_view(loaded) == durable_view(written)
        assert "gone" not in loaded.topics
        assert ("g", "gone", 0) not in loaded.offsets
        assert loaded.offsets[("g", "orders", 3)].metadata == "x"
        assert not loaded.brokers[1].alive

    run(scenario())


def test_an_empty_store_loads_an_empty_state_with_a_stable_cluster_id(opener: Opener) -> None:
    async def scenario() -> None:
        async with opener() as store:
            first = await store.load()
        async with opener() as store:
            second = await store.load()
        assert first.cluster_id == second.cluster_id != ""
        assert not first.topics and not first.brokers and not first.offsets

    run(scenario())


def test_writes_continue_after_a_reopen(opener: Opener) -> None:
    todo = steps()

    async def scenario() -> None:
        async with opener() as store:
            await drive(store, todo[:4])
        async with opener() as store:
            written = await drive(store, todo[4:])
        async with opener() as store:
            assert durable_view(await store.load()) == durable_view(written)

    run(scenario())


def test_many_small_writes_load_in_order(opener: Opener) -> None:
    """Offsets committed one by one, past several snapshots in etcd: the last wins."""
    base = steps()[:3]

    def commit(offset: int) -> Step:
        request = OffsetCommitRequest(
            offsets=[PartitionOffset(topic="orders", partition=0, offset=offset)]
        )
        return lambda s: core.commit_offsets(s, "g", request, offset)

    async def scenario() -> None:
        async with opener() as store:
            await drive(store, [*base, *(commit(i) for i in range(150))])
        async with opener() as store:
            loaded = await store.load()
        assert loaded.offsets[("g", "orders", 0)].offset == 149

    run(scenario())


# ---- etcd only -----------------------------------------------------------------------------


def test_a_write_from_an_old_epoch_is_refused_and_changes_nothing(
    shared_etcd: LocalEtcd, prefix: str
) -> None:
    layout = EtcdLayout(prefix)

    async def scenario() -> None:
        client = etcd_client(shared_etcd)
        try:
            old_epoch = await claim(client, layout, "http://old")
            old = await EtcdMetadataStore.open(client, layout, old_epoch)
            state = await drive(old, steps()[:3])
            # the old active's lease ran out: the key goes, a new coordinator wins it
            await client.delete(layout.leader)
            new_epoch = await claim(client, layout, "http://new")
            assert new_epoch > old_epoch
            late = core.commit_offsets(
                state,
                "g",
                OffsetCommitRequest(
                    offsets=[PartitionOffset(topic="orders", partition=0, offset=5)]
                ),
                40,
            )
            with pytest.raises(StoreFencedError) as refused:
                await old.write(late.durable_records, late.state)
            assert refused.value.details["active_url"] == "http://new"
            new = await EtcdMetadataStore.open(client, layout, new_epoch)
            loaded = await new.load()
            assert durable_view(loaded) == durable_view(state)
            assert new.cluster_id == old.cluster_id
        finally:
            await client.close()

    run(scenario())


def test_snapshots_replace_the_log_they_cover(shared_etcd: LocalEtcd, prefix: str) -> None:
    layout = EtcdLayout(prefix)

    async def scenario() -> None:
        client = etcd_client(shared_etcd)
        try:
            epoch = await claim(client, layout)
            store = await EtcdMetadataStore.open(client, layout, epoch, snapshot_bytes_min=2048)
            written = await drive(store, steps())
            pointer = await client.get(layout.snapshot)
            assert pointer.kvs, "a snapshot was written"
            covered = json.loads(pointer.kvs[0].value_bytes)["seq"]
            entries = await client.get(layout.log, prefix=True)
            seqs = [int(kv.key_text.rsplit("/", 1)[1]) for kv in entries.kvs]
            assert seqs == list(range(covered + 1, covered + 1 + len(seqs)))
            chunks = await client.get(layout.snapshots, prefix=True)
            assert {kv.key_text.split("/")[-2] for kv in chunks.kvs} == {f"{covered:016d}"}
            reopened = await EtcdMetadataStore.open(client, layout, epoch)
            assert durable_view(await reopened.load()) == durable_view(written)
        finally:
            await client.close()

    run(scenario())


def test_a_prefix_belongs_to_one_cluster(shared_etcd: LocalEtcd, prefix: str) -> None:
    layout = EtcdLayout(prefix)

    async def scenario() -> None:
        client = etcd_client(shared_etcd)
        try:
            epoch = await claim(client, layout)
            store = await EtcdMetadataStore.open(client, layout, epoch, cluster_id="one")
            assert store.cluster_id == "one"
            with pytest.raises(StorageError, match="holds cluster one"):
                await EtcdMetadataStore.open(client, layout, epoch, cluster_id="two")
        finally:
            await client.close()

    run(scenario())


def test_a_retried_write_that_had_landed_counts_once(shared_etcd: LocalEtcd, prefix: str) -> None:
    """A write whose answer was lost is retried at the same log slot: finding its own
    entry there is success; another entry there is a bug (two writers) and fails loudly."""
    from conveyor.coordinator.records_codec import encode_records
    from conveyor.protocol.errors import FatalError

    layout = EtcdLayout(prefix)

    async def scenario() -> None:
        client = etcd_client(shared_etcd)
        try:
            epoch = await claim(client, layout)
            store = await EtcdMetadataStore.open(client, layout, epoch)
            state = await drive(store, steps()[:1])
            mine = steps()[1](state)
            entry = encode_records(mine.durable_records)
            await client.put(layout.log_key(2), entry)  # "the first attempt landed"
            await store.write(mine.durable_records, mine.state)
            assert durable_view(await store.load()) == durable_view(mine.state)
            await client.put(layout.log_key(3), b"[]")  # someone else's entry
            late = steps()[2](mine.state)
            with pytest.raises(FatalError, match="another writer"):
                await store.write(late.durable_records, late.state)
        finally:
            await client.close()

    run(scenario())
