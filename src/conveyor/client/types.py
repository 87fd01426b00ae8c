"""Values the client hands to and takes from applications, and their conversions.

``Message`` and ``RecordMetadata`` are NamedTuples rather than dataclasses because a
consumer builds hundreds of thousands of messages a second: a tuple subclass can be made
in C (``tuple.__new__`` over ``zip``) with no Python-level ``__init__`` per message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from itertools import repeat
from operator import attrgetter
from typing import Any, Final, NamedTuple, TypeAlias

from conveyor.protocol.records import Record

BytesLike: TypeAlias = bytes | bytearray | memoryview | str
"""What ``send`` accepts for a key or value: bytes as they are, text encoded as UTF-8."""

HeaderValue: TypeAlias = bytes | str | None
HeadersArg: TypeAlias = Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]] | None
Headers: TypeAlias = tuple[tuple[str, bytes | None], ...]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class ConsumerGroupMetadata(NamedTuple):
    """A group member's identity at one moment (Kafka's ``consumer.groupMetadata()``,
    KIP-447): what ``send_offsets_to_transaction`` sends so that the coordinator refuses
    the offsets of a member the group has moved on from (ILLEGAL_GENERATION,
    UNKNOWN_MEMBER, FENCED_INSTANCE_ID, FENCED_MEMBER for a partition it no longer owns).
    ``generation_id`` -1 and an empty ``member_id``: not a member (yet), nothing to fence
    by."""

    group_id: str
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None


class RecordMetadata(NamedTuple):
    """Where an acknowledged record was written. ``offset`` is -1 with ``acks=0``."""

    topic: str
    partition: int
    offset: int


class Message(NamedTuple):
    """One consumed record. ``key`` and ``value`` are bytes, or None when null."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int


def to_bytes(data: BytesLike) -> bytes:
    """A key or value as bytes: ``str`` is encoded as UTF-8, buffers are copied once."""
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected bytes or str, got {type(data).__name__}")


def to_headers(headers: HeadersArg) -> Headers:
    """Headers as the batch encoder wants them: (name, bytes or None) pairs."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, bytes | None]] = []
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"header names are str, got {type(name).__name__}")
        out.append((name, None if value is None else to_bytes(value)))
    return tuple(out)


def key_to_text(key: bytes | None) -> str | bytes | None:
    """The seed API's key: text when it is valid UTF-8 (as producers of text keys sent
    it), else the raw bytes, so that no key is lost to a decoding error."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key


new_message: Final = partial(tuple.__new__, Message)
"""``new_message((topic, partition, ...))``: a Message made in C, no ``__init__`` call."""
_OFFSET: Final = attrgetter("offset")
_KEY: Final = attrgetter("key")
_VALUE: Final = attrgetter("value")
_HEADERS: Final = attrgetter("headers")
_TIMESTAMP: Final = attrgetter("timestamp_ms")


def messages_from_records(topic: str, partition: int, records: list[Record]) -> list[Message]:
    """Messages for ``records`` of one partition, built in C loops (see module docstring)."""
    columns: Any = zip(
        repeat(topic),
        repeat(partition),
        map(_OFFSET, records),
        map(_KEY, records),
        map(_VALUE, records),
        map(_HEADERS, records),
        map(_TIMESTAMP, records),
        strict=False,
    )
    return list(map(new_message, columns))


class PartitionRun(NamedTuple):
    """The rows ``start:stop`` of a :class:`PolledBatch` are records of one partition."""

    topic: str
    partition: int
    start: int
    stop: int


class PolledBatch:
    """What ``poll_batch`` returns: records as columns, no object per record.

    Row ``i`` is one record: ``offsets[i]``, ``keys[i]``, ``values[i]`` (bytes or None),
    ``timestamps_ms[i]`` and, when asked for, ``headers[i]`` (a sequence of (name, value)
    pairs); ``runs`` say which rows belong to which partition, each run in offset order.
    """

    __slots__ = ("headers", "keys", "offsets", "runs", "timestamps_ms", "values")

    def __init__(self) -> None:
        self.runs: list[PartitionRun] = []
        self.offsets: list[int] = []
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.timestamps_ms: list[int] = []
        self.headers: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __bool__(self) -> bool:
        return bool(self.offsets)

    def messages(self) -> list[Message]:
        """The same records as :class:`Message` tuples (what ``poll`` would return)."""
        out: list[Message] = []
        for run in self.runs:
            rows = slice(run.start, run.stop)
            out += messages_from_columns(
                run.topic,
                run.partition,
                self.offsets[rows],
                self.keys[rows],
                self.values[rows],
                None if self.headers is None else self.headers[rows],
                self.timestamps_ms[rows],
            )
        return out

    def __repr__(self) -> str:
        return f"<PolledBatch {len(self)} records from {len(self.runs)} partition runs>"


def messages_from_columns(  # noqa: PLR0917 -- a record's columns, in Message's order
    topic: str,
    partition: int,
    offsets: list[int],
    keys: list[bytes | None],
    values: list[bytes | None],
    headers: list[Any] | None,
    timestamps_ms: list[int],
) -> list[Message]:
    """Messages of one partition from columns, built in C loops (module docstring);
    ``headers`` None or all empty: every message gets ``()``."""
    count = len(offsets)
    pairs: Any = repeat((), count)
    if headers is not None and any(headers):
        pairs = [tuple(each) if each else () for each in headers]
    fields: Any = zip(
        repeat(topic, count),
        repeat(partition),
        offsets,
        keys,
        values,
        pairs,
        timestamps_ms,
        strict=False,
    )
    return list(map(new_message, fields))
