"""``conveyor consume``: the console consumer, kcat's ``-C`` and rpk's ``topic consume``.

Where to read: ``-p`` partitions (default every one) from ``-o`` offsets (``beginning``,
``end``, ``stored``, ``N``, ``-N`` from the end, ``@TIME`` in ms or ISO 8601), or, with
``--group`` and neither, as a member of the group. When to stop: ``-c N`` messages,
``-e`` at the end of every partition, ``--timeout S`` idle. How to print: a line per
message (``key<TAB>value``), ``-f`` a kcat format, or ``--output json|yaml``.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from conveyor.cli.common import EXIT_OK, positive_int
from conveyor.cli.output import add_json_flag, add_url_flag, print_json_line
from conveyor.protocol.errors import ConveyorError, InvalidRequestError

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers
    from conveyor.client import Consumer, Message, TopicPartition


@dataclass(frozen=True, slots=True)
class OffsetSpec:
    """Where ``-o`` starts each partition."""

    kind: Literal["beginning", "end", "stored", "offset", "from_end", "time"]
    value: int = 0


def parse_offset(text: str) -> OffsetSpec:
    """``beginning``, ``end``, ``stored``, ``N``, ``-N`` (N before the end), ``@TIME``
    (milliseconds since the epoch, or ISO 8601 with a zone). ValueError when none."""
    text = text.strip()
    if text in ("beginning", "end", "stored"):
        return OffsetSpec(text)  # type: ignore[arg-type]
    if text.isascii() and text.isdigit():
        return OffsetSpec("offset", int(text))
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        return OffsetSpec("from_end", int(text[1:]))
    if text.startswith("@") and len(text) > 1:
        moment = text[1:]
        if moment.isascii() and moment.isdigit():
            return OffsetSpec("time", int(moment))
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError(f"{moment!r} has no time zone (add Z or +01:00)")
        return OffsetSpec("time", int(parsed.timestamp() * 1000))
    raise ValueError(f"not an offset: {text!r}")


def _offset_type(text: str) -> OffsetSpec:
    try:
        return parse_offset(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}; use beginning, end, stored, N, -N or @TIME"
        ) from None


def register(subparsers: Subparsers) -> None:
    consume = subparsers.add_parser(
        "consume",
        help="print messages of a topic",
        description="Print messages as they arrive. With -p or -o the partitions are read "
        "directly (kcat's -C), from the offsets -o says; otherwise every partition without "
        "--group, or, with --group, as a member of that consumer group (its share of the "
        "partitions, from the group's committed positions; docs/consumer-groups.md).",
    )
    consume.add_argument("topic")
    consume.add_argument(
        "-p",
        "--partition",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="read this partition (repeatable; default: every partition)",
    )
    consume.add_argument(
        "-o",
        "--offset",
        type=_offset_type,
        default=None,
        metavar="WHERE",
        help="start at: beginning, end, stored (the group's), N, -N (N before the end), "
        "@TIME (ms since the epoch or ISO 8601)",
    )
    consume.add_argument("--group", "-G", default=None, help="commit to (or join) this group")
    consume.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the earliest offset when the group has no committed position",
    )
    consume.add_argument(
        "--isolation",
        choices=("read_uncommitted", "read_committed"),
        default="read_uncommitted",
        help="read_committed: only committed transactions' records (docs/transactions.md)",
    )
    consume.add_argument(
        "-c",
        "--count",
        "--max",
        dest="max",
        type=positive_int,
        default=None,
        metavar="N",
        help="exit after N messages",
    )
    consume.add_argument(
        "-e", "--exit-at-end", action="store_true", help="exit at the end of every partition"
    )
    consume.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="exit after S idle seconds"
    )
    consume.add_argument(
        "-f",
        "--format",
        default=None,
        metavar="FMT",
        help="kcat's format: %%t topic, %%p partition, %%o offset, %%k key, %%s value, "
        "%%T timestamp (ms), %%h headers, %%K/%%S key/value length, \\n \\t",
    )
    add_json_flag(consume, table="key<TAB>value lines")
    add_url_flag(consume)
    consume.set_defaults(handler=_consume, data_path=True)


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


def render(template: str, message: Message) -> str:
    """kcat's ``-f`` tokens (module docstring); ``%%`` is a percent sign."""
    fields = {
        "t": message.topic,
        "p": str(message.partition),
        "o": str(message.offset),
        "k": _text(message.key) or "",
        "s": _text(message.value) or "",
        "T": str(message.timestamp_ms),
        "h": ",".join(f"{name}={_text(value) or ''}" for name, value in message.headers),
        "K": str(-1 if message.key is None else len(message.key)),
        "S": str(-1 if message.value is None else len(message.value)),
        "%": "%",
    }
    out, i = [], 0
    while i < len(template):
        char = template[i]
        if char in "%\\" and i + 1 < len(template):
            following = template[i + 1]
            if char == "%" and following in fields:
                out.append(fields[following])
                i += 2
                continue
            if char == "\\" and following in "nt\\":
                out.append({"n": "\n", "t": "\t", "\\": "\\"}[following])
                i += 2
                continue
        out.append(char)
        i += 1
    return "".join(out)


def _print_message(message: Message, args: argparse.Namespace) -> None:
    if args.json:
        print_json_line(
            {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "timestamp_ms": message.timestamp_ms,
                "key": _text(message.key),
                "value": _text(message.value),
                "headers": {k: _text(v) for k, v in message.headers} or None,
            }
        )
    elif args.format is not None:
        sys.stdout.write(render(args.format, message))
        sys.stdout.flush()
    else:
        key = _text(message.key)
        prefix = f"{key}\t" if key is not None else ""
        print(f"{prefix}{_text(message.value)}", flush=True)


def _commit(consumer: Consumer) -> None:
    """A fenced commit is not fatal to the console: the consumer rejoins by itself."""
    try:
        consumer.commit()
    except ConveyorError as exc:
        print(f"commit failed (messages may be printed again): {exc}", file=sys.stderr)


def start_offsets(
    consumer: Consumer, partitions: list[TopicPartition], spec: OffsetSpec
) -> list[tuple[str, int, int]]:
    """Each partition's first offset to read for ``spec``."""
    if spec.kind == "offset":
        return [(tp.topic, tp.partition, spec.value) for tp in partitions]
    starts = consumer.beginning_offsets(partitions)
    ends = consumer.end_offsets(partitions)
    chosen: dict[TopicPartition, int] = {}
    if spec.kind == "time":
        found = consumer.offsets_for_times(dict.fromkeys(partitions, spec.value))
        for tp in partitions:
            hit = found[tp]
            chosen[tp] = ends[tp] if hit is None else hit.offset  # nothing that late: the end
    elif spec.kind == "stored":
        committed = consumer.committed(partitions)
        for tp in partitions:
            stored = committed[tp]
            chosen[tp] = starts[tp] if stored is None else stored
    else:
        for tp in partitions:
            if spec.kind == "beginning":
                chosen[tp] = starts[tp]
            elif spec.kind == "end":
                chosen[tp] = ends[tp]
            else:
                chosen[tp] = max(starts[tp], ends[tp] - spec.value)
    return [(tp.topic, tp.partition, offset) for tp, offset in chosen.items()]


def _partitions(url: str | None, topic: str, wanted: list[int]) -> list[TopicPartition]:
    from conveyor.client import Admin, TopicPartition

    with Admin(url) as admin:
        count = len(admin.describe_topic(topic).partitions)
    missing = [p for p in wanted if not 0 <= p < count]
    if missing:
        raise InvalidRequestError(f"topic {topic!r} has partitions 0..{count - 1}, not {missing}")
    return [TopicPartition(topic, p) for p in (wanted or range(count))]


def _consume(args: argparse.Namespace) -> int:
    from conveyor.client import Consumer
    from conveyor.client.transport_choice import client_transport

    direct = bool(args.partition) or args.offset is not None
    if args.offset is not None and args.offset.kind == "stored" and args.group is None:
        raise InvalidRequestError("-o stored reads a group's committed offsets: give --group")
    transport, servers = client_transport(None, None)  # --transport, --bootstrap-server
    with Consumer(
        args.url,
        None if direct else [args.topic],
        transport=transport,
        bootstrap_servers=servers,
        group_id=args.group,
        client_id="conveyor-console",
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=False,
        isolation=args.isolation,
    ) as consumer:
        if direct:
            partitions = _partitions(args.url, args.topic, args.partition)
            spec = args.offset or OffsetSpec("beginning" if args.from_beginning else "end")
            consumer.assign(start_offsets(consumer, partitions, spec))
        _read(consumer, args)
    return EXIT_OK


def _read(consumer: Consumer, args: argparse.Namespace) -> None:
    seen = 0
    idle_since = time.monotonic()
    while args.max is None or seen < args.max:
        wanted = None if args.max is None else args.max - seen
        messages = consumer.poll(timeout=0.5, max_records=wanted)
        for message in messages:
            _print_message(message, args)
        seen += len(messages)
        if messages:
            idle_since = time.monotonic()
            if args.group is not None:
                _commit(consumer)
        elif _done(consumer, args, idle_since):
            break


def _done(consumer: Consumer, args: argparse.Namespace, idle_since: float) -> bool:
    """-e: every assigned partition read to its end; --timeout: idle long enough."""
    if args.exit_at_end and consumer.assignment() and consumer.caught_up():
        return True
    return args.timeout is not None and time.monotonic() - idle_since >= args.timeout
