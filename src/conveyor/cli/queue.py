"""``conveyor queue list|stats|configure|receive|dead-letters|requeue``: share groups
(queues, docs/queues.md) for operators.

``dead-letters`` and ``requeue`` read the group's dead-letter topic, whose records name
their source in ``conveyor-dlq-*`` headers. ``requeue`` produces each one back to its source
topic (its key, value, timestamp and own headers; a new offset there, so the group delivers
it again with a fresh delivery count) and records its progress as the committed offsets of
the consumer group ``<group>.requeue`` on the dead-letter topic, so a second requeue moves
only what was dead-lettered since. A requeue interrupted between its produce and its
commit moves those records again on the next run (at least once), as a shovel does.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Final

from conveyor.cli.common import EXIT_OK, positive_int
from conveyor.cli.output import add_json_flag, add_url_flag, print_json, print_line, print_table
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.share import (
    DLQ_HEADER_DELIVERY_COUNT,
    DLQ_HEADER_ERROR,
    DLQ_HEADER_OFFSET,
    DLQ_HEADER_PARTITION,
    DLQ_HEADER_TOPIC,
    DLQ_HEADERS,
    ShareGroupConfig,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from conveyor.cli.common import Subparsers
    from conveyor.client.types import Message
    from conveyor.protocol.share import ShareGroupDescription

SHOWN_CHARS_MAX: Final = 80  # of a key or value in a table (whole in --json)
REQUEUE_GROUP_SUFFIX: Final = ".requeue"
READ_DEADLINE_S: Final = 60.0


def register(subparsers: Subparsers) -> None:
    queue = subparsers.add_parser(
        "queue", help="share groups (queues): receive, counts, settings, dead letters"
    )
    actions = queue.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="share groups with their counts")
    _common(listing, listing.set_defaults, _list)

    stats = actions.add_parser(
        "stats", help="a share group's members and per-partition counts (in flight, ...)"
    )
    stats.add_argument("group")
    _common(stats, stats.set_defaults, _stats)

    configure = actions.add_parser(
        "configure",
        help="create a share group or change its settings",
        description="Settings left out keep the group's current value (a new group: the "
        "defaults of docs/queues.md#settings). The mode of a group with members is fixed.",
    )
    configure.add_argument("group")
    add = configure.add_argument
    add("--mode", choices=("unordered", "key_ordered"))
    add("--lock-duration-ms", type=positive_int, metavar="MS")
    add("--max-delivery-attempts", type=positive_int, metavar="N")
    add("--dead-letter-topic", metavar="TOPIC")
    add("--window-records-max", type=positive_int, metavar="N")
    add("--retry-backoff-ms", type=int, metavar="MS")
    add("--retry-backoff-max-ms", type=int, metavar="MS")
    add("--start-from", choices=("earliest", "latest"))
    _common(configure, configure.set_defaults, _configure)

    receive = actions.add_parser(
        "receive",
        help="receive records as a member of a share group, then acknowledge them",
        description="Joins GROUP on TOPIC, receives up to -n records (waiting up to "
        "--timeout seconds), prints them and settles them with --then: accept (the "
        "default), release (delivered again), reject (to the dead-letter topic) or none "
        "(their locks expire), then leaves the group.",
    )
    receive.add_argument("topic")
    receive.add_argument("group")
    receive.add_argument("-n", "--max-records", type=positive_int, default=10, metavar="N")
    receive.add_argument("--timeout", type=float, default=5.0, metavar="S")
    receive.add_argument("--mode", choices=("unordered", "key_ordered"), default=None)
    receive.add_argument(
        "--then", choices=("accept", "release", "reject", "none"), default="accept"
    )
    receive.add_argument("--reason", default="rejected by conveyor queue receive")
    _common(receive, receive.set_defaults, _receive)

    dead = actions.add_parser("dead-letters", help="the records in a group's dead-letter topic")
    dead.add_argument("group")
    dead.add_argument("-n", "--max-records", type=positive_int, default=100, metavar="N")
    _common(dead, dead.set_defaults, _dead_letters)

    requeue = actions.add_parser(
        "requeue",
        help="move dead-lettered records back to their source topic",
        description="Produces each record of GROUP's dead-letter topic not requeued yet "
        "back to its source topic (progress: the consumer group GROUP.requeue).",
    )
    requeue.add_argument("group")
    requeue.add_argument("--limit", type=positive_int, default=None, metavar="N")
    _common(requeue, requeue.set_defaults, _requeue)


def _common(parser: argparse.ArgumentParser, defaults: Any, handler: Any) -> None:
    add_url_flag(parser)
    add_json_flag(parser)
    defaults(handler=handler)


# ---- groups --------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    from conveyor.client.group import GroupAdmin

    with GroupAdmin(args.url) as admin:
        groups = admin.list_share_groups()
    if args.json:
        print_json(groups)
        return EXIT_OK
    rows = [
        (
            g.group,
            g.config.mode,
            len(g.members),
            g.in_flight,
            g.available,
            g.archived,
            _age(g.oldest_in_flight_age_ms),
        )
        for g in groups
    ]
    columns = ("group", "mode", "members", "in flight", "available", "archived", "oldest ms")
    print_table("share groups", columns, rows)
    return EXIT_OK


def _stats(args: argparse.Namespace) -> int:
    from conveyor.client.group import GroupAdmin

    with GroupAdmin(args.url) as admin:
        described = admin.describe_share_group(args.group)
    if args.json:
        print_json(described)
    else:
        print_share_group(described)
    return EXIT_OK


def print_share_group(described: ShareGroupDescription) -> None:
    """The table form of a share group (also ``conveyor group describe``'s)."""
    config = described.config
    print_line(
        f"share group [bold]{described.group}[/bold] ({config.mode}): epoch {described.epoch}, "
        f"{len(described.members)} member(s), {described.in_flight} in flight, "
        f"{described.available} available, {described.archived} archived, oldest in flight "
        f"{_age(described.oldest_in_flight_age_ms)} ms; lock {config.lock_duration_ms} ms, "
        f"{config.max_delivery_attempts} attempts, dead letters to {described.dead_letter_topic}"
    )
    members = [
        (
            m.member_id,
            m.client_id,
            m.host,
            ",".join(f"{p.topic}-{p.partition}" for p in m.assigned) or "-",
            m.last_heartbeat_age_ms,
        )
        for m in described.members
    ]
    print_table("members", ("member", "client", "host", "assigned", "heartbeat age ms"), members)
    rows = [
        (
            p.topic,
            p.partition,
            p.start_offset,
            p.end_offset,
            p.in_flight,
            p.available,
            p.acknowledged,
            p.archived,
            _age(p.oldest_in_flight_age_ms),
        )
        for p in described.partitions
    ]
    columns = (
        "topic",
        "partition",
        "start",
        "read end",
        "in flight",
        "available",
        "acknowledged",
        "archived",
        "oldest ms",
    )
    print_table("partitions", columns, rows)


def _configure(args: argparse.Namespace) -> int:
    from conveyor.client.group import GroupAdmin

    names = (
        "mode",
        "lock_duration_ms",
        "max_delivery_attempts",
        "dead_letter_topic",
        "window_records_max",
        "retry_backoff_ms",
        "retry_backoff_max_ms",
        "start_from",
    )
    with GroupAdmin(args.url) as admin:
        try:
            current = admin.describe_share_group(args.group).config
        except ConveyorError as exc:
            if exc.code != ErrorCode.UNKNOWN_GROUP:
                raise
            current = ShareGroupConfig()
        changes = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
        config = ShareGroupConfig(**{**{n: getattr(current, n) for n in names}, **changes})
        info = admin.configure_share_group(args.group, config)
    if args.json:
        print_json(info)
    else:
        print_line(f"share group {args.group}: {info.config}")
    return EXIT_OK


def _age(age_ms: int | None) -> str:
    return "-" if age_ms is None else str(age_ms)


# ---- records -------------------------------------------------------------------------------


def _shown(data: bytes | None, whole: bool) -> str | None:
    if data is None:
        return None
    text = data.decode("utf-8", "replace")
    return text if whole or len(text) <= SHOWN_CHARS_MAX else text[: SHOWN_CHARS_MAX - 1] + "…"


def _receive(args: argparse.Namespace) -> int:
    from conveyor.client.queue import Queue

    with Queue(args.topic, args.group, url=args.url, mode=args.mode, prefetch=False) as queue:
        messages = queue.receive(max_records=args.max_records, timeout=args.timeout)
        for message in messages:
            if args.then == "accept":
                message.ack()
            elif args.then == "release":
                message.release(delay=0)
            elif args.then == "reject":
                message.reject(args.reason)
        failures = queue.commit() if args.then != "none" else []
    rows = [
        {
            "partition": m.partition,
            "offset": m.offset,
            "delivery_count": m.delivery_count,
            "key": _shown(m.key, args.json),
            "value": _shown(m.value, args.json),
            "lock_token": m.lock_token,
        }
        for m in messages
    ]
    if args.json:
        print_json({"records": rows, "then": args.then, "failed": failures})
        return EXIT_OK
    columns = ("partition", "offset", "delivery_count", "key", "value")
    print_table(
        f"{len(rows)} record(s), {args.then}", columns, [[r[c] for c in columns] for r in rows]
    )
    for failure in failures:
        print_line(f"[red]not acknowledged[/red]: {failure}")
    return EXIT_OK


def _header(message: Message, name: str) -> str:
    for header, value in message.headers:
        if header == name and value is not None:
            return value.decode("utf-8", "replace")
    return ""


def _dead_letter_topic(url: str | None, group: str) -> str:
    from conveyor.client.group import GroupAdmin

    with GroupAdmin(url) as admin:
        return admin.describe_share_group(group).dead_letter_topic


def _read_to_end(
    url: str | None,
    topic: str,
    limit: int | None,
    *,
    group_id: str | None = None,
    handle: Callable[[list[Message]], None] | None = None,
) -> list[Message]:
    """The records of ``topic`` from ``group_id``'s committed offsets (or the beginning) up
    to the high watermarks as they were at the start, at most ``limit``. With a group,
    ``handle(records)`` runs, then their offsets are committed."""
    import time

    from conveyor.client.admin import Admin
    from conveyor.client.consumer import Consumer
    from conveyor.client.types import TopicPartition

    with Admin(url) as admin:
        try:
            count = len(admin.describe_topic(topic).partitions)
        except ConveyorError as exc:
            if exc.code == ErrorCode.UNKNOWN_TOPIC:
                return []  # nothing was dead-lettered yet
            raise
    partitions = [TopicPartition(topic, p) for p in range(count)]
    got: list[Message] = []
    with Consumer(url, group_id=group_id, enable_auto_commit=False) as consumer:
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + READ_DEADLINE_S

        def behind() -> bool:
            return any((consumer.position(p.topic, p.partition) or 0) < ends[p] for p in partitions)

        while behind() and (limit is None or len(got) < limit):
            if time.monotonic() > deadline:
                raise InvalidRequestError(f"{topic}: not read to its end in {READ_DEADLINE_S} s")
            got += [
                m
                for m in consumer.poll(timeout=0.5)
                if m.offset < ends[TopicPartition(topic, m.partition)]
            ]
        got = got[:limit]
        if group_id is not None and handle is not None:
            handle(got)
            next_offsets: dict[int, int] = {}
            for message in got:
                next_offsets[message.partition] = message.offset + 1
            if next_offsets:
                consumer.commit([(topic, p, o) for p, o in next_offsets.items()])
    return got


def _dead_letters(args: argparse.Namespace) -> int:
    topic = _dead_letter_topic(args.url, args.group)
    rows = []
    for message in _read_to_end(args.url, topic, args.max_records):
        rows.append(
            {
                "partition": message.partition,
                "offset": message.offset,
                "source": f"{_header(message, DLQ_HEADER_TOPIC)}-"
                f"{_header(message, DLQ_HEADER_PARTITION)}@{_header(message, DLQ_HEADER_OFFSET)}",
                "delivery_count": int(_header(message, DLQ_HEADER_DELIVERY_COUNT) or 0),
                "error": _header(message, DLQ_HEADER_ERROR),
                "key": _shown(message.key, args.json),
                "value": _shown(message.value, args.json),
            }
        )
    if args.json:
        print_json({"topic": topic, "records": rows})
        return EXIT_OK
    columns = ("partition", "offset", "source", "delivery_count", "error", "key", "value")
    print_table(f"dead letters in {topic}", columns, [[r[c] for c in columns] for r in rows])
    return EXIT_OK


def _requeue(args: argparse.Namespace) -> int:
    from conveyor.client.producer import Producer

    topic = _dead_letter_topic(args.url, args.group)
    moved: dict[str, int] = {}

    def produce_back(messages: list[Message]) -> None:
        with Producer(args.url) as producer:
            sent = []
            for message in messages:
                source = _header(message, DLQ_HEADER_TOPIC)
                if not source:
                    continue  # not a dead letter (written by something else): left alone
                own = [(n, v) for n, v in message.headers if n not in DLQ_HEADERS]
                sent.append(
                    producer.send(
                        source, message.value, message.key, own, timestamp_ms=message.timestamp_ms
                    )
                )
                moved[source] = moved.get(source, 0) + 1
            producer.flush()
            for future in sent:  # every record acknowledged before the commit (or raise)
                future.result()

    _read_to_end(
        args.url, topic, args.limit, group_id=args.group + REQUEUE_GROUP_SUFFIX, handle=produce_back
    )
    if args.json:
        print_json({"topic": topic, "requeued": moved})
    else:
        total = sum(moved.values())
        where = ", ".join(f"{n} to {t}" for t, n in sorted(moved.items())) or "nothing"
        print_line(f"requeued {total} record(s) from {topic}: {where}")
    return EXIT_OK
