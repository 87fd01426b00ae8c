"""The queue workload (``conveyor chaos --workload queue``): share groups under faults.

The producers are the stream workload's (unique keyed values ``"{key}:{seq}"`` sent one at
a time with acks=all to the workload topic, ops ``send``). Two share groups read that topic,
one per ordering mode (:data:`GROUPS`); each consumer process
(:mod:`conveyor.chaos.queue_proc`, crashed by ``kill-consumer`` and restarted as a new
incarnation) runs :data:`MEMBERS_PER_GROUP` members of each. Members accept most records,
release some once (then accept them), always release a few (dead-lettered past
:data:`MAX_DELIVERY_ATTEMPTS`), reject some (dead-lettered at once) and, rarely, forget one
(its lock expires: a failed attempt). A reader follows both dead-letter topics.

History ops (besides ``send`` and the nemesis's), values plain data, ``t0``/``t`` the
machine's monotonic clock (ns) when the operation was invoked / answered:

- ``receive`` ok: ``{"group", "member_id", "records": [[partition, offset, key, value,
  delivery_count, lock_token], ...], "t0", "t"}`` (empty receives are not recorded);
- ``commit`` invoke ``{"group", "acks": [[partition, offset, type, lock_token, reason]],
  "t0"}``, then ok with ``"refused": [[partition, first, last, type, error]]`` (the others
  are confirmed) or info (unknown: an error or timeout; or no outcome: the process died);
- ``dlq`` ok: ``{"group", "records": [[dlq_partition, dlq_offset, key, value, headers]],
  "t"}`` from ``dlq-reader``;
- ``drain`` ok: ``{"drained": bool, "start": {group: {partition: start_offset}}, "end":
  {partition: high_watermark}}`` once producers stopped and members settled what they could.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import conveyor
from conveyor.chaos.checker import parse_value
from conveyor.chaos.children import parse_line
from conveyor.chaos.workload import TOPIC, Workload
from conveyor.client.errors import ConveyorError
from conveyor.client.group import GroupAdmin
from conveyor.protocol.share import ShareGroupConfig, ShareMode

log = logging.getLogger(__name__)

GROUPS: Final[dict[str, ShareMode]] = {
    "chaos-q-ordered": "key_ordered",
    "chaos-q-unordered": "unordered",
}
MEMBERS_PER_GROUP: Final = 2
LOCK_DURATION_MS: Final = 3_000
MAX_DELIVERY_ATTEMPTS: Final = 3
FORGET_PROBABILITY: Final = 0.01
DLQ_PARTITIONS: Final = 2
REJECT_EVERY: Final = 13  # sequence % 13 == 0: rejected
ALWAYS_RELEASE_EVERY: Final = 11  # sequence % 11 == 0: released until dead-lettered
RETRY_ONCE_EVERY: Final = 5  # sequence % 5 == 0: released on its first delivery
REJECT_PREFIX: Final = "chaos-reject "
RELEASE_PREFIX: Final = "chaos-release "
DRAIN_MAX_S: Final = 60.0
DLQ_CATCH_UP_S: Final = 30.0


def dead_letter_topic(group: str) -> str:
    return f"{group}.dead-letters"


def short(group: str) -> str:
    """A member-name prefix: ``o`` for the key-ordered group, ``u`` for the other."""
    return "o" if GROUPS[group] == "key_ordered" else "u"


def group_config(group: str) -> ShareGroupConfig:
    return ShareGroupConfig(
        mode=GROUPS[group],
        lock_duration_ms=LOCK_DURATION_MS,
        max_delivery_attempts=MAX_DELIVERY_ATTEMPTS,
        dead_letter_topic=dead_letter_topic(group),
    )


def decide(value: str, delivery_count: int) -> tuple[str, str | None]:
    """A record's acknowledgement, (type, reason), from its value and delivery count."""
    try:
        _key, sequence = parse_value(value)
    except ValueError:
        return "accept", None
    if sequence % REJECT_EVERY == 0:
        return "reject", REJECT_PREFIX + value
    if sequence % ALWAYS_RELEASE_EVERY == 0:
        return "release", RELEASE_PREFIX + value
    if sequence % RETRY_ONCE_EVERY == 0 and delivery_count == 1:
        return "release", RELEASE_PREFIX + value
    return "accept", None


def prepare(url: str, replication_factor: int) -> None:
    """The dead-letter topics (replicated like the workload topic, so faults reach them)
    and both groups' settings, before any member joins."""
    with conveyor.Admin(url) as admin:
        for group in GROUPS:
            admin.create_topic(
                dead_letter_topic(group), partitions=DLQ_PARTITIONS,
                replication_factor=replication_factor,
            )  # fmt: skip
    with GroupAdmin(url) as groups:
        for group in GROUPS:
            groups.configure_share_group(group, group_config(group))


@dataclass
class QueueWorkload(Workload):
    compactors: int = 0
    consumer_module: ClassVar[str] = "conveyor.chaos.queue_proc"
    stop_dlq: threading.Event = field(default_factory=threading.Event)
    dlq_thread: threading.Thread | None = None

    def start(self) -> None:
        super().start()
        self.dlq_thread = threading.Thread(target=self._read_dead_letters, name="dlq-reader")
        self.dlq_thread.start()

    def warm_up(self) -> dict[str, str]:
        """An acknowledged send from each producer, records received by each member."""
        return {f"producer-{i}": "send" for i in range(self.producers)} | {
            f"consumer-{m}": "receive" for m in range(self.consumers)
        }

    def abort(self) -> None:
        self.stop_dlq.set()
        super().abort()

    def stop(self, drain_s: float) -> None:
        """Stop producers, let members settle everything (at most ``DRAIN_MAX_S``), stop
        them, then let the reader catch up with the dead-letter topics."""
        self.stop_producing.set()
        for thread in self.threads[: self.producers]:
            thread.join(30)
        self._drain(max(drain_s, DRAIN_MAX_S))
        self.stop_consuming.set()
        self._signal_consumers(signal.SIGTERM)  # each member closes: releases what it holds
        for thread in self.threads[self.producers : self.producers + self.consumers]:
            thread.join(30)
        self._signal_consumers(signal.SIGKILL)
        self.stop_dlq.set()
        if self.dlq_thread is not None:
            self.dlq_thread.join(DLQ_CATCH_UP_S + 10)

    def _drain(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        drained = False
        start: dict[str, dict[int, int]] = {}
        end: dict[int, int] = {}
        while time.monotonic() < deadline:
            try:
                start, end = settled_offsets(self.url)
            except ConveyorError as e:
                log.info("drain: %s", e)
                time.sleep(1)
                continue
            drained = all(start[g].get(p, -1) >= hw for g in GROUPS for p, hw in end.items())
            if drained:
                break
            time.sleep(0.5)
        value = {"drained": drained, "start": start, "end": end}
        self.history.record("harness", "ok", "drain", value)

    def _read_dead_letters(self) -> None:
        """Every dead letter of both groups, in the history as it is read; once stopped,
        read on until caught up (the members are gone: nothing more is written). Caught
        up is the consumer's word and the topics' high watermarks reached: a consumer
        stuck on a partition took its last answer's end for the end (issue 15), and the
        dead letters it never read looked missing."""
        topics = [dead_letter_topic(g) for g in GROUPS]
        by_topic = {dead_letter_topic(g): g for g in GROUPS}
        with conveyor.Consumer(
            self.url, topics, enable_auto_commit=False, fetch_max_wait_ms=200,
            request_timeout_ms=3_000,
        ) as consumer:  # fmt: skip
            quiet = 0
            behind: list[str] = []
            deadline: float | None = None
            while quiet < 4:
                if self.stop_dlq.is_set() and deadline is None:
                    deadline = time.monotonic() + DLQ_CATCH_UP_S
                if deadline is not None and time.monotonic() > deadline:
                    log.warning("dead-letter reader: not caught up in %s s", DLQ_CATCH_UP_S)
                    break
                try:
                    messages = consumer.poll(timeout=0.5)
                except ConveyorError as e:
                    log.info("dead-letter reader: %s", e)
                    continue
                for group in GROUPS:
                    records = [
                        [m.partition, m.offset, _text(m.key), _text(m.value), _headers(m)]
                        for m in messages
                        if by_topic[m.topic] == group
                    ]
                    if records:
                        value = {"group": group, "records": records, "t": time.monotonic_ns()}
                        self.history.record("dlq-reader", "ok", "dlq", value)
                if deadline is not None:
                    still = not messages and consumer.caught_up()
                    if still:
                        behind = unread_dead_letters(self.url, consumer.position, topics)
                    quiet = quiet + 1 if still and not behind else 0
        value = {"caught_up": quiet >= 4, "behind": behind}
        self.history.record("dlq-reader", "ok", "dlq-end", value)

    def _record_line(self, process: str, line: str) -> None:
        """As the stream workload's, one history process per member (``queue-0.1/o1``)."""
        raw = parse_line(line)
        if raw is None:
            return
        member = f"{process}/{raw['member']}"
        self.history.record(member, raw["type"], raw["f"], raw["value"], raw["error"])


def settled_offsets(url: str) -> tuple[dict[str, dict[int, int]], dict[int, int]]:
    """Per group, each share-partition's start offset (everything below is settled; the
    coordinator's view, from the leaders' heartbeats: it may lag, never run ahead), and each
    partition's high watermark."""
    with GroupAdmin(url) as groups:
        start = {
            g: {p.partition: p.start_offset for p in groups.describe_share_group(g).partitions}
            for g in GROUPS
        }
    with conveyor.Admin(url) as admin:
        end = {p.partition: p.high_watermark or 0 for p in admin.describe_topic(TOPIC).partitions}
    return start, end


def unread_dead_letters(
    url: str, position: Callable[[str, int], int | None], topics: list[str]
) -> list[str]:
    """``topic[partition] at position/high watermark`` for each partition of ``topics``
    the reader has not read to its end (or whose end could not be learnt)."""
    try:
        with conveyor.Admin(url) as admin:
            ends = {t: admin.describe_topic(t).partitions for t in topics}
    except ConveyorError as e:
        return [f"high watermarks unknown: {e}"]
    out = []
    for topic, partitions in ends.items():
        for p in partitions:
            at, end = position(topic, p.partition) or 0, p.high_watermark or 0
            if at < end:
                out.append(f"{topic}[{p.partition}] at {at}/{end}")
    return out


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode(errors="replace")


def _headers(message: Any) -> dict[str, str | None]:
    return {name: _text(value) for name, value in message.headers}
