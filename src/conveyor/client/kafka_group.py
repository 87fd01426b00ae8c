"""A consumer's group over the Kafka protocol (``transport="kafka"``, issue 19).

The same membership state machine as over HTTP (``membership.py``) and the same one store
of committed offsets at Conveyor's coordinator; only the requests differ:

- :class:`GroupCoordinator` finds the group's coordinator with FindCoordinator (key type
  0) on any broker and sends it the group's requests on a connection of their own (a
  ``group`` lane, beside the fetches' long polls). COORDINATOR_NOT_AVAILABLE,
  NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS or a broken connection forget it: the
  next request finds it again (Kafka's consumer does the same).
- :class:`KafkaHeartbeat` is KIP-848's ConsumerGroupHeartbeat, which Conveyor's own
  groups already are (server-side assignment, owned partitions reported, a partition
  handed over only once released): member epoch 0 joins with a member id this client
  chose (KIP-1082), the epoch last answered stays, -1 leaves. Topics travel as topic ids
  (from Metadata v10+); an answer without an assignment means "unchanged". The two
  things KIP-848 leaves to the client are done here: the subscription is sent by name
  (a pattern is resolved by the client, as over HTTP), and a member whose application
  has not polled for ``max_poll_interval_ms`` leaves the group itself (the coordinator
  cannot see polls) and rejoins on the next poll, as Kafka's consumer does.
- :class:`KafkaGroupClient` is OffsetFetch (v8+) and OffsetCommit (v7-9: member id and
  member epoch as the generation, so a stale member's commit is fenced).

Errors are the client's typed ones (``conveyor_error``): FENCED_MEMBER_EPOCH is
FENCED_MEMBER and UNKNOWN_MEMBER_ID UNKNOWN_MEMBER, on which the state machine drops its
partitions and rejoins; STALE_MEMBER_EPOCH (a commit with an epoch the coordinator has
moved past) is ILLEGAL_GENERATION, the same.

Leaving (``close``, the seed functions' ``atexit``, or ``max_poll_interval_ms`` without a
poll) is epoch -1, so the partitions move at once; a static member (``group_instance_id``,
KIP-848's ``InstanceId``) leaves with -2 instead, as Kafka's consumer and librdkafka do:
the coordinator keeps its place and partitions for the group's session timeout, and the
next process with the same instance id takes them back at once, with no rebalance. A
process that restarts after one killed without leaving waits for the killed one's session
to end: KIP-848 answers UNRELEASED_INSTANCE_ID until then (Kafka's consumer gives up on
it; this one keeps asking, so ``poll`` gets its partitions once the old session is over).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from conveyor.client.group import Assignment
from conveyor.client.kafka_metadata import KafkaMetadataClient
from conveyor.client.membership import Beat, BeatAnswer, MembershipSettings
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.transport.kafka_client import KafkaConnection

log = logging.getLogger(__name__)

FIND_COORDINATOR_VERSIONS: Final = (1, 4)  # v4: coordinator keys (KIP-699)
HEARTBEAT_VERSIONS: Final = (0, 1)
OFFSET_COMMIT_VERSIONS: Final = (7, 9)  # v7: group instance id; v9: KIP-848 member epoch
OFFSET_FETCH_VERSIONS: Final = (8, 9)  # v8: groups; v9: member id and epoch
GROUP_KEY: Final = 0
JOIN_EPOCH: Final = 0
LEAVE_EPOCH: Final = -1
STATIC_LEAVE_EPOCH: Final = -2  # a static member leaving for a restart (module docstring)
# Conveyor's coordinator asks a member for its next heartbeat within this while partitions
# of its share are still held by their previous owner (coordinator/consumer_groups.py):
# the only sign in a Kafka answer that more partitions are coming.
PENDING_RECHECK_MS: Final = 100
REDISCOVER: Final = frozenset(
    {
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


class GroupCoordinator:
    """Where one group's requests go: found with FindCoordinator, found again when it
    moved or failed (module docstring)."""

    def __init__(self, metadata: KafkaMetadataClient, group: str, request_timeout_ms: int) -> None:
        self.group = group
        self._metadata = metadata
        self._timeout_ms = request_timeout_ms
        self._address: str | None = None

    async def call(
        self, api_key: ApiKey, versions: tuple[int, int], build: Callable[[int], Any]
    ) -> Any:
        """``build(version)``'s request to the coordinator, its answer; a failed
        connection forgets the coordinator and raises (the caller retries)."""
        connection = await self._connection()
        version = connection.version(api_key, *versions)
        try:
            return await connection.call(
                api_key, version, build(version), timeout_ms=self._timeout_ms
            )
        except ConveyorError as exc:
            if exc.retriable:
                self._address = None
            raise

    def error(self, code: int, what: str) -> ConveyorError:
        """The typed error of an answer's ``code``, forgetting a coordinator that says it
        is not (or not yet) the group's."""
        if code in REDISCOVER:
            log.info("group %s: coordinator %s moved (%s)", self.group, self._address, code)
            self._address = None
        return conveyor_error(code, f"{what} of group {self.group}")

    async def _connection(self) -> KafkaConnection:
        if self._address is None:
            self._address = await self._find()
        return await self._metadata.connections.get(self._address, lane="group")

    async def _find(self) -> str:
        connection = await self._metadata.any_connection()
        version = connection.version(ApiKey.FIND_COORDINATOR, *FIND_COORDINATOR_VERSIONS)
        fields: dict[str, Any] = {"key_type": GROUP_KEY}
        if version >= 4:
            fields["coordinator_keys"] = [self.group]
        else:
            fields["key"] = self.group
        request = new_request(ApiKey.FIND_COORDINATOR, version, **fields)
        reply = await connection.call(
            ApiKey.FIND_COORDINATOR, version, request, timeout_ms=self._timeout_ms
        )
        found = reply.coordinators[0] if version >= 4 else reply
        if found.error_code:
            raise conveyor_error(found.error_code, f"FindCoordinator of group {self.group}")
        return f"{found.host}:{found.port}"


class KafkaHeartbeat:
    """``membership.HeartbeatSender`` as KIP-848's ConsumerGroupHeartbeat."""

    def __init__(
        self,
        settings: MembershipSettings,
        coordinator: GroupCoordinator,
        metadata: KafkaMetadataClient,
    ) -> None:
        self._settings = settings
        self._coordinator = coordinator
        self._metadata = metadata
        # KIP-1082: the client picks its member id, and keeps it for its whole life
        self._member_id = str(uuid.uuid4())
        # the assignment last answered, by topic id (an answer without one: unchanged)
        self._assignment: list[tuple[uuid.UUID, list[int]]] = []

    async def beat(self, beat: Beat, timeout_s: float) -> BeatAnswer:
        settings = self._settings
        if beat.leave:
            epoch = LEAVE_EPOCH if settings.instance_id is None else STATIC_LEAVE_EPOCH
        elif beat.member_id is None:
            epoch, self._assignment = JOIN_EPOCH, []
        else:
            epoch = beat.generation
        if epoch > 0 and beat.poll_age_ms > settings.max_poll_interval_ms:
            await self.beat(Beat(beat.member_id, epoch, beat.topics, (), leave=True), timeout_s)
            raise InvalidRequestError(
                f"the application did not poll for {beat.poll_age_ms} ms (max_poll_interval_ms "
                f"{settings.max_poll_interval_ms}): left group {settings.group}; rejoin",
                code=ErrorCode.UNKNOWN_MEMBER,
            )
        owned = await self._by_topic_id(beat.owned) if not beat.leave else []

        def build(version: int) -> Any:
            request_cls = SERVED[ApiKey.CONSUMER_GROUP_HEARTBEAT].request[version]
            return new_request(
                ApiKey.CONSUMER_GROUP_HEARTBEAT,
                version,
                group_id=settings.group,
                member_id=beat.member_id or self._member_id,
                member_epoch=epoch,
                instance_id=settings.instance_id,
                rebalance_timeout_ms=settings.max_poll_interval_ms,
                subscribed_topic_names=list(beat.topics),
                topic_partitions=[
                    request_cls.TopicPartitions(topic_id=topic_id, partitions=partitions)
                    for topic_id, partitions in owned
                ],
            )

        reply = await self._coordinator.call(
            ApiKey.CONSUMER_GROUP_HEARTBEAT, HEARTBEAT_VERSIONS, build
        )
        if reply.error_code:
            raise self._coordinator.error(reply.error_code, "ConsumerGroupHeartbeat")
        if reply.assignment is not None:
            self._assignment = [
                (t.topic_id, list(t.partitions)) for t in reply.assignment.topic_partitions
            ]
        return BeatAnswer(
            member_id=reply.member_id or self._member_id,
            generation=int(reply.member_epoch),
            assigned=await self._by_name(beat.topics),
            pending=0 < reply.heartbeat_interval_ms <= PENDING_RECHECK_MS,
        )

    async def _by_topic_id(
        self, owned: tuple[TopicPartition, ...]
    ) -> list[tuple[uuid.UUID, list[int]]]:
        unknown = {tp.topic for tp in owned if tp.topic not in self._metadata.topic_ids}
        if unknown:
            await self._metadata.refresh(unknown)
        ids = self._metadata.topic_ids
        by_topic: dict[uuid.UUID, list[int]] = {}
        for tp in sorted(owned):
            topic_id = ids.get(tp.topic)
            if topic_id is not None:  # a deleted topic: nothing left to report
                by_topic.setdefault(topic_id, []).append(tp.partition)
        return list(by_topic.items())

    async def _by_name(self, topics: tuple[str, ...]) -> frozenset[TopicPartition]:
        """The assignment in topic names; ids not known yet are looked up in metadata
        first (a partition of a topic still unknown after that waits for the next
        heartbeat, as Kafka's consumer waits for metadata)."""
        if any(t not in self._metadata.topic_names_by_id for t, _ in self._assignment):
            await self._metadata.refresh(topics)
        names = self._metadata.topic_names_by_id
        return frozenset(
            TopicPartition(names[topic_id], partition)
            for topic_id, partitions in self._assignment
            if topic_id in names
            for partition in partitions
        )


class KafkaGroupClient:
    """``group.OffsetStore`` over Kafka: OffsetFetch and OffsetCommit to the group's
    coordinator."""

    def __init__(self, coordinator: GroupCoordinator, instance_id: str | None = None) -> None:
        self._coordinator = coordinator
        self._instance_id = instance_id

    @property
    def group(self) -> str:
        return self._coordinator.group

    async def fetch_offsets(self, topic: str) -> dict[int, int]:
        def build(version: int) -> Any:
            group_cls = SERVED[ApiKey.OFFSET_FETCH].request[version].OffsetFetchRequestGroup
            asked = group_cls(group_id=self.group, topics=None)  # every committed partition
            if version >= 9:
                asked.member_id, asked.member_epoch = None, -1  # read, not fenced
            return new_request(ApiKey.OFFSET_FETCH, version, groups=[asked], require_stable=False)

        reply = await self._coordinator.call(ApiKey.OFFSET_FETCH, OFFSET_FETCH_VERSIONS, build)
        answer = reply.groups[0]
        if answer.error_code:
            raise self._coordinator.error(answer.error_code, "OffsetFetch")
        offsets = {}
        for answer_topic in answer.topics or ():
            if answer_topic.name != topic:
                continue
            for p in answer_topic.partitions:
                if p.error_code:
                    raise self._coordinator.error(p.error_code, f"OffsetFetch of {topic}")
                if p.committed_offset >= 0:
                    offsets[p.partition_index] = int(p.committed_offset)
        return offsets

    async def commit(self, offsets: Mapping[TopicPartition, int], assignment: Assignment) -> None:
        by_topic: dict[str, list[tuple[int, int]]] = {}
        for tp, offset in sorted(offsets.items()):
            by_topic.setdefault(tp.topic, []).append((tp.partition, offset))

        def build(version: int) -> Any:
            topic_cls = SERVED[ApiKey.OFFSET_COMMIT].request[version].OffsetCommitRequestTopic
            partition_cls = topic_cls.OffsetCommitRequestPartition
            return new_request(
                ApiKey.OFFSET_COMMIT,
                version,
                group_id=self.group,
                generation_id_or_member_epoch=assignment.generation,
                member_id=assignment.member_id or "",
                group_instance_id=self._instance_id if assignment.member_id else None,
                topics=[
                    topic_cls(
                        name=topic,
                        partitions=[
                            partition_cls(partition_index=p, committed_offset=o)
                            for p, o in partitions
                        ],
                    )
                    for topic, partitions in by_topic.items()
                ],
            )

        reply = await self._coordinator.call(ApiKey.OFFSET_COMMIT, OFFSET_COMMIT_VERSIONS, build)
        for answer_topic in reply.topics:
            for p in answer_topic.partitions:
                if p.error_code:
                    where = f"OffsetCommit of {answer_topic.name}[{p.partition_index}]"
                    raise self._coordinator.error(p.error_code, where)
