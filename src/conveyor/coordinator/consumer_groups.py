"""KIP-848 (``group.protocol=consumer``): Kafka's ConsumerGroupHeartbeat and
ConsumerGroupDescribe on Conveyor's own groups. Conveyor's groups already are KIP-848's
design (server-side assignment, a heartbeat that reports what the member owns, partitions
handed over only once released), so a Kafka member is one more member of the same
``groups.py`` state machine, beside Conveyor's clients, in the same group if they like.

The translation, both ways:

* member epoch 0 joins (with the member id the client chose, KIP-1082; a member that was
  already in the group is first removed: it gave up everything), -1 leaves, -2 is a
  static member (``group.instance.id``) leaving for a restart: its place and partitions
  wait for its next incarnation (``groups.rename``, no rebalance) until its session times
  out; another member joining with an instance id still held is UNRELEASED_INSTANCE_ID
  (a killed process's restart waits for its session), and a heartbeat or leave naming an
  instance id another member now holds is FENCED_INSTANCE_ID (Kafka's rules, its
  ``GroupMetadataManager``); a positive epoch must be one the member was part of, else
  FENCED_MEMBER_EPOCH (so is one from a static member that left with -2);
* the member epoch answered is the group's generation (Conveyor's groups count one
  epoch for the whole group; a member commits with any generation it belongs to);
* topics travel as Kafka topic ids (``views.topic_id``); a regular expression (v1) is
  matched against the cluster's topics, again whenever they change, so new topics join
  in. A regex new to the group is resolved after the heartbeat that brings it, as Kafka
  resolves it asynchronously: that heartbeat's assignment has the member's named topics
  only, the next one (asked for soon) the regex's too; a regex no member uses any more
  is forgotten, so subscribing to it again is new again;
* null fields mean "unchanged": the subscription and owned partitions are remembered;
* the session timeout is the coordinator's (KIP-848: a broker setting), the rebalance
  timeout is the member's max poll interval; heartbeats every ``HEARTBEAT_INTERVAL_MS``,
  every 100 ms while a partition it is given waits for its previous owner to release it;
* the assignment is sent when it changed (or on joining), as Kafka does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from conveyor.coordinator import groups, views
from conveyor.coordinator.group_service import GroupManager
from conveyor.coordinator.groups import TP, Group, Heartbeat
from conveyor.coordinator.model import ClusterState
from conveyor.coordinator.validation import validate_group_name
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.group_messages import (
    ConsumerGroupDescription,
    ConsumerGroupDescriptions,
    ConsumerGroupMember,
    ConsumerHeartbeatRequest,
    ConsumerHeartbeatResponse,
    TopicIdPartitions,
)
from conveyor.protocol.messages import GroupHeartbeatResponse

log = logging.getLogger(__name__)

REGEX_CHARS_MAX: Final = 1_000
PENDING_RECHECK_MS: Final = 100
LEAVE_EPOCH: Final = -1
STATIC_LEAVE_EPOCH: Final = -2


@dataclass(slots=True)
class KafkaMember:
    """What a Kafka member said once and may leave out of later heartbeats."""

    topic_names: list[str] = field(default_factory=list)
    regex: str | None = None
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = 300_000
    sent: list[TP] | None = None  # the assignment last answered
    away: bool = False  # a static member that left for a restart (epoch -2)


class ConsumerGroups:
    def __init__(
        self,
        manager: GroupManager,
        *,
        state: Callable[[], ClusterState],
        session_timeout_ms: int = 10_000,
    ) -> None:
        self._manager = manager
        self._state = state
        self._session_timeout_ms = session_timeout_ms
        self._members: dict[tuple[str, str], KafkaMember] = {}
        # per group, the cluster's topics map its subscriptions were last resolved against:
        # resolving every member's on every heartbeat would cost members x topics regex
        # matches each time; the map is a new object whenever the topics change
        self._resolved_against: dict[str, object] = {}
        # per group, the regexes its members' subscriptions use: resolved, or brought by a
        # heartbeat and resolved from the group's next one (Kafka's asynchronous refresh)
        self._regexes: dict[str, set[str]] = {}
        self._pending_regexes: dict[str, set[str]] = {}

    async def heartbeat(
        self, name: str, request: ConsumerHeartbeatRequest
    ) -> ConsumerHeartbeatResponse:
        validate_group_name(name)
        try:
            return await self._heartbeat(name, request)
        except ConveyorError as exc:  # FENCED_MEMBER is Kafka's FENCED_MEMBER_EPOCH
            log.info("group %s: Kafka member %s: %s", name, request.member_id, exc.message)
            return ConsumerHeartbeatResponse(
                error=exc.code.name, message=exc.message, member_epoch=request.member_epoch
            )

    async def _heartbeat(
        self, name: str, request: ConsumerHeartbeatRequest
    ) -> ConsumerHeartbeatResponse:
        key = (name, request.member_id)
        epoch = request.member_epoch
        holder = self._instance_holder(name, request.instance_id)
        if holder is not None and epoch != 0:
            _check_instance(request, holder)
        if epoch == STATIC_LEAVE_EPOCH and holder is not None:
            holder[1].away = True  # its place waits for it (its session timeout)
            log.info("group %s: static member %s left for a while", name, request.member_id)
            return ConsumerHeartbeatResponse(member_id=request.member_id, member_epoch=epoch)
        if epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            await self._leave(name, request.member_id)
            self._members.pop(key, None)
            self._forget_unused_regexes(name)
            return ConsumerHeartbeatResponse(member_id=request.member_id, member_epoch=epoch)
        if epoch > 0 and key in self._members and self._members[key].away:
            raise _error(
                ErrorCode.FENCED_MEMBER,
                f"static member {request.member_id} left with epoch -2: rejoin with epoch 0",
            )
        group = self._manager.groups.get(name)
        known = group is not None and request.member_id in group.members
        if epoch == 0 and holder is not None:
            back = await self._static_rejoin(name, request, holder)
            if back is not None:
                return back
        if epoch == 0:
            if known:  # it rejoins: it gave up what it had
                await self._leave(name, request.member_id)
            self._members[key] = self._remember(KafkaMember(), request, first=True)
        elif not known and not request.owned:
            raise _error(ErrorCode.UNKNOWN_MEMBER, f"member {request.member_id} is not in {name}")
        elif group is not None and known:
            _check_epoch(group, request.member_id, epoch)
        info = self._remember(self._members.get(key) or KafkaMember(), request, first=False)
        self._members[key] = info
        pending = self._resolve_regexes(name, info)
        if group is not None:
            await self._resolve_group(name, group)
            group = self._manager.groups.get(name)
        beat = self._beat(name, request, info, group if known else None)
        answer = await self._manager.beat(
            name, beat, request.client_id, new_member_id=request.member_id or None
        )
        key = (name, answer.member_id)
        self._members[key] = info
        self._forget_gone(name)
        assigned = [TP(p.topic, p.partition) for p in answer.assigned]
        send = epoch == 0 or info.sent != assigned
        info.sent = assigned
        return ConsumerHeartbeatResponse(
            member_id=answer.member_id,
            member_epoch=answer.generation,
            # a pending regex is resolved at the next heartbeat: ask for it soon
            heartbeat_interval_ms=PENDING_RECHECK_MS if pending else _interval_ms(answer),
            assignment=self._by_topic_id(assigned) if send else None,
        )

    def _instance_holder(
        self, name: str, instance_id: str | None
    ) -> tuple[str, KafkaMember] | None:
        """The member of group ``name`` that holds ``instance_id`` (Kafka's
        ``ConsumerGroup.staticMember``), with what it told us."""
        group = self._manager.groups.get(name)
        if instance_id is None or group is None:
            return None
        return next(
            (
                (member_id, info)
                for (g, member_id), info in self._members.items()
                if g == name and info.instance_id == instance_id and member_id in group.members
            ),
            None,
        )

    async def _static_rejoin(
        self, name: str, request: ConsumerHeartbeatRequest, holder: tuple[str, KafkaMember]
    ) -> ConsumerHeartbeatResponse | None:
        """KIP-848 static membership (Kafka's ``GroupMetadataManager``
        ``maybeReplaceStaticMember``): the instance's new incarnation takes the place its
        previous one left with epoch -2 (its partitions, no rebalance); while that one is
        still active, UNRELEASED_INSTANCE_ID, until it leaves or its session times out.
        None: the holder is this very member rejoining (it gave up what it had)."""
        old_id, info = holder
        if not info.away:
            if old_id == request.member_id:
                return None
            raise _error(
                ErrorCode.UNRELEASED_INSTANCE_ID,
                f"instance {request.instance_id} is still held by member {old_id} (until it "
                f"leaves or its session of {self._session_timeout_ms} ms times out)",
            )
        answer = await self._manager.rename(name, old_id, request.member_id)
        del self._members[(name, old_id)]
        info = self._remember(info, request, first=False)
        info.away = False
        self._members[(name, request.member_id)] = info
        assigned = [TP(p.topic, p.partition) for p in answer.assigned]
        info.sent = assigned
        return ConsumerHeartbeatResponse(
            member_id=request.member_id,
            member_epoch=answer.generation,
            heartbeat_interval_ms=answer.heartbeat_interval_ms,
            assignment=self._by_topic_id(assigned),
        )

    def _remember(
        self, info: KafkaMember, request: ConsumerHeartbeatRequest, first: bool
    ) -> KafkaMember:
        if (
            first
            and request.subscribed_topic_names is None
            and request.subscribed_topic_regex is None
        ):
            raise _error(ErrorCode.INVALID_REQUEST, "a joining member names its subscription")
        if request.subscribed_topic_names is not None:
            info.topic_names = sorted(set(request.subscribed_topic_names))[
                : groups.TOPICS_PER_MEMBER_MAX
            ]
        if request.subscribed_topic_regex is not None:
            info.regex = request.subscribed_topic_regex or None
            _compile(info.regex)
        if request.instance_id is not None:
            info.instance_id = request.instance_id
        if request.rack_id is not None:
            info.rack_id = request.rack_id
        if request.rebalance_timeout_ms >= 0:
            info.rebalance_timeout_ms = request.rebalance_timeout_ms
        return info

    async def _resolve_group(self, name: str, group: Group) -> None:
        """Every Kafka member's topic names and regex resolved against the topics now, at
        once (``groups.resubscribe``), as Kafka resolves a group's subscriptions: members
        subscribed alike see a new topic together."""
        topics_now = self._state().topics
        if self._resolved_against.get(name) is topics_now:
            return
        self._resolved_against[name] = topics_now
        resolved = {
            member_id: self._resolved(name, info)
            for (g, member_id), info in self._members.items()
            if g == name and member_id in group.members
        }
        if any(group.members[m].topics != t for m, t in resolved.items()):
            await self._manager.resubscribe(name, resolved)

    def _resolve_regexes(self, name: str, info: KafkaMember) -> bool:
        """Kafka's asynchronous regex resolution (``GroupMetadataManager``'s
        ``maybeUpdateRegularExpressions``): a regex no member of the group used is resolved
        after the heartbeat that brings it, so that heartbeat assigns the member's named
        topics only; the group's next heartbeat resolves it for every member subscribed to
        it at once. True when ``info``'s regex waits for that."""
        resolved = self._regexes.setdefault(name, set())
        pending = self._pending_regexes.setdefault(name, set())
        if pending:
            resolved |= pending
            pending.clear()
            self._resolved_against.pop(name, None)  # every member's topics again, together
        self._forget_unused_regexes(name)
        if info.regex is None or info.regex in self._regexes.get(name, ()):
            return False
        self._pending_regexes.setdefault(name, set()).add(info.regex)
        return True

    def _forget_unused_regexes(self, name: str) -> None:
        """Kafka deletes a group's resolved regex when its last subscriber leaves it."""
        used = {i.regex for (g, _), i in self._members.items() if g == name and i.regex}
        for table in (self._regexes, self._pending_regexes):
            kept = table.pop(name, set()) & used
            if kept:
                table[name] = kept

    def _resolved(self, name: str, info: KafkaMember) -> tuple[str, ...]:
        state = self._state()
        topics = set(info.topic_names) & set(state.topics)
        resolved = info.regex is not None and info.regex in self._regexes.get(name, ())
        pattern = _compile(info.regex) if resolved else None
        if pattern is not None:
            topics |= {t for t in state.topics if pattern.fullmatch(t)}
        return tuple(sorted(topics))[: groups.TOPICS_PER_MEMBER_MAX]

    def _beat(
        self,
        name: str,
        request: ConsumerHeartbeatRequest,
        info: KafkaMember,
        group: Group | None,
    ) -> Heartbeat:
        state = self._state()
        if request.owned is not None:
            names = {self._topic_id(state, t): t for t in state.topics}
            owned = frozenset(
                TP(names[o.topic_id], p)
                for o in request.owned
                if o.topic_id in names
                for p in o.partitions
            )
        elif group is not None:
            owned = group.members[request.member_id].reported
        else:
            owned = frozenset()
        session_ms = self._session_timeout_ms
        return Heartbeat(
            member_id=None if request.member_epoch == 0 else request.member_id,
            client_id=request.client_id[:200],
            topics=self._resolved(name, info),
            owned=owned,
            session_timeout_ms=session_ms,
            max_poll_interval_ms=min(
                max(info.rebalance_timeout_ms, session_ms), groups.MAX_POLL_INTERVAL_MS_MAX
            ),
            host=request.client_host[:100],
            instance_id=info.instance_id,  # shown by describe (the rules are above)
        )

    async def _leave(self, name: str, member_id: str) -> None:
        if name in self._manager.groups and member_id in self._manager.groups[name].members:
            leave = Heartbeat(member_id, "", (), frozenset(), leave=True)
            await self._manager.beat(name, leave, "")

    def _forget_gone(self, name: str) -> None:
        present = self._manager.groups.get(name)
        if present is None:
            self._resolved_against.pop(name, None)
        members = present.members if present is not None else {}
        for key in [k for k in self._members if k[0] == name and k[1] not in members]:
            del self._members[key]
        self._forget_unused_regexes(name)

    def _topic_id(self, state: ClusterState, topic: str) -> str:
        return views.topic_id(state.cluster_id, state.topics[topic])

    def _by_topic_id(self, partitions: Iterable[TP]) -> list[TopicIdPartitions]:
        state = self._state()
        by_topic: dict[str, list[int]] = {}
        for tp in sorted(partitions):
            if tp.topic in state.topics:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
        return [
            TopicIdPartitions(topic_id=self._topic_id(state, t), partitions=p, topic=t)
            for t, p in by_topic.items()
        ]

    def reset(self) -> None:
        self._members.clear()
        self._resolved_against.clear()
        self._regexes.clear()
        self._pending_regexes.clear()

    # ---- ConsumerGroupDescribe -------------------------------------------------------------

    def describe(self, names: list[str]) -> ConsumerGroupDescriptions:
        return ConsumerGroupDescriptions(groups=[self._describe(n) for n in names[:1000]])

    def _describe(self, name: str) -> ConsumerGroupDescription:
        try:
            validate_group_name(name)
        except ConveyorError as exc:
            return ConsumerGroupDescription(group=name, error=exc.code.name)
        group = self._manager.groups.get(name)
        if group is None:
            error = ErrorCode.UNKNOWN_GROUP.name
            committed = name in self._state().group_offsets
            if committed and not self._manager.classic.active(name):
                return ConsumerGroupDescription(group=name, state="Empty")
            return ConsumerGroupDescription(group=name, error=error)
        members = []
        for m in sorted(group.members.values(), key=lambda m: m.member_id):
            info = self._members.get((name, m.member_id)) or KafkaMember(topic_names=list(m.topics))
            members.append(
                ConsumerGroupMember(
                    member_id=m.member_id,
                    member_epoch=group.generation,
                    client_id=m.client_id,
                    client_host=m.host,
                    instance_id=info.instance_id,
                    rack_id=info.rack_id,
                    subscribed_topic_names=info.topic_names,
                    subscribed_topic_regex=info.regex,
                    assignment=self._by_topic_id(group.assigned_to(m.member_id)),
                    target_assignment=self._by_topic_id(group.target.get(m.member_id, ())),
                )
            )
        return ConsumerGroupDescription(
            group=name,
            state={"empty": "Empty", "stable": "Stable", "rebalancing": "Reconciling"}[group.state],
            group_epoch=group.generation,
            assignment_epoch=group.generation,
            members=members,
        )


def _interval_ms(answer: GroupHeartbeatResponse) -> int:
    """Kafka clients heartbeat at the interval each answer gives: one with partitions
    still held by their previous owner asks again soon (they move once released), as
    Conveyor's own client does."""
    return PENDING_RECHECK_MS if answer.pending else answer.heartbeat_interval_ms


def _check_epoch(group: Group, member_id: str, epoch: int) -> None:
    member = group.members[member_id]
    if not member.joined_generation <= epoch <= group.generation:
        raise _error(
            ErrorCode.FENCED_MEMBER,
            f"member epoch {epoch} is not one member {member_id} belongs to "
            f"({member.joined_generation}..{group.generation}): rejoin",
        )


def _check_instance(request: ConsumerHeartbeatRequest, holder: tuple[str, KafkaMember]) -> None:
    """Kafka's ``throwIfInstanceIdIsFenced``: a heartbeat or leave naming an instance id
    that another member now holds comes from a replaced incarnation."""
    if holder[0] != request.member_id:
        raise _error(
            ErrorCode.FENCED_INSTANCE_ID,
            f"static member {request.member_id} with instance id {request.instance_id} was "
            f"replaced by member {holder[0]}",
        )


def _compile(regex: str | None) -> re.Pattern[str] | None:
    """Kafka matches with RE2/J; Python's ``re`` takes the usual subset. Bounded in size,
    and matched against topic names only (at most 249 characters each)."""
    if not regex:
        return None
    if len(regex) > REGEX_CHARS_MAX:
        raise _error(ErrorCode.INVALID_REGULAR_EXPRESSION, f"longer than {REGEX_CHARS_MAX}")
    try:
        return re.compile(regex)
    except re.error as exc:
        raise _error(ErrorCode.INVALID_REGULAR_EXPRESSION, f"{regex!r}: {exc}") from None


def _error(code: ErrorCode, message: str) -> ConveyorError:
    return ConveyorError(message, code=code)
