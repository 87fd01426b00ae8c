"""How the message browser shows a record: detected as JSON, text or binary, with the
three renderings (text, pretty JSON, hex) the page switches between. Pure.

Values arrive from the broker's JSON fetch as UTF-8 text or, when not valid UTF-8, as
base64 (``value_encoding``). What a page shows is bounded (``SHOWN_BYTES_MAX`` of text,
``HEX_BYTES_MAX`` of hex dump per value); the page's JSON download has every byte.
Nothing here produces markup: the templates escape every string they print.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from conveyor.protocol.messages import FetchedRecord

SHOWN_BYTES_MAX: Final = 16 * 1024
HEX_BYTES_MAX: Final = 1024
JSON_DETECT_BYTES_MAX: Final = 1024 * 1024
Kind = Literal["json", "text", "binary", "null"]


def raw_bytes(text: str | None, encoding: str) -> bytes | None:
    """The record's bytes from the broker's JSON form (None: a null key or value)."""
    if text is None:
        return None
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return text.encode()
    return text.encode()


# Each byte as itself when printable ASCII, else ".": the dump's text column.
_PRINTABLE: Final = bytes(b if 32 <= b < 127 else ord(".") for b in range(256))


def hex_dump(data: bytes, limit: int = HEX_BYTES_MAX) -> str:
    """``offset  hex bytes  |ascii|``, 16 bytes a line, the first ``limit`` bytes."""
    lines = []
    for start in range(0, min(len(data), limit), 16):
        chunk = data[start : start + 16]
        text = chunk.translate(_PRINTABLE).decode("ascii")
        lines.append(f"{start:08x}  {chunk.hex(' '):<47}  |{text}|")
    if len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes")
    return "\n".join(lines)


def _clip(text: str, limit: int = SHOWN_BYTES_MAX) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit], True


@dataclass(frozen=True, slots=True)
class Rendered:
    """One key or value, ready for the page."""

    kind: Kind
    size_bytes: int
    text: str  # as UTF-8 text (with replacement characters for invalid bytes)
    pretty_json: str | None  # when it parses as JSON
    data: bytes = b""
    truncated: bool = False

    @property
    def hex(self) -> str:
        """Made when a page shows it (a text key never needs one)."""
        return hex_dump(self.data)

    @property
    def views(self) -> list[str]:
        """The views this value offers, the detected one first."""
        if self.kind == "null":
            return []
        order = {"json": ["json", "text", "hex"], "binary": ["hex", "text"]}
        return order.get(self.kind, ["text", "hex"])


def render(text: str | None, encoding: str) -> Rendered:
    data = raw_bytes(text, encoding)
    if data is None:
        return Rendered("null", 0, "", None)
    decoded = data.decode("utf-8", "replace")
    binary = encoding == "base64" and _looks_binary(data)
    pretty = None
    if not binary and len(data) <= JSON_DETECT_BYTES_MAX and decoded.lstrip()[:1] in ("{", "["):
        # msgspec re-indents the text as it is (numbers and escapes as written) and
        # refuses what is not strict JSON, in C: a page of 50 values costs ~1 ms.
        try:
            pretty = msgspec.json.format(data, indent=2).decode("utf-8", "replace")
        except msgspec.DecodeError:
            pretty = None
    kind: Kind = "binary" if binary else ("json" if pretty is not None else "text")
    shown, clipped = _clip(decoded)
    if pretty is not None:
        pretty, clipped_json = _clip(pretty)
        clipped = clipped or clipped_json
    return Rendered(kind, len(data), shown, pretty, data, clipped)


def _looks_binary(data: bytes) -> bool:
    """Not UTF-8 (the broker sent base64), or mostly control bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    controls = sum(1 for c in text[:4096] if c < " " and c not in "\t\r\n")
    return controls * 10 > min(len(text), 4096)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    record: FetchedRecord
    key: Rendered
    value: Rendered
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def timestamp_ms(self) -> int:
        return self.record.timestamp_ms

    @property
    def time_text(self) -> str:
        moment = datetime.fromtimestamp(self.record.timestamp_ms / 1000, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def as_json(self) -> dict[str, Any]:
        """The record as the page's download has it (the broker's JSON form, whole)."""
        r = self.record
        out: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": r.offset,
            "timestamp_ms": r.timestamp_ms,
            "key": r.key,
            "value": r.value,
            "headers": r.headers or {},
        }
        if r.key_encoding != "utf8":
            out["key_encoding"] = r.key_encoding
        if r.value_encoding != "utf8":
            out["value_encoding"] = r.value_encoding
        return out

    def copy_text(self) -> str:
        """What "copy" puts on the clipboard: the record as JSON, values clipped to what
        the page shows (the download has them whole)."""
        out = self.as_json()
        for name, shown in (("key", self.key), ("value", self.value)):
            if shown.truncated and isinstance(out[name], str):
                out[name] = out[name][:SHOWN_BYTES_MAX]
                out[f"{name}_truncated"] = True
        return msgspec.json.format(msgspec.json.encode(out), indent=2).decode()


def message(topic: str, partition: int, record: FetchedRecord) -> Message:
    return Message(
        topic,
        partition,
        record,
        render(record.key, record.key_encoding),
        render(record.value, record.value_encoding),
        dict(record.headers or {}),
    )


def matches(record: FetchedRecord, key_filter: str, value_filter: str) -> bool:
    """Substring filters on the key's and the value's text (empty: no filter). Checked
    on the record as fetched, so only the matches are rendered."""
    if key_filter and key_filter not in _text(record.key, record.key_encoding):
        return False
    return not value_filter or value_filter in _text(record.value, record.value_encoding)


def _text(text: str | None, encoding: str) -> str:
    if text is not None and encoding == "utf8":
        return text
    data = raw_bytes(text, encoding)
    return "" if data is None else data.decode("utf-8", "replace")
