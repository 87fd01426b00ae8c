"""The coordinator's Kafka group operations on a real service (SQLite, no HTTP): KIP-848
heartbeats translated onto Conveyor's groups, one registry for both kinds, Kafka's commit
fencing and per-partition answers, OffsetFetch of several groups, OffsetDelete,
List/Describe/DeleteGroups."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from msgspec.structs import replace

from conveyor.coordinator import views
from conveyor.coordinator.classic_model import Limits
from conveyor.coordinator.consumer_groups import PENDING_RECHECK_MS
from conveyor.coordinator.service import CoordinatorService, CoordinatorSettings
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.group_messages import (
    ClassicJoinRequest,
    ClassicLeaveRequest,
    ClassicLeaving,
    ClassicProtocol,
    ConsumerHeartbeatRequest,
    KafkaCommitRequest,
    KafkaOffsetFetchRequest,
    OffsetDeleteRequest,
    OffsetFetchGroup,
    TopicIdPartitions,
)
from conveyor.protocol.kafka.consumer_protocol import encode_subscription
from conveyor.protocol.messages import (
    CreateTopicRequest,
    GroupHeartbeatRequest,
    PartitionOffset,
)
from tests.unit.coordinator.helpers import heartbeat

Scenario = Callable[[CoordinatorService], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    settings = CoordinatorSettings(
        data_dir=tmp_path,
        classic_groups=Limits(initial_rebalance_delay_ms=0, min_session_timeout_ms=100),
        consumer_session_timeout_ms=3000,
    )

    async def body() -> None:
        service = CoordinatorService(settings)
        await service.start(run_expiry=False)
        try:
            await service.heartbeat(heartbeat(1))
            for name in ("t", "u", "other"):
                await service.create_topic(CreateTopicRequest(name=name, partitions=2))
            await scenario(service)
        finally:
            service.groups.reset()
            await service.close()

    asyncio.run(body())


def _topic_id(service: CoordinatorService, name: str) -> str:
    return views.topic_id(service.state.cluster_id, service.state.topics[name])


def _beat(member: str, epoch: int, **fields: object) -> ConsumerHeartbeatRequest:
    return ConsumerHeartbeatRequest(member_id=member, member_epoch=epoch, **fields)  # type: ignore[arg-type]


def _classic_join(member_id: str = "") -> ClassicJoinRequest:
    return ClassicJoinRequest(
        protocol_type="consumer",
        protocols=[ClassicProtocol(name="range", metadata=encode_subscription(["t"]))],
        session_timeout_ms=10_000,
        rebalance_timeout_ms=10_000,
        member_id=member_id,
        require_member_id=False,
    )


def test_kip848_heartbeats_join_conveyors_own_groups(tmp_path: Path) -> None:
    async def scenario(service: CoordinatorService) -> None:
        consumer = service.consumer_groups
        joined = await consumer.heartbeat(
            "g", _beat("m1", 0, subscribed_topic_names=["t"], rebalance_timeout_ms=60_000)
        )
        assert joined.error is None and joined.member_id == "m1" and joined.member_epoch >= 1
        tid = _topic_id(service, "t")
        assert joined.assignment == [TopicIdPartitions(topic_id=tid, partitions=[0, 1], topic="t")]
        assert "m1" in service.groups.groups["g"].members  # Conveyor's group, this member
        # nothing changed: the assignment is not repeated; null fields keep the subscription
        owned = [TopicIdPartitions(topic_id=tid, partitions=[0, 1])]
        again = await consumer.heartbeat("g", _beat("m1", joined.member_epoch, owned=owned))
        assert again.error is None and again.assignment is None
        # a Conveyor client joins the same group: partitions move once released
        native = await service.groups.heartbeat("g", GroupHeartbeatRequest(topics=["t"]))
        assert native.assigned == []  # t-1 is still m1's
        moved = await consumer.heartbeat("g", _beat("m1", joined.member_epoch))
        assert moved.assignment is not None and len(moved.assignment[0].partitions) == 1
        stale = await consumer.heartbeat("g", _beat("m1", moved.member_epoch + 5))
        assert stale.error == ErrorCode.FENCED_MEMBER.name
        unknown = await consumer.heartbeat("g", _beat("ghost", 3))
        assert unknown.error == ErrorCode.UNKNOWN_MEMBER.name
        left = await consumer.heartbeat("g", _beat("m1", -1))
        assert left.error is None and "m1" not in service.groups.groups["g"].members

    run(tmp_path, scenario)


def test_kip848_regex_subscriptions_follow_the_topics(tmp_path: Path) -> None:
    async def scenario(service: CoordinatorService) -> None:
        consumer = service.consumer_groups
        joined = await consumer.heartbeat(
            "r", _beat("m", 0, subscribed_topic_regex="t|u", rebalance_timeout_ms=60_000)
        )
        # resolved after the heartbeat that brought it (as Kafka: asynchronously)
        assert joined.assignment == [] and joined.heartbeat_interval_ms == PENDING_RECHECK_MS
        resolved = await consumer.heartbeat("r", _beat("m", joined.member_epoch))
        assert {t.topic for t in resolved.assignment or []} == {"t", "u"}
        bad = await consumer.heartbeat("r2", _beat("m", 0, subscribed_topic_regex="(("))
        assert bad.error == ErrorCode.INVALID_REGULAR_EXPRESSION.name
        described = consumer.describe(["r", "nope"]).groups
        assert (
            described[0].state == "Stable"
            and described[0].members[0].subscribed_topic_regex == "t|u"
        )
        assert described[1].error == ErrorCode.UNKNOWN_GROUP.name

    run(tmp_path, scenario)


def test_kip848_a_regex_new_to_the_group_is_resolved_after_its_heartbeat(tmp_path: Path) -> None:
    """librdkafka's 0045 resubscribe_with_regex: subscribing to a regex and a topic name
    at once, the first assignment has the named topic, the next one the regex's topics
    too (Kafka resolves a new regex asynchronously); a regex already resolved for the
    group is used at once; once nobody uses it, it is new again."""

    async def scenario(service: CoordinatorService) -> None:
        consumer = service.consumer_groups
        both = {"subscribed_topic_regex": "t|u", "subscribed_topic_names": ["other"]}
        a = await consumer.heartbeat("x", _beat("a", 0, rebalance_timeout_ms=60_000, **both))
        assert [t.topic for t in a.assignment or []] == ["other"]
        assert a.heartbeat_interval_ms == PENDING_RECHECK_MS  # come back soon
        a = await consumer.heartbeat("x", _beat("a", a.member_epoch))
        assert {t.topic for t in a.assignment or []} == {"other", "t", "u"}
        regex = {"subscribed_topic_regex": "t|u", "rebalance_timeout_ms": 60_000}
        await consumer.heartbeat("x", _beat("b", 0, **regex))  # known: resolved at once
        assert service.groups.groups["x"].members["b"].topics == ("t", "u")
        for member in ("a", "b"):
            await consumer.heartbeat("x", _beat(member, -1))
        again = await consumer.heartbeat("x", _beat("a", 0, **regex))
        assert again.assignment == []  # nobody used it any more: new again
        again = await consumer.heartbeat("x", _beat("a", again.member_epoch))
        assert {t.topic for t in again.assignment or []} == {"t", "u"}

    run(tmp_path, scenario)


def test_kip848_a_new_topic_reaches_every_regex_member_at_once(tmp_path: Path) -> None:
    """librdkafka's 0113 n_wildcard: members subscribed alike see a new topic together,
    so one heartbeat retargets both and nobody gives back what it was given."""

    async def scenario(service: CoordinatorService) -> None:
        consumer = service.consumer_groups
        regex = {"subscribed_topic_regex": "w.*", "rebalance_timeout_ms": 60_000}
        a = await consumer.heartbeat("w", _beat("a", 0, **regex))
        b = await consumer.heartbeat("w", _beat("b", 0, **regex))
        assert a.assignment == b.assignment == []  # nothing matches yet
        await service.create_topic(CreateTopicRequest(name="w1", partitions=2))
        a = await consumer.heartbeat("w", _beat("a", a.member_epoch))  # b says nothing
        group = service.groups.groups["w"]
        assert group.members["b"].topics == ("w1",)  # resolved with a's heartbeat
        assert len(group.target["a"]) == len(group.target["b"]) == 1
        await service.create_topic(CreateTopicRequest(name="w2", partitions=2))
        before = {m: set(group.target[m]) for m in ("a", "b")}
        await consumer.heartbeat("w", _beat("b", b.member_epoch))
        group = service.groups.groups["w"]
        assert group.members["a"].topics == ("w1", "w2")
        for member in ("a", "b"):  # each keeps its w1 partition and gets one of w2
            assert before[member] < set(group.target[member])
            assert len(group.target[member]) == 2

    run(tmp_path, scenario)


def test_a_name_has_members_of_one_kind_at_a_time(tmp_path: Path) -> None:
    async def scenario(service: CoordinatorService) -> None:
        kafka = service.kafka_groups
        classic = await kafka.join("c", _classic_join())
        assert classic.error is None and classic.generation == 1
        try:
            await service.groups.heartbeat("c", GroupHeartbeatRequest(topics=["t"]))
            raise AssertionError("a Conveyor member joined a classic group")
        except ConveyorError as exc:
            assert exc.code is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        await service.groups.heartbeat("n", GroupHeartbeatRequest(topics=["t"]))
        refused = await kafka.join("n", _classic_join())
        assert refused.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL.name
        kip848 = await service.consumer_groups.heartbeat(
            "c", _beat("k", 0, subscribed_topic_names=["t"])
        )
        assert kip848.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL.name

    run(tmp_path, scenario)


def test_kafka_commits_are_fenced_and_answered_per_partition(tmp_path: Path) -> None:
    async def scenario(service: CoordinatorService) -> None:
        kafka = service.kafka_groups

        simple = await kafka.commit(
            "s",
            KafkaCommitRequest(
                offsets=[
                    PartitionOffset(topic="t", partition=0, offset=5, leader_epoch=3),
                    PartitionOffset(topic="t", partition=9, offset=5),
                    PartitionOffset(topic="nope", partition=0, offset=5),
                    PartitionOffset(topic="t", partition=1, offset=5, metadata="x" * 5000),
                    PartitionOffset(topic="t", partition=1, offset=5, leader_epoch=-2),
                ]
            ),
        )
        assert [r.error for r in simple.partitions] == [
            None,
            ErrorCode.UNKNOWN_TOPIC.name,
            ErrorCode.UNKNOWN_TOPIC.name,
            ErrorCode.OFFSET_METADATA_TOO_LARGE.name,
            ErrorCode.INVALID_REQUEST.name,
        ]
        unknown_old = await kafka.commit(
            "s",
            KafkaCommitRequest(
                offsets=[PartitionOffset(topic="t", partition=0, offset=6)],
                member_id="m",
                generation=3,
                api_version=8,
            ),
        )
        assert unknown_old.partitions[0].error == ErrorCode.ILLEGAL_GENERATION.name
        unknown_new = await kafka.commit(
            "s",
            KafkaCommitRequest(
                offsets=[PartitionOffset(topic="t", partition=0, offset=6)],
                member_id="m",
                generation=3,
                api_version=9,
            ),
        )
        assert unknown_new.partitions[0].error == ErrorCode.UNKNOWN_GROUP.name
        joined = await kafka.join("s", _classic_join())
        member_commit = KafkaCommitRequest(
            offsets=[PartitionOffset(topic="t", partition=0, offset=7)],
            member_id=joined.member_id,
            generation=joined.generation,
        )
        # the new generation's assignment is not there yet (no SyncGroup)
        waiting = await kafka.commit("s", member_commit)
        assert waiting.partitions[0].error == ErrorCode.REBALANCE_IN_PROGRESS.name
        no_member = await kafka.commit(
            "s", KafkaCommitRequest(offsets=[PartitionOffset(topic="t", partition=0, offset=8)])
        )
        assert no_member.partitions[0].error == ErrorCode.UNKNOWN_MEMBER.name
        fetched = kafka.fetch_offsets(
            KafkaOffsetFetchRequest(
                groups=[
                    OffsetFetchGroup(group="s"),
                    OffsetFetchGroup(
                        group="s", partitions=[PartitionOffset(topic="t", partition=1, offset=0)]
                    ),
                    OffsetFetchGroup(group="empty"),
                ]
            )
        ).groups
        assert [
            (p.topic, p.partition, p.offset, p.leader_epoch) for p in fetched[0].partitions
        ] == [("t", 0, 5, 3)]
        assert [(p.partition, p.offset, p.leader_epoch) for p in fetched[1].partitions] == [
            (1, -1, -1)
        ]
        assert fetched[2].partitions == []

    run(tmp_path, scenario)


def test_offset_delete_listing_describing_and_deleting(tmp_path: Path) -> None:
    async def scenario(service: CoordinatorService) -> None:
        kafka = service.kafka_groups
        for topic in ("t", "other"):
            await kafka.commit(
                "d",
                KafkaCommitRequest(offsets=[PartitionOffset(topic=topic, partition=0, offset=1)]),
            )
        joined = await kafka.join("d", _classic_join())
        assert joined.error is None
        deleted = await kafka.delete_offsets(
            "d",
            OffsetDeleteRequest(
                partitions=[
                    PartitionOffset(topic="t", partition=0, offset=-1),
                    PartitionOffset(topic="other", partition=0, offset=-1),
                ]
            ),
        )
        assert [r.error for r in deleted.partitions] == [
            ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC.name,
            None,
        ]
        listed = {g.group: g for g in kafka.listing([], []).groups}
        assert (listed["d"].state, listed["d"].group_type) == ("CompletingRebalance", "classic")
        assert [g.group for g in kafka.listing(["stable"], []).groups] == []
        described = kafka.describe(["d", "ghost"]).groups
        assert described[0].protocol_type == "consumer" and len(described[0].members) == 1
        assert described[1].error == ErrorCode.UNKNOWN_GROUP.name
        results = (await kafka.delete(["d", "ghost"])).groups
        assert [r.error for r in results] == [
            ErrorCode.GROUP_NOT_EMPTY.name,
            ErrorCode.UNKNOWN_GROUP.name,
        ]

    run(tmp_path, scenario)


def test_an_emptied_classic_group_is_listed_as_a_consumer_group(tmp_path: Path) -> None:
    """As Kafka keeps an Empty classic group: protocol type "consumer", not a simple
    group's "" (a group that only ever committed offsets)."""

    async def scenario(service: CoordinatorService) -> None:
        kafka = service.kafka_groups
        offsets = [PartitionOffset(topic="t", partition=0, offset=1)]
        for group in ("e", "simple"):
            await kafka.commit(group, KafkaCommitRequest(offsets=offsets))
        joined = await kafka.join("e", _classic_join())
        assert joined.error is None
        kafka.leave("e", ClassicLeaveRequest(members=[ClassicLeaving(joined.member_id)]))
        listed = {g.group: g for g in kafka.listing([], []).groups}
        assert (listed["e"].state, listed["e"].protocol_type) == ("Empty", "consumer")
        assert (listed["simple"].state, listed["simple"].protocol_type) == ("Empty", "")
        assert [d.protocol_type for d in kafka.describe(["e", "simple"]).groups] == [
            "consumer",
            "",
        ]
        assert [r.error for r in (await kafka.delete(["e"])).groups] == [None]
        assert "e" not in service.groups.classic.emptied

    run(tmp_path, scenario)


def test_kip848_static_members_come_back_without_a_rebalance(tmp_path: Path) -> None:
    async def scenario(service: CoordinatorService) -> None:
        consumer = service.consumer_groups
        tid = _topic_id(service, "t")

        epochs: dict[str, int] = {}

        async def settle(*members: tuple[str, str]) -> dict[str, list[int]]:
            owned: dict[str, list[int]] = {}
            for _ in range(5):
                for member, instance in members:
                    reported = [TopicIdPartitions(topic_id=tid, partitions=owned.get(member, []))]
                    answer = await consumer.heartbeat(
                        "st", _beat(member, epochs[member], instance_id=instance, owned=reported)
                    )
                    assert answer.error is None, answer.message
                    epochs[member] = answer.member_epoch
                    group = service.groups.groups["st"]
                    owned[member] = sorted(p for _, p in group.assigned_to(member))
            return owned

        for member, instance in (("a", "i-a"), ("b", "i-b")):
            joined = await consumer.heartbeat(
                "st", _beat(member, 0, instance_id=instance, subscribed_topic_names=["t"])
            )
            assert joined.error is None
            epochs[member] = joined.member_epoch
        owned = await settle(("a", "i-a"), ("b", "i-b"))
        assert owned == {"a": [0], "b": [1]}
        generation = service.groups.groups["st"].generation
        clash = await consumer.heartbeat(
            "st", _beat("c", 0, instance_id="i-a", subscribed_topic_names=["t"])
        )
        assert clash.error == ErrorCode.UNRELEASED_INSTANCE_ID.name
        left = await consumer.heartbeat("st", _beat("b", -2, instance_id="i-b"))
        assert left.error is None and "b" in service.groups.groups["st"].members  # kept
        back = await consumer.heartbeat(
            "st", _beat("b2", 0, instance_id="i-b", subscribed_topic_names=["t"])
        )
        assert back.error is None and back.member_epoch == generation
        assert back.assignment == [TopicIdPartitions(topic_id=tid, partitions=[1], topic="t")]
        group = service.groups.groups["st"]
        assert set(group.members) == {"a", "b2"} and group.generation == generation

    run(tmp_path, scenario)


def test_kip848_static_members_follow_kafkas_instance_id_rules(tmp_path: Path) -> None:
    """Kafka's ``GroupMetadataManager`` rules for a replaced or departed static member:
    a heartbeat or leave from the replaced incarnation is FENCED_INSTANCE_ID, a member
    that left with -2 and heartbeats on is FENCED_MEMBER_EPOCH, the same member may come
    back with epoch 0 and keeps its partitions, and -1 gives the instance up for good."""

    async def scenario(service: CoordinatorService) -> None:
        consumer = service.consumer_groups
        tid = _topic_id(service, "t")

        async def join(member: str, instance: str) -> int:
            answer = await consumer.heartbeat(
                "sf", _beat(member, 0, instance_id=instance, subscribed_topic_names=["t"])
            )
            assert answer.error is None, answer.message
            return answer.member_epoch

        epoch = await join("a", "i-a")
        assert (await consumer.heartbeat("sf", _beat("a", -2, instance_id="i-a"))).error is None
        stale = await consumer.heartbeat("sf", _beat("a", epoch, instance_id="i-a"))
        assert stale.error == ErrorCode.FENCED_MEMBER.name  # FENCED_MEMBER_EPOCH on the wire
        # the same process comes back: its place and partitions, no rebalance
        generation = service.groups.groups["sf"].generation
        back = await consumer.heartbeat(
            "sf", _beat("a", 0, instance_id="i-a", subscribed_topic_names=["t"])
        )
        assert back.error is None and back.member_epoch == generation
        assert back.assignment == [TopicIdPartitions(topic_id=tid, partitions=[0, 1], topic="t")]
        # a new incarnation replaces it after another -2; the old one is fenced for good
        assert (await consumer.heartbeat("sf", _beat("a", -2, instance_id="i-a"))).error is None
        await join("a2", "i-a")
        for old_epoch in (generation, -1, -2):
            fenced = await consumer.heartbeat("sf", _beat("a", old_epoch, instance_id="i-a"))
            assert fenced.error == ErrorCode.FENCED_INSTANCE_ID.name, old_epoch
        assert set(service.groups.groups["sf"].members) == {"a2"}
        # -1 leaves for good: the next holder of the id is a new member, at once
        assert (await consumer.heartbeat("sf", _beat("a2", -1, instance_id="i-a"))).error is None
        assert "sf" not in service.groups.groups or not service.groups.groups["sf"].members
        await join("a3", "i-a")
        assert set(service.groups.groups["sf"].members) == {"a3"}

    run(tmp_path, scenario)


def test_a_group_emptied_and_joined_again_does_not_reuse_its_generations(
    tmp_path: Path,
) -> None:
    """An emptied group keeps counting: a member that left and came back gets a newer
    epoch than any it held before, so a commit it sent in its old membership (delayed in
    the network) is fenced instead of moving the group's offset back (chaos seed 202:
    generations restarted at 1 after the group emptied, and a commit from an earlier
    life of the group, with the same member id and a generation number the new life had
    reached again, was accepted)."""

    async def scenario(service: CoordinatorService) -> None:
        consumer, kafka = service.consumer_groups, service.kafka_groups
        first = await consumer.heartbeat(
            "g", _beat("m1", 0, subscribed_topic_names=["t"], rebalance_timeout_ms=60_000)
        )
        assert first.error is None and first.assignment is not None
        old_epoch = first.member_epoch
        left = await consumer.heartbeat("g", _beat("m1", -1))
        assert left.error is None and "g" not in service.groups.groups  # emptied
        again = await consumer.heartbeat(
            "g", _beat("m1", 0, subscribed_topic_names=["t"], rebalance_timeout_ms=60_000)
        )
        assert again.error is None and again.member_epoch > old_epoch
        late = await kafka.commit(
            "g",
            KafkaCommitRequest(
                offsets=[PartitionOffset(topic="t", partition=0, offset=5)],
                member_id="m1",
                generation=old_epoch,
            ),
        )
        assert late.partitions[0].error is not None
        fetched = kafka.fetch_offsets(
            KafkaOffsetFetchRequest(groups=[OffsetFetchGroup(group="g")])
        ).groups
        assert fetched[0].partitions == []  # nothing committed

    run(tmp_path, scenario)


def test_after_a_takeover_kafka_commits_wait_for_the_members_heartbeat(tmp_path: Path) -> None:
    """A coordinator that became active over existing topics rebuilds membership from
    heartbeats; meanwhile a member's OffsetCommit (its epoch given by the old coordinator,
    or the group not back at all) is retriable (COORDINATOR_NOT_AVAILABLE to Kafka
    clients), not fenced, as over HTTP. A make test run found ILLEGAL_GENERATION here:
    the member dropped its partitions (tests/ha/test_failover.py)."""

    async def scenario(service: CoordinatorService) -> None:
        kafka, consumer = service.kafka_groups, service.consumer_groups
        service.groups.started(recover=True)  # as a takeover's load with topics does
        tid = _topic_id(service, "t")
        commit = KafkaCommitRequest(
            offsets=[PartitionOffset(topic="t", partition=0, offset=7)],
            member_id="m1",
            generation=5,  # the old coordinator's epoch
        )
        for version in (8, 9):  # no group in memory yet
            early = await kafka.commit("g", replace(commit, api_version=version))
            assert early.partitions[0].error == ErrorCode.NOT_COORDINATOR.name
        back = await consumer.heartbeat(
            "g",
            _beat(
                "m1",
                5,
                subscribed_topic_names=["t"],
                owned=[TopicIdPartitions(topic_id=tid, partitions=[0])],
            ),
        )
        assert back.error is None and back.member_epoch < 5  # re-admitted, a new count
        stale = await kafka.commit("g", commit)
        assert stale.partitions[0].error == ErrorCode.NOT_COORDINATOR.name
        current = await kafka.commit("g", replace(commit, generation=back.member_epoch))
        assert current.partitions[0].error is None
        # once the window is over, the same stale commit is fenced again
        service.groups.started(recover=False)
        fenced = await kafka.commit("g", commit)
        assert fenced.partitions[0].error == ErrorCode.ILLEGAL_GENERATION.name

    run(tmp_path, scenario)


def test_after_a_takeover_a_txn_offset_commit_is_still_fenced_at_once(tmp_path: Path) -> None:
    """TxnOffsetCommit retries carry the group metadata taken before the takeover: told
    to retry, they would wait out the whole rebuild window; fenced, the processor
    restarts at once (KIP-447, docs/transactions.md)."""

    async def scenario(service: CoordinatorService) -> None:
        service.groups.started(recover=True)
        commit = KafkaCommitRequest(
            offsets=[PartitionOffset(topic="t", partition=0, offset=7)],
            member_id="m1",
            generation=5,
        )
        # api_version 0: the old versions' code for a group the coordinator does not know
        assert service.kafka_groups.txn_commit_error("g", commit) is ErrorCode.ILLEGAL_GENERATION

    run(tmp_path, scenario)
