"""``conveyor produce`` and ``conveyor consume``: the console producer and consumer."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_OK, positive_int
from conveyor.cli.output import add_url_flag, print_json_line
from conveyor.protocol.errors import InvalidRequestError

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers
    from conveyor.client import Consumer, Message


def register(subparsers: Subparsers) -> None:
    produce = subparsers.add_parser(
        "produce",
        help="send messages (the VALUE arguments, or one per line of stdin)",
        description="Send each VALUE as a message; with no VALUE, send each line of standard "
        "input. Prints the partition and offset of each acknowledged message.",
    )
    produce.add_argument("topic")
    produce.add_argument("values", nargs="*", metavar="VALUE")
    produce.add_argument("--key", default=None, help="message key (same key: same partition)")
    produce.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    produce.add_argument("--acks", choices=("0", "1", "all"), default="all")
    produce.add_argument("--json", action="store_true", help="one JSON line per message")
    add_url_flag(produce)
    produce.set_defaults(handler=_produce, trailing_values="values")

    consume = subparsers.add_parser(
        "consume",
        help="print messages of a topic",
        description="Print messages as they arrive. Without --group every partition is read "
        "and nothing is committed; with --group the console joins consumer group GROUP as a "
        "member (its share of the partitions, from the group's committed position; "
        "docs/consumer-groups.md).",
    )
    consume.add_argument("topic")
    consume.add_argument("--group", default=None, help="join this consumer group")
    consume.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the earliest offset when the group has no committed position",
    )
    consume.add_argument("--max", type=positive_int, default=None, metavar="N", help="exit after N")
    consume.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="exit after S idle seconds"
    )
    consume.add_argument("--json", action="store_true", help="one JSON line per message")
    add_url_flag(consume)
    consume.set_defaults(handler=_consume)


def _headers(pairs: list[str]) -> list[tuple[str, bytes]]:
    headers = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidRequestError(f"--header takes NAME=VALUE, not {pair!r}")
        headers.append((name, value.encode()))
    return headers


def _produce(args: argparse.Namespace) -> int:
    from conveyor.client import Producer

    headers = _headers(args.header)
    values = args.values or (line.rstrip("\n") for line in sys.stdin)
    with Producer(args.url, acks=args.acks) as producer:
        futures = [
            producer.send(args.topic, value, key=args.key, headers=headers or None)
            for value in values
        ]
        producer.flush()
        for future in futures:
            meta = future.result()
            if args.json:
                print_json_line(
                    {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}
                )
            else:
                print(f"{meta.topic}[{meta.partition}]@{meta.offset}")
    return EXIT_OK


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


def _print_message(message: Message, as_json: bool) -> None:
    if as_json:
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
    else:
        key = _text(message.key)
        prefix = f"{key}\t" if key is not None else ""
        print(f"{prefix}{_text(message.value)}", flush=True)


def _commit(consumer: Consumer) -> None:
    """A fenced commit is not fatal to the console: the consumer rejoins by itself."""
    from conveyor.protocol.errors import ConveyorError

    try:
        consumer.commit()
    except ConveyorError as exc:
        print(f"commit failed (messages may be printed again): {exc}", file=sys.stderr)


def _consume(args: argparse.Namespace) -> int:
    import time

    from conveyor.client import Consumer

    fresh_group = args.group is None
    seen = 0
    idle_since = time.monotonic()
    with Consumer(
        args.url,
        topics=[args.topic],
        group_id=args.group,
        client_id="conveyor-console",
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=False,
    ) as consumer:
        while args.max is None or seen < args.max:
            wanted = None if args.max is None else args.max - seen
            messages = consumer.poll(timeout=0.5, max_records=wanted)
            for message in messages:
                _print_message(message, args.json)
            seen += len(messages)
            if messages:
                idle_since = time.monotonic()
                if not fresh_group:
                    _commit(consumer)
            elif args.timeout is not None and time.monotonic() - idle_since >= args.timeout:
                break
    return EXIT_OK
