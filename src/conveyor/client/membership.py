"""A consumer's group membership: the heartbeat loop and the cooperative hand-over.

Runs on the fetcher's loop. Every ``heartbeat_interval_ms`` it reports the partitions the
consumer owns (the first heartbeat, without a member id, joins) and applies the answer
(docs/consumer-groups.md). How a heartbeat travels is a :class:`HeartbeatSender`'s only
job: ``kafka_group.KafkaHeartbeat`` (KIP-848's ConsumerGroupHeartbeat on the brokers'
Kafka listeners); this state machine knows nothing of the wire:

* partitions in ``assigned`` that the consumer does not own start fetching at once, from
  the group's committed offset (their previous owner committed before releasing them);
* partitions it owns that are not in ``assigned`` are *revoked*: they keep fetching until
  the application's next ``poll``, which commits what was returned for them (the
  application is done with it: it called ``poll`` again) and drops them; the next
  heartbeat no longer reports them, and the coordinator gives them to their new owner.

Static membership: with an ``instance_id`` (``Consumer(group_instance_id=...)``), a restarted
process takes over its previous member's partitions without a rebalance. Over HTTP the
take-over is at once; over Kafka (KIP-848) it is at once when the previous process left
with ``close`` (epoch -2), and when that process was killed, once its session has timed
out: until then the coordinator answers UNRELEASED_INSTANCE_ID and this loop keeps
asking. A process whose id was taken over is told FENCED_INSTANCE_ID, stops
heartbeating, and its next ``poll`` raises that error.

Fencing: an UNKNOWN_MEMBER answer (the coordinator removed us: session timeout, not
polling for ``max_poll_interval_ms``) or a fenced commit drops every partition with its
uncommitted work and joins again. A consumer that has not heard from the coordinator for
a whole session timeout assumes it was removed and drops everything before it returns
another message, so a paused process (SIGSTOP) never processes a partition that moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from conveyor.client.fetch_buffer import FetchBuffer
from conveyor.client.fetcher import Fetcher
from conveyor.client.group import Assignment, OffsetStore
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.transport.throttle import throttled
from conveyor.transport.waits import wait_event

log = throttled(logging.getLogger(__name__))  # one line per repeated warning per 30 s

# While partitions of its target are still held elsewhere, a member heartbeats this often,
# so a released partition is picked up in about this time rather than a full interval.
PENDING_RECHECK_S = 0.1
FENCING_CODES = frozenset(
    {ErrorCode.UNKNOWN_MEMBER, ErrorCode.FENCED_MEMBER, ErrorCode.ILLEGAL_GENERATION}
)


@dataclass(frozen=True, slots=True)
class MembershipSettings:
    group: str
    client_id: str
    session_timeout_ms: int
    heartbeat_interval_ms: int
    max_poll_interval_ms: int
    request_timeout_ms: int
    # static membership (Kafka's group.instance.id, KIP-345): a restarted member with the
    # same id takes its place and partitions back, without a rebalance
    instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat as the state machine asks for it: no ``member_id`` joins, ``leave``
    leaves; ``generation`` is the last one answered (KIP-848's member epoch)."""

    member_id: str | None
    generation: int
    topics: tuple[str, ...]
    owned: tuple[TopicPartition, ...]
    poll_age_ms: int = 0
    leave: bool = False


@dataclass(frozen=True, slots=True)
class BeatAnswer:
    """``assigned``: consume these now; ``pending``: more are coming once their previous
    owner has released them (so ask again soon)."""

    member_id: str
    generation: int
    assigned: frozenset[TopicPartition]
    pending: bool = False


class HeartbeatSender(Protocol):
    """Sends one heartbeat; a refusal is the typed ``ConveyorError`` (UNKNOWN_MEMBER,
    FENCED_MEMBER, FENCED_INSTANCE_ID...) the state machine acts on."""

    async def beat(self, beat: Beat, timeout_s: float) -> BeatAnswer: ...


# A change of the member's partitions, for the rebalance callbacks (called from poll):
# ("assigned", partitions) when new ones arrived, ("lost", partitions) when fencing or a
# lost session took them without a chance to commit.
ChangeListener = Callable[[str, tuple[TopicPartition, ...]], None]


class Membership:
    """See the module docstring. Thread-safety: ``poll_started`` and ``session_lost`` are
    called from the application's thread; everything else runs on the fetcher's loop."""

    def __init__(
        self,
        settings: MembershipSettings,
        *,
        sender: HeartbeatSender,
        fetcher: Fetcher,
        buffer: FetchBuffer,
        group: OffsetStore,
        on_change: ChangeListener | None = None,
    ) -> None:
        self.settings = settings
        self._on_change = on_change
        self._sender = sender
        self._fetcher = fetcher
        self._buffer = buffer
        self._group = group
        self.member_id: str | None = None
        self.generation = -1
        self.revoking: frozenset[TopicPartition] = frozenset()
        self.joined = asyncio.Event()
        self.fenced_count = 0  # times this consumer lost its partitions to fencing
        self.pending = False  # partitions of ours still held by their previous owner
        # the group has members of Kafka's classic protocol: refused until they leave
        self.refused: ConveyorError | None = None
        # the last heartbeat said a subscribed topic does not exist (yet): nothing to wait for
        self.topics_missing = False
        self._last_ok_s = time.monotonic()
        self._last_poll_s = time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- the application's side ------------------------------------------------------------

    def poll_started(self) -> None:
        self._last_poll_s = time.monotonic()

    def session_lost(self) -> bool:
        """No successful heartbeat for a whole session timeout: assume we were removed."""
        age_s = time.monotonic() - self._last_ok_s
        return self.member_id is not None and age_s * 1000 > self.settings.session_timeout_ms

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="conveyor-group-heartbeat")

    async def close(self, commit: bool) -> None:
        """Commit (if asked), leave the group so partitions move at once, stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.member_id is None:
            return
        if commit:
            with contextlib.suppress(ConveyorError):
                await self.commit(self._buffer.uncommitted())
        with contextlib.suppress(ConveyorError):
            await self._beat(leave=True)
        log.info("group %s: member %s left", self.settings.group, self.member_id)
        self.member_id = None

    # ---- commits ---------------------------------------------------------------------------

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit as this member; a fencing answer drops everything (and re-raises)."""
        if not offsets:
            return
        try:
            await self._group.commit(offsets, self._fetcher.assignment)
        except ConveyorError as exc:
            if exc.code in FENCING_CODES:
                self.drop_all(f"commit fenced: {exc}")
            raise
        self._buffer.mark_committed(offsets)

    async def release_revoked(
        self, commit: bool, revoked: frozenset[TopicPartition] | None = None
    ) -> None:
        """The application polled again: commit what it consumed of the revoked partitions
        (``revoked``: those its ``on_revoke`` was told of), stop them, and tell the
        coordinator at once."""
        revoked = self.revoking if revoked is None else revoked & self.revoking
        if not revoked:
            return
        if commit:
            offsets = {tp: o for tp, o in self._buffer.uncommitted().items() if tp in revoked}
            with contextlib.suppress(ConveyorError):  # fencing already dropped them
                await self.commit(offsets)
        keep = tuple(tp for tp in self._fetcher.assignment.partitions if tp not in revoked)
        self._apply(keep)
        self.revoking = self.revoking - revoked
        log.info("group %s: released %s", self.settings.group, sorted(revoked))
        self._wake.set()

    def beat_soon(self) -> None:
        """Heartbeat now, not at the interval's end (a subscribed topic was just found)."""
        self._wake.set()

    def drop_all(self, why: str) -> None:
        """Forget every partition and its uncommitted work; join again."""
        log.warning(
            "group %s: member %s fenced (%s): rejoining", self.settings.group, self.member_id, why
        )
        self.fenced_count += 1
        lost = self._fetcher.assignment.partitions
        self._apply(())
        if lost and self._on_change is not None:
            self._on_change("lost", tuple(lost))
        self.revoking = frozenset()
        self.member_id = None
        self.generation = -1
        self._wake.set()

    # ---- the loop --------------------------------------------------------------------------

    @property
    def _interval_s(self) -> float:
        settings = self.settings
        return min(settings.heartbeat_interval_ms, settings.session_timeout_ms // 3) / 1000

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            poll_age_ms = int((time.monotonic() - self._last_poll_s) * 1000)
            stuck = poll_age_ms > self.settings.max_poll_interval_ms
            if self.member_id is not None and self.session_lost():
                self.drop_all("no heartbeat answered for a session timeout")
            if self.member_id is None and stuck:
                pass  # rejoin only once the application polls again (as Kafka)
            else:
                try:
                    dropped = self.fenced_count
                    answer = await self._beat(poll_age_ms=poll_age_ms)
                    failures = 0
                    if self.fenced_count == dropped:
                        self._on_answer(answer)
                    # else: the member was dropped (its session lost) while this answer was
                    # on its way: it belongs to the old membership (found by the chaos
                    # suite's coordinator takeovers); the next beat joins again
                    self._note_missing_topics(self._fetcher.missing_topics())
                except ConveyorError as exc:
                    failures += 1
                    if exc.code is ErrorCode.FENCED_INSTANCE_ID:
                        self._fenced_for_good(exc)
                        return
                    if exc.code in FENCING_CODES:
                        self.drop_all(str(exc))
                        continue
                    if exc.code is ErrorCode.INCONSISTENT_GROUP_PROTOCOL:
                        self.refused = exc  # poll raises it until the group lets us in
                    self._heartbeat_failed(exc)
            delay_s = self._interval_s if failures == 0 else min(self._interval_s, 0.2 * failures)
            if self.pending and failures == 0:  # ask again soon: they move once released
                delay_s = min(delay_s, PENDING_RECHECK_S)
            await wait_event(self._wake, delay_s)

    def _note_missing_topics(self, missing: list[str]) -> None:
        """KIP-848 lets a member subscribe to topics that do not exist yet (it joins with
        nothing to own): say so once, at INFO, as long as any is missing."""
        if missing and not self.topics_missing:
            log.info(
                "group %s: waiting for topic(s) %s to be created",
                self.settings.group,
                ", ".join(missing),
            )
        self.topics_missing = bool(missing)

    def _heartbeat_failed(self, error: ConveyorError) -> None:
        """Log a failed heartbeat: repeats of one line are throttled (``log`` has a
        RepeatFilter), and a topic that does not exist yet is not a warning."""
        if error.code is ErrorCode.UNKNOWN_TOPIC:
            if not self.topics_missing:
                log.info(
                    "group %s: waiting for topic(s) %s to be created",
                    self.settings.group,
                    ", ".join(self._fetcher.topics),
                )
            self.topics_missing = True
            return
        if error.code is ErrorCode.UNRELEASED_INSTANCE_ID:
            # a wait, not a failure: one line (throttled), since a second live process
            # with the same id (a configuration mistake) would otherwise idle unseen
            log.warning(
                "group %s: waiting for instance id %s: held by another member (a live "
                "process with the same group_instance_id, or one killed without leaving "
                "until its session ends): %s",
                self.settings.group,
                self.settings.instance_id,
                error.message,
            )
            return
        log.warning("group %s: heartbeat failed: %s", self.settings.group, error)

    def _fenced_for_good(self, error: ConveyorError) -> None:
        """FENCED_INSTANCE_ID: a newer process joined with our ``instance_id`` and took our
        partitions; this one stops heartbeating, and its next ``poll`` raises the error."""
        log.error(
            "group %s: member %s stops: %s", self.settings.group, self.member_id, error.message
        )
        self.refused = error
        self._apply(())
        self.revoking = frozenset()
        self.member_id = None
        self.joined.set()  # nobody waits for an assignment that will not come

    async def _beat(self, *, poll_age_ms: int = 0, leave: bool = False) -> BeatAnswer:
        settings = self.settings
        beat = Beat(
            member_id=self.member_id,
            generation=self.generation,
            topics=tuple(self._fetcher.topics),
            owned=tuple(self._fetcher.assignment.partitions),
            poll_age_ms=poll_age_ms,
            leave=leave,
        )
        # a heartbeat stuck on a dying coordinator must not use up the session: retry
        timeout_s = min(settings.request_timeout_ms, settings.session_timeout_ms // 3) / 1000
        return await self._sender.beat(beat, timeout_s)

    def _on_answer(self, answer: BeatAnswer) -> None:
        self._last_ok_s = time.monotonic()
        self.refused = None
        if answer.member_id != self.member_id:
            log.info(
                "group %s: joined as %s (generation %d)",
                self.settings.group,
                answer.member_id,
                answer.generation,
            )
        self.member_id = answer.member_id
        self.generation = answer.generation
        self.pending = answer.pending
        assigned = answer.assigned
        owned = set(self._fetcher.assignment.partitions)
        added = assigned - owned
        self.revoking = frozenset(owned - assigned)
        if added:
            log.info("group %s: assigned %s", self.settings.group, sorted(added))
        # keep fetching the revoked ones until the application polls (release_revoked)
        self._apply(tuple(sorted(owned | added)))
        if added and self._on_change is not None:
            self._on_change("assigned", tuple(sorted(added)))
        self.joined.set()

    def _apply(self, partitions: tuple[TopicPartition, ...]) -> None:
        self._fetcher.apply(Assignment(partitions, self.generation, self.member_id))
