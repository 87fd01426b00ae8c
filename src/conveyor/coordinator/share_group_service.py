"""The shell around ``share_groups.py``: memberships in memory, settings through the
coordinator's durable transitions, and the share-partition counts brokers report in
their heartbeats (for ``describe``)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Final

from conveyor.coordinator import share_groups
from conveyor.coordinator.group_service import Transition, partition_counts
from conveyor.coordinator.model import ClusterState, ShareGroup
from conveyor.coordinator.share_groups import Membership, ShareBeat
from conveyor.coordinator.state import Result, TopicDefaults
from conveyor.coordinator.validation import validate_group_name
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import BrokerId, SharePartitionStats
from conveyor.protocol.share import (
    ShareGroupConfigRequest,
    ShareGroupDescription,
    ShareGroupHeartbeatRequest,
    ShareGroupHeartbeatResponse,
    ShareGroupInfo,
    ShareGroupList,
    ShareMemberDescription,
    dead_letter_topic,
)

log = logging.getLogger(__name__)

SHARE_GROUPS_WITH_MEMBERS_MAX: Final = 10_000
REPORT_STALE_MS: Final = 10_000  # a broker's share report older than this is ignored


def _info(group: ShareGroup) -> ShareGroupInfo:
    return ShareGroupInfo(
        group=group.name, config=group.config, version=group.version, created_ms=group.created_ms
    )


class ShareGroupManager:
    """Narrow dependencies: the state (a read), ``transition`` (the only way settings
    change), the clock, the topic defaults and ``__share_state``'s partition count."""

    def __init__(
        self,
        *,
        state: Callable[[], ClusterState],
        transition: Transition,
        now_ms: Callable[[], int],
        defaults: TopicDefaults,
        state_partitions: int,
    ) -> None:
        self._state = state
        self._transition = transition
        self._now_ms = now_ms
        self._defaults = defaults
        self._state_partitions = state_partitions
        self.memberships: dict[str, Membership] = {}
        self._reports: dict[BrokerId, tuple[int, list[SharePartitionStats]]] = {}
        self._lock = asyncio.Lock()

    def reset(self) -> None:
        """This coordinator stopped being active: members rejoin the next one."""
        self.memberships.clear()
        self._reports.clear()

    # ---- settings ------------------------------------------------------------------------

    async def configure(self, name: str, request: ShareGroupConfigRequest) -> ShareGroupInfo:
        now = self._now_ms()

        def decide(state: ClusterState) -> Result[ShareGroup]:
            return share_groups.configure(
                state,
                name,
                config=request.config,
                now_ms=now,
                state_partitions=self._state_partitions,
                defaults=self._defaults,
            )

        return _info(await self._transition(decide))

    def config(self, name: str) -> ShareGroupInfo:
        validate_group_name(name)
        group = self._state().share_groups.get(name)
        if group is None:
            raise InvalidRequestError(
                f"no share group {name!r}", code=ErrorCode.UNKNOWN_GROUP, group=name
            )
        return _info(group)

    async def delete(self, name: str) -> None:
        """Only without members; the share-partitions' state stays in ``__share_state`` under
        the old group's creation time, so a group created again starts afresh."""
        validate_group_name(name)
        async with self._lock:
            membership = self.memberships.get(name)
            if membership is not None and membership.members:
                raise InvalidRequestError(
                    f"share group {name} has {len(membership.members)} members: stop them first",
                    code=ErrorCode.GROUP_NOT_EMPTY,
                    group=name,
                )
            await self._transition(lambda s: share_groups.remove(s, name))

    # ---- membership ----------------------------------------------------------------------

    async def heartbeat(
        self, name: str, request: ShareGroupHeartbeatRequest, host: str = ""
    ) -> ShareGroupHeartbeatResponse:
        validate_group_name(name)
        counts = partition_counts(self._state())
        unknown = [t for t in request.topics if t not in counts]
        if unknown:
            raise InvalidRequestError(
                f"unknown topics {unknown}", code=ErrorCode.UNKNOWN_TOPIC, topics=unknown
            )
        group = await self._declared(name, request)
        beat = ShareBeat(
            member_id=request.member_id,
            client_id=request.client_id[:200],
            topics=tuple(request.topics),
            session_timeout_ms=request.session_timeout_ms,
            leave=request.leave,
            host=host[:100],
        )
        async with self._lock:
            if name not in self.memberships and len(self.memberships) >= (
                SHARE_GROUPS_WITH_MEMBERS_MAX
            ):
                raise InvalidRequestError(
                    f"{SHARE_GROUPS_WITH_MEMBERS_MAX} share groups have members, the limit"
                )
            before = self.memberships.get(name) or Membership(name)
            after, member_id = share_groups.heartbeat(
                before,
                beat,
                self._now_ms(),
                counts,
                f"{request.client_id[:40] or 'member'}-{uuid.uuid4().hex[:12]}",
            )
            self._keep(before, after)
        return ShareGroupHeartbeatResponse(
            member_id=member_id,
            epoch=after.epoch,
            assigned=share_groups.assigned_to(after, member_id),
            config=group.config,
            config_version=group.version,
            heartbeat_interval_ms=share_groups.HEARTBEAT_INTERVAL_MS,
        )

    async def _declared(self, name: str, request: ShareGroupHeartbeatRequest) -> ShareGroup:
        existing = self._state().share_groups.get(name)
        if existing is not None and (request.mode is None or request.mode == existing.config.mode):
            return existing  # the common case: no transition
        now = self._now_ms()

        def decide(state: ClusterState) -> Result[ShareGroup]:
            return share_groups.declare(
                state,
                name,
                mode=request.mode,
                config=request.config,
                now_ms=now,
                state_partitions=self._state_partitions,
                defaults=self._defaults,
            )

        return await self._transition(decide)

    def _keep(self, before: Membership, after: Membership) -> None:
        if after.epoch != before.epoch:
            log.info(
                "share group %s: epoch %d, members %d, assignment %s",
                after.name,
                after.epoch,
                len(after.members),
                {m: [f"{t}-{p}" for t, p in tps] for m, tps in sorted(after.assignment.items())},
            )
        if after.members:
            self.memberships[after.name] = after
        else:
            self.memberships.pop(after.name, None)

    async def expire(self) -> None:
        counts = partition_counts(self._state())
        async with self._lock:
            now = self._now_ms()
            for name, before in list(self.memberships.items()):
                after = share_groups.expire(before, now, counts)
                for gone in set(before.members) - set(after.members):
                    log.warning(
                        "share group %s: member %s removed (session timed out); its locks "
                        "expire at their deadlines",
                        name,
                        gone,
                    )
                self._keep(before, after)

    # ---- reports and views ---------------------------------------------------------------

    def report(self, broker_id: BrokerId, stats: list[SharePartitionStats] | None) -> None:
        """A broker's heartbeat: the share-partitions it leads (soft state)."""
        if stats is None:
            self._reports.pop(broker_id, None)
        else:
            self._reports[broker_id] = (self._now_ms(), stats)

    def _partitions(self, name: str) -> list[SharePartitionStats]:
        """The freshest report of each share-partition of the group (a partition moving
        between brokers is reported by both for a moment: the higher epoch wins)."""
        now = self._now_ms()
        best: dict[tuple[str, int], SharePartitionStats] = {}
        for received_ms, rows in self._reports.values():
            if now - received_ms > REPORT_STALE_MS:
                continue
            for row in rows:
                if row.group != name:
                    continue
                key = (row.topic, row.partition)
                if key not in best or row.leader_epoch > best[key].leader_epoch:
                    best[key] = row
        return [best[k] for k in sorted(best)]

    def describe(self, name: str) -> ShareGroupDescription:
        info = self.config(name)
        membership = self.memberships.get(name) or Membership(name)
        now = self._now_ms()
        members = [
            ShareMemberDescription(
                member_id=m.member_id,
                client_id=m.client_id,
                host=m.host,
                topics=list(m.topics),
                assigned=share_groups.assigned_to(membership, m.member_id),
                last_heartbeat_age_ms=max(0, now - m.last_heartbeat_ms),
            )
            for m in sorted(membership.members.values(), key=lambda m: m.member_id)
        ]
        rows = self._partitions(name)
        ages = [r.oldest_in_flight_age_ms for r in rows if r.oldest_in_flight_age_ms is not None]
        return ShareGroupDescription(
            group=name,
            config=info.config,
            epoch=membership.epoch,
            members=members,
            partitions=rows,
            in_flight=sum(r.in_flight for r in rows),
            available=sum(r.available for r in rows),
            archived=sum(r.archived for r in rows),
            oldest_in_flight_age_ms=max(ages) if ages else None,
            dead_letter_topic=dead_letter_topic(name, info.config),
        )

    def list(self) -> ShareGroupList:
        return ShareGroupList(groups=[self.describe(n) for n in sorted(self._state().share_groups)])

    def member_counts(self) -> dict[str, int]:
        return {name: len(m.members) for name, m in self.memberships.items()}
