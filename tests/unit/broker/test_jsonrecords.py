from __future__ import annotations

import base64

import pytest

from conveyor.broker.jsonrecords import build_batch, to_fetched
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.messages import JsonRecord
from conveyor.protocol.records import decode_batches


def test_round_trip_text_and_base64() -> None:
    raw = bytes(range(256))
    batch = build_batch(
        [
            JsonRecord(key="k1", value="héllo", headers={"h": "v"}, timestamp_ms=1234),
            JsonRecord(value=base64.b64encode(raw).decode(), value_encoding="base64"),
            JsonRecord(key="k3"),
        ]
    )
    records = decode_batches(batch)
    assert [(r.key, r.value) for r in records] == [
        (b"k1", "héllo".encode()),
        (None, raw),
        (b"k3", None),
    ]
    assert records[0].timestamp_ms == 1234
    fetched = to_fetched(records)
    assert fetched[0].value == "héllo" and fetched[0].value_encoding == "utf8"
    assert fetched[0].headers == {"h": "v"}
    assert fetched[1].value_encoding == "base64"
    assert base64.b64decode(fetched[1].value or "") == raw
    assert fetched[2].value is None


@pytest.mark.parametrize(
    "record",
    [
        JsonRecord(value="%%%", value_encoding="base64"),
        JsonRecord(value="a", key="abc", key_encoding="base64"),
        JsonRecord(value="\ud800"),
    ],
)
def test_invalid_fields_are_400(record: JsonRecord) -> None:
    with pytest.raises(InvalidRequestError):
        build_batch([record])


def test_empty_request_is_400() -> None:
    with pytest.raises(InvalidRequestError):
        build_batch([])
