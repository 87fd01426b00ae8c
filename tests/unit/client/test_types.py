from __future__ import annotations

import pytest

from conveyor.client.producer import normalize_acks, normalize_codec
from conveyor.client.types import (
    Message,
    key_to_text,
    messages_from_records,
    to_bytes,
    to_headers,
)
from conveyor.protocol.records import Codec, decode_batches, encode_batch


def test_to_bytes_accepts_text_and_buffers() -> None:
    assert to_bytes("héllo") == "héllo".encode()
    assert to_bytes(b"raw") == b"raw"
    assert to_bytes(bytearray(b"ba")) == b"ba"
    assert to_bytes(memoryview(b"mv")) == b"mv"
    with pytest.raises(TypeError):
        to_bytes(42)  # type: ignore[arg-type]


def test_key_to_text_prefers_str_but_keeps_bad_utf8_as_bytes() -> None:
    assert key_to_text("ключ".encode()) == "ключ"
    assert key_to_text(b"\xff\xfe") == b"\xff\xfe"
    assert key_to_text(None) is None


def test_headers_from_mapping_or_pairs() -> None:
    assert to_headers({"a": "1", "b": None}) == (("a", b"1"), ("b", None))
    assert to_headers([("a", b"\x00")]) == (("a", b"\x00"),)
    assert to_headers(None) == ()


def test_messages_from_records_keep_every_field() -> None:
    batch = encode_batch([(b"k", b"v"), (None, b"w")], headers=[[("h", b"1")], []], timestamp_ms=7)
    messages = messages_from_records("t", 3, decode_batches(batch))
    assert messages == [
        Message("t", 3, 0, b"k", b"v", (("h", b"1"),), 7),
        Message("t", 3, 1, None, b"w", (), 7),
    ]
    assert messages[0].value == b"v" and messages[1].key is None


@pytest.mark.parametrize(
    ("given", "expected"), [("all", "all"), (-1, "all"), ("-1", "all"), (1, "1"), ("0", "0")]
)
def test_acks_spellings(given: str | int, expected: str) -> None:
    assert normalize_acks(given) == expected


def test_bad_acks_and_codecs_are_rejected() -> None:
    with pytest.raises(ValueError):
        normalize_acks(2)
    with pytest.raises(ValueError):
        normalize_codec("brotli")
    assert normalize_codec("GZIP") is Codec.GZIP
