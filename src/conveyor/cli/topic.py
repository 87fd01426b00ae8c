"""``conveyor topic create|list|describe|delete|add-partitions|alter-config|trim``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_OK, positive_int
from conveyor.cli.output import add_json_flag, add_url_flag, print_json, print_line, print_table
from conveyor.protocol.errors import ErrorCode, InvalidRequestError

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers
    from conveyor.protocol.messages import TopicConfig, TopicDescription


def register(subparsers: Subparsers) -> None:
    topic = subparsers.add_parser("topic", help="create, list, describe and delete topics")
    actions = topic.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument("--partitions", type=positive_int, default=8, help="(default 8)")
    create.add_argument(
        "--replication-factor", type=positive_int, default=None, help="(default: cluster default)"
    )
    create.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="topic setting, repeatable (retention_ms, retention_bytes, segment_bytes, "
        "max_message_bytes, flush, min_insync_replicas, unclean_leader_election, "
        "cleanup_policy, delete_retention_ms, min_cleanable_dirty_ratio)",
    )
    add_url_flag(create)
    add_json_flag(create)
    create.set_defaults(handler=_create)

    listing = actions.add_parser("list", help="list topics")
    add_url_flag(listing)
    add_json_flag(listing)
    listing.set_defaults(handler=_list)

    describe = actions.add_parser("describe", help="partitions, leaders, epochs and offsets")
    describe.add_argument("name")
    add_url_flag(describe)
    add_json_flag(describe)
    describe.set_defaults(handler=_describe)

    delete = actions.add_parser("delete", help="delete a topic and its data")
    delete.add_argument("name")
    add_url_flag(delete)
    delete.set_defaults(handler=_delete)

    grow = actions.add_parser("add-partitions", help="grow a topic to N partitions in all")
    grow.add_argument("name")
    grow.add_argument("--partitions", type=positive_int, required=True, help="the new total")
    add_url_flag(grow)
    add_json_flag(grow)
    grow.set_defaults(handler=_add_partitions)

    alter = actions.add_parser(
        "alter-config", help="change some of a topic's settings (applied without a restart)"
    )
    alter.add_argument("name")
    alter.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    alter.add_argument(
        "--reset", action="append", default=[], metavar="KEY", help="back to the default"
    )
    add_url_flag(alter)
    add_json_flag(alter)
    alter.set_defaults(handler=_alter_config)

    trim = actions.add_parser(
        "trim",
        help="delete the records below an offset or older than a time (moves the log start)",
    )
    trim.add_argument("name")
    trim.add_argument(
        "-p",
        "--partition",
        type=int,
        action="append",
        default=None,
        metavar="N",
        help="repeatable (default: every partition)",
    )
    where = trim.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "-o",
        "--offset",
        type=int,
        metavar="OFFSET",
        help="delete every record below it; -1: up to the high watermark (everything)",
    )
    where.add_argument(
        "--before-time",
        type=_time_ms,
        metavar="TIME",
        help="delete every record older than it (ms since the epoch, or ISO 8601 with a zone)",
    )
    trim.add_argument(
        "--timeout-ms", type=positive_int, default=30_000, help="per partition (default 30000)"
    )
    add_url_flag(trim)
    add_json_flag(trim)
    trim.set_defaults(handler=_trim)


def parse_pairs(pairs: list[str], flag: str = "--config") -> dict[str, str]:
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequestError(
                f"{flag} takes KEY=VALUE, not {pair!r}", code=ErrorCode.INVALID_CONFIG
            )
        raw[key.strip()] = value.strip()
    return raw


def parse_config(pairs: list[str]) -> TopicConfig | None:
    """``KEY=VALUE`` pairs -> TopicConfig; unknown keys and bad values are errors."""
    import msgspec

    from conveyor.protocol.messages import TopicConfig

    if not pairs:
        return None
    raw = parse_pairs(pairs)
    try:
        return msgspec.convert(raw, TopicConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(
            f"bad topic config: {exc}", code=ErrorCode.INVALID_CONFIG
        ) from exc


def _create(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    config = parse_config(args.config)
    with Admin(args.url) as admin:
        described = admin.create_topic(
            args.name,
            partitions=args.partitions,
            replication_factor=args.replication_factor,
            config=config,
        )
    if args.json:
        print_json(described)
    else:
        print_line(
            f"created topic [bold]{described.name}[/bold]: {len(described.partitions)} "
            f"partitions, replication factor {described.replication_factor}"
        )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    with Admin(args.url) as admin:
        topics = admin.list_topics()
    if args.json:
        print_json(topics)
        return EXIT_OK
    rows = [(t.name, t.partitions, t.replication_factor) for t in topics]
    print_table("topics", ("topic", "partitions", "replication factor"), rows)
    return EXIT_OK


def _describe(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    with Admin(args.url) as admin:
        described = admin.describe_topic(args.name)
    if args.json:
        print_json(described)
        return EXIT_OK
    print_description(described)
    return EXIT_OK


def print_description(described: TopicDescription) -> None:
    columns = ("partition", "leader", "epoch", "replicas", "isr", "log start", "log end", "HW")
    rows = [
        (
            p.partition,
            p.leader,
            p.leader_epoch,
            ",".join(map(str, p.replicas)),
            ",".join(map(str, p.isr)),
            p.log_start_offset,
            p.log_end_offset,
            p.high_watermark,
        )
        for p in described.partitions
    ]
    title = f"topic {described.name} (replication factor {described.replication_factor})"
    print_table(title, columns, rows)


def _delete(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    with Admin(args.url) as admin:
        admin.delete_topic(args.name)
    print_line(f"deleted topic [bold]{args.name}[/bold]")
    return EXIT_OK


def _add_partitions(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    with Admin(args.url) as admin:
        described = admin.add_partitions(args.name, args.partitions)
    if args.json:
        print_json(described)
    else:
        print_line(
            f"topic [bold]{described.name}[/bold] now has {len(described.partitions)} partitions"
        )
    return EXIT_OK


def _alter_config(args: argparse.Namespace) -> int:
    import msgspec

    from conveyor.client import Admin
    from conveyor.protocol.messages import TopicConfig

    raw = parse_pairs(args.set, "--set")
    if not raw and not args.reset:
        raise InvalidRequestError("nothing to change: give --set KEY=VALUE or --reset KEY")
    # The strings take their types from TopicConfig, as `topic create --config` does; the
    # coordinator checks the merged result against the topic (replication factor...).
    typed = {f.name: f.type for f in msgspec.structs.fields(TopicConfig)}
    values = {}
    for key, value in raw.items():
        if key not in typed:
            raise InvalidRequestError(
                f"unknown topic setting {key!r}; known: {sorted(typed)}",
                code=ErrorCode.INVALID_CONFIG,
            )
        try:
            values[key] = msgspec.convert(value, typed[key], strict=False)
        except msgspec.ValidationError as exc:
            raise InvalidRequestError(
                f"bad value for {key}: {exc}", code=ErrorCode.INVALID_CONFIG
            ) from exc
    with Admin(args.url) as admin:
        described = admin.alter_topic_config(args.name, values, args.reset)
    if args.json:
        print_json(described)
    else:
        config = msgspec.json.encode(described.config).decode()
        print_line(f"topic [bold]{described.name}[/bold] config: {config}")
    return EXIT_OK


def _time_ms(text: str) -> int:
    from conveyor.cli.consume import parse_offset

    try:
        return parse_offset("@" + text).value
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: give ms since the epoch or ISO 8601") from None


def _trim(args: argparse.Namespace) -> int:
    from conveyor.client import Admin, Timestamp, TopicPartition

    target = args.offset if args.before_time is None else Timestamp(args.before_time)
    with Admin(args.url) as admin:
        partitions = args.partition
        if partitions is None:
            partitions = [p.partition for p in admin.describe_topic(args.name).partitions]
        wanted = {TopicPartition(args.name, p): target for p in partitions}
        low = admin.delete_records(wanted, timeout_ms=args.timeout_ms)
    if args.json:
        print_json(
            [
                {"topic": tp.topic, "partition": tp.partition, "low_watermark": w}
                for tp, w in sorted(low.items())
            ]
        )
        return EXIT_OK
    rows = [(tp.partition, w) for tp, w in sorted(low.items())]
    print_table(f"topic {args.name}: records deleted", ("partition", "log start"), rows)
    return EXIT_OK
