"""``conveyor produce``: the console producer, kcat's ``-P`` and rpk's ``topic produce``.

Values are the arguments, or one per line of standard input, *streamed*: a reader thread
feeds lines as they come (``tail -f log | conveyor produce t`` works), each line is sent
at once and its acknowledgement printed as soon as it and every earlier one are
acknowledged (in input order), with at most ``--in-flight-max`` lines unacknowledged
(bounded memory whatever the input's length). A summary goes to stderr at the end; the
exit code is 1 when a line failed. ``-K DELIM`` splits each line into key and value at the
first DELIM, ``-H`` adds headers, ``-p`` picks the partition, ``--compression`` the codec.
"""

from __future__ import annotations

import argparse
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

from conveyor.cli.common import EXIT_ERROR, EXIT_OK, positive_int
from conveyor.cli.output import add_json_flag, add_url_flag, print_json_line
from conveyor.protocol.errors import ConveyorError, InvalidRequestError

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers
    from conveyor.client import Producer, RecordFuture

IN_FLIGHT_MAX = 10_000  # lines sent and not yet acknowledged, at most
_POLL_S = 0.05  # how often acknowledgements are printed while no new line arrives
_EOF = None


def register(subparsers: Subparsers) -> None:
    produce = subparsers.add_parser(
        "produce",
        help="send messages (the VALUE arguments, or one per line of stdin, streamed)",
        description="Send each VALUE as a message; with no VALUE, send each line of standard "
        "input as it arrives (works with tail -f). Prints the partition and offset of each "
        "acknowledged message, in input order, and a summary on stderr at the end.",
    )
    produce.add_argument("topic")
    produce.add_argument("values", nargs="*", metavar="VALUE")
    produce.add_argument("--key", "-k", default=None, help="key of every message")
    produce.add_argument(
        "-K",
        "--key-delimiter",
        default=None,
        metavar="DELIM",
        help="each line is KEY DELIM VALUE (split at the first DELIM; kcat's -K)",
    )
    produce.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a header of every message (repeatable)",
    )
    produce.add_argument(
        "-p", "--partition", type=int, default=None, metavar="N", help="send to partition N"
    )
    produce.add_argument(
        "--compression",
        "-z",
        choices=("none", "gzip", "snappy", "lz4", "zstd"),
        default="none",
        help="compression codec of the batches (default: none)",
    )
    produce.add_argument("--acks", choices=("0", "1", "all"), default="all")
    produce.add_argument(
        "--in-flight-max",
        type=positive_int,
        default=IN_FLIGHT_MAX,
        metavar="N",
        help=f"lines sent and not yet acknowledged, at most (default {IN_FLIGHT_MAX})",
    )
    add_json_flag(produce, table="topic[partition]@offset lines")
    add_url_flag(produce)
    produce.set_defaults(handler=_produce, trailing_values="values", data_path=True)


def parse_headers(pairs: list[str]) -> list[tuple[str, bytes]]:
    headers = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidRequestError(f"--header takes NAME=VALUE, not {pair!r}")
        headers.append((name, value.encode()))
    return headers


def split_key(line: str, delimiter: str | None, key: str | None) -> tuple[str | None, str]:
    """(key, value) of one input line; with ``-K``, a line without the delimiter is a
    value without a key (kcat does the same)."""
    if delimiter is None:
        return key, line
    found, sep, value = line.partition(delimiter)
    return (found, value) if sep else (key, line)


def _stdin_lines(stream: TextIO) -> queue.Queue[str | None]:
    """Lines of ``stream`` as they arrive, read on a daemon thread into a bounded queue
    (the reader waits while the producer is behind: memory stays bounded)."""
    lines: queue.Queue[str | None] = queue.Queue(maxsize=1024)

    def read() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(_EOF)

    threading.Thread(target=read, name="conveyor-produce-stdin", daemon=True).start()
    return lines


def _lines(args: argparse.Namespace) -> Iterator[str | None]:
    """The values, then EOF; None (a pause) now and then while stdin has nothing new, so
    acknowledgements keep being printed."""
    if args.values:
        yield from args.values
        return
    lines = _stdin_lines(sys.stdin)
    while True:
        try:
            line = lines.get(timeout=_POLL_S)
        except queue.Empty:
            yield None
            continue
        if line is _EOF:
            return
        yield line


class _Acks:
    """The unacknowledged sends, oldest first; prints each outcome in input order."""

    def __init__(self, as_json: bool) -> None:
        self.pending: deque[RecordFuture] = deque()
        self.as_json = as_json
        self.sent = self.acked = self.failed = 0

    def add(self, future: RecordFuture) -> None:
        self.pending.append(future)
        self.sent += 1

    def drain(self, *, wait: bool = False, keep: int = 0) -> None:
        """Print the outcomes at the head that are done (waiting for them with ``wait``)
        until at most ``keep`` remain."""
        while len(self.pending) > keep:
            head = self.pending[0]
            if not head.done() and not wait:
                return
            self.pending.popleft()
            error = head.exception(timeout=None)
            if error is not None:
                self.failed += 1
                print(f"conveyor: error: {error.message} ({error.code.name})", file=sys.stderr)
                continue
            meta = head.result(0)
            self.acked += 1
            if self.as_json:
                print_json_line(
                    {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}
                )
            else:
                print(f"{meta.topic}[{meta.partition}]@{meta.offset}", flush=True)


class _ReportedByTheCommand(logging.Filter):
    """The command prints each failed record itself (``_Acks``): the library's warning for
    the same failure (``client/sender.py``, "batch failed") would say it twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "batch failed" not in str(record.msg)


def _produce(args: argparse.Namespace) -> int:
    from conveyor.client import Producer
    from conveyor.client.transport_choice import client_transport

    headers = parse_headers(args.header) or None
    acks = _Acks(args.json)
    started = time.monotonic()
    sender_log, reported = logging.getLogger("conveyor.client.sender"), _ReportedByTheCommand()
    sender_log.addFilter(reported)
    try:
        transport, servers = client_transport(None, None)  # --transport, --bootstrap-server
        with Producer(
            args.url,
            acks=args.acks,
            codec=args.compression,
            transport=transport,
            bootstrap_servers=servers,
        ) as producer:
            try:
                _send_all(producer, args, headers, acks, _lines(args))
            finally:
                producer.flush()
                acks.drain(wait=True)
    finally:
        sender_log.removeFilter(reported)
    seconds = time.monotonic() - started
    print(
        f"{acks.sent} sent, {acks.acked} acknowledged, {acks.failed} failed in {seconds:.2f} s",
        file=sys.stderr,
    )
    return EXIT_ERROR if acks.failed else EXIT_OK


def _send_all(
    producer: Producer,
    args: argparse.Namespace,
    headers: list[tuple[str, bytes]] | None,
    acks: _Acks,
    lines: Iterable[str | None],
) -> None:
    for line in lines:
        if line is not None:
            key, value = split_key(line, args.key_delimiter, args.key)
            try:
                future = producer.send(
                    args.topic, value, key=key, headers=headers, partition=args.partition
                )
            except ConveyorError:
                acks.drain(wait=True)  # report what was sent before the refusal first
                raise
            acks.add(future)
        acks.drain()  # print what is acknowledged so far
        if len(acks.pending) >= args.in_flight_max:  # the bound: wait for the oldest
            acks.drain(wait=True, keep=args.in_flight_max - 1)
