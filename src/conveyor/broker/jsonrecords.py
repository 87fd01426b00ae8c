"""The JSON forms of records (for curl and other languages) to and from record batches.

The binary data path never comes here: the broker decodes records only to serve these
JSON conveniences. Keys and values travel as UTF-8 text or, when ``*_encoding`` says
``base64``, as standard base64 of arbitrary bytes. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence

from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.messages import Encoding, FetchedRecord, JsonRecord
from conveyor.protocol.records import BatchBuilder, Record


def decode_field(text: str | None, encoding: Encoding, what: str) -> bytes | None:
    """A key or value as bytes; 400 INVALID_REQUEST for invalid base64."""
    if text is None:
        return None
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequestError(f"{what} is not valid base64: {exc}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate escaped in the JSON
        raise InvalidRequestError(f"{what} is not valid text: {exc}") from None


def record_key(record: JsonRecord) -> bytes | None:
    return decode_field(record.key, record.key_encoding, "key")


def build_batch(records: Sequence[JsonRecord]) -> bytes:
    """One uncompressed RecordBatch v2 of ``records`` (offsets assigned on append)."""
    if not records:
        raise InvalidRequestError("a produce request needs at least one record")
    builder = BatchBuilder()
    for index, record in enumerate(records):
        headers = [
            (name, decode_field(value, "utf8", f"records[{index}].headers[{name!r}]"))
            for name, value in (record.headers or {}).items()
        ]
        builder.append(
            decode_field(record.value, record.value_encoding, f"records[{index}].value"),
            decode_field(record.key, record.key_encoding, f"records[{index}].key"),
            headers,
            record.timestamp_ms,
        )
    return builder.build()


def _text_or_base64(data: bytes | None) -> tuple[str | None, Encoding]:
    if data is None:
        return None, "utf8"
    try:
        return data.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def to_fetched(records: Iterable[Record]) -> list[FetchedRecord]:
    """Records as JSON: text when the bytes are valid UTF-8, else base64 with the encoding
    field set. Header values are decoded as UTF-8 with replacement (the JSON form has no
    encoding field for them), a null header value becomes ""."""
    out: list[FetchedRecord] = []
    for record in records:
        key, key_encoding = _text_or_base64(record.key)
        value, value_encoding = _text_or_base64(record.value)
        headers = {
            name: "" if raw is None else raw.decode("utf-8", "replace")
            for name, raw in record.headers
        }
        out.append(
            FetchedRecord(
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
                key=key,
                value=value,
                key_encoding=key_encoding,
                value_encoding=value_encoding,
                headers=headers or None,
            )
        )
    return out
