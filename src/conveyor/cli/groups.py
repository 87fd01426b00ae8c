"""``conveyor group list|describe|delete|reset-offsets|seek``: consumer groups for operators
(``describe`` also shows a share group of that name: ``conveyor queue stats``).

``seek`` is rpk's name for ``reset-offsets`` (the same operation): both set the group's
committed offsets of every partition of a topic, or of the ``-p`` ones only."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_OK
from conveyor.cli.output import add_json_flag, add_url_flag, print_json, print_line, print_table
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers
    from conveyor.client.group import ResetTarget


def register(subparsers: Subparsers) -> None:
    group = subparsers.add_parser(
        "group", help="list, describe, delete consumer groups and set their offsets"
    )
    actions = group.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="groups with their state, members and lag")
    add_url_flag(listing)
    add_json_flag(listing)
    listing.set_defaults(handler=_list)

    describe = actions.add_parser(
        "describe", help="members, assigned partitions, committed offsets and lag"
    )
    describe.add_argument("group")
    add_url_flag(describe)
    add_json_flag(describe)
    describe.set_defaults(handler=_describe)

    delete = actions.add_parser("delete", help="delete an empty group (its committed offsets)")
    delete.add_argument("group")
    add_url_flag(delete)
    delete.set_defaults(handler=_delete)

    for name, text in (
        ("reset-offsets", "set a group's committed offsets (only while it has no members)"),
        ("seek", "the same as reset-offsets (rpk's name)"),
    ):
        reset = actions.add_parser(
            name,
            help=text,
            description="Set the committed offset of every partition of TOPIC for GROUP (or "
            "of the -p ones). --to earliest | latest | OFFSET (an integer) | TIMESTAMP (ISO "
            "8601, e.g. 2026-11-28T10:00:00Z: the first offset at or after it). Refused "
            "with GROUP_NOT_EMPTY while the group has members.",
        )
        reset.add_argument("group")
        reset.add_argument("--topic", "-t", required=True)
        reset.add_argument(
            "-p",
            "--partition",
            type=int,
            action="append",
            default=None,
            metavar="N",
            help="only this partition (repeatable; default: every partition)",
        )
        reset.add_argument("--to", required=True, metavar="earliest|latest|OFFSET|TIMESTAMP")
        add_url_flag(reset)
        add_json_flag(reset)
        reset.set_defaults(handler=_reset)


def parse_target(raw: str) -> ResetTarget:
    """``earliest``, ``latest``, a non-negative integer offset, or an ISO 8601 time."""
    from conveyor.client.group import Timestamp

    if raw in ("earliest", "latest"):
        return "earliest" if raw == "earliest" else "latest"
    if raw.isdigit():
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            f"--to takes earliest, latest, an offset or an ISO 8601 time, not {raw!r}"
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequestError(f"--to {raw!r}: give a time zone (e.g. Z or +01:00)")
    return Timestamp(int(moment.timestamp() * 1000))


def _list(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    with Admin(args.url) as admin:  # over --transport (Kafka's ListGroups on every broker)
        groups = admin.list_groups()
    shared = _share_groups(args.url)
    if args.json:
        print_json(groups)
        return EXIT_OK
    rows = [(g.group, g.protocol, g.state, g.generation, g.members, g.lag) for g in groups]
    columns = ("group", "protocol", "state", "generation", "members", "lag")
    print_table("consumer groups", columns, rows)
    if shared:
        print_line(f"and {len(shared)} share group(s) (queues): conveyor queue list")
    return EXIT_OK


def _share_groups(url: str | None) -> list[object]:
    """Share groups (queues) exist only at the coordinator: a hint, none over Kafka."""
    from conveyor.cli.preflight import needs_coordinator
    from conveyor.client.group import GroupAdmin

    if not needs_coordinator():
        return []
    with GroupAdmin(url) as admin:
        try:
            return list(admin.list_share_groups())
        except ConveyorError:
            return []  # a hint only (a user allowed groups but not share groups)


def _describe(args: argparse.Namespace) -> int:
    from conveyor.cli.queue import print_share_group
    from conveyor.client import Admin
    from conveyor.client.group import GroupAdmin

    try:
        with Admin(args.url) as admin:
            described = admin.describe_group(args.group)
    except ConveyorError as exc:
        if exc.code != ErrorCode.UNKNOWN_GROUP:
            raise
        # not a consumer group: a share group (queue) of that name, or the same 404
        with GroupAdmin(args.url) as groups:
            shared = groups.describe_share_group(args.group)
        if args.json:
            print_json(shared)
        else:
            print_share_group(shared)
        return EXIT_OK
    if args.json:
        print_json(described)
        return EXIT_OK
    print_line(
        f"group [bold]{described.group}[/bold] ({described.protocol} protocol): "
        f"{described.state}, generation {described.generation}, "
        f"{len(described.members)} member(s), lag {described.lag}"
    )
    members = [
        (
            m.member_id + (f" ({m.instance_id})" if m.instance_id else ""),
            m.client_id,
            ",".join(f"{p.topic}-{p.partition}" for p in m.assigned) or "-",
            ",".join(f"{p.topic}-{p.partition}" for p in m.revoking) or "-",
            ",".join(f"{p.topic}-{p.partition}" for p in m.pending) or "-",
            m.last_heartbeat_age_ms,
        )
        for m in described.members
    ]
    print_table(
        "members",
        ("member", "client", "assigned", "revoking", "pending", "heartbeat age ms"),
        members,
    )
    rows = [
        (
            p.topic,
            p.partition,
            p.member_id or "-",
            "-" if p.committed_offset is None else p.committed_offset,
            "-" if p.log_end_offset is None else p.log_end_offset,
            "-" if p.lag is None else p.lag,
        )
        for p in described.partitions
    ]
    print_table("partitions", ("topic", "partition", "member", "committed", "log end", "lag"), rows)
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    with Admin(args.url) as admin:
        admin.delete_group(args.group)
    print_line(f"deleted group {args.group}")
    return EXIT_OK


def _reset(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    target = parse_target(args.to)
    with Admin(args.url) as admin:
        stored = admin.reset_offsets(args.group, args.topic, target, args.partition)
    if args.json:
        print_json(stored)
        return EXIT_OK
    rows = [(o.topic, o.partition, o.offset) for o in stored.offsets]
    print_table(f"group {stored.group}: committed offsets", ("topic", "partition", "offset"), rows)
    return EXIT_OK
