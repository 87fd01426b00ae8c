"""The Produce handler names the records a produce refused (``record_indexes`` of the
operation's error) in the answer's record_errors (KIP-467), read back with kafka-python."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.produce import ProduceHandler
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.kafka.produce_request import ProduceData
from conveyor.protocol.recordfilter import require_keys
from conveyor.protocol.records import BatchBuilder


@dataclass
class _Source:
    snapshot: None = None

    async def catch_up(self) -> bool:
        return False


def _answer(version: int, produce: Any) -> Any:
    handler = ProduceHandler(
        produce, SimpleNamespace(brokers={}, cluster_id=None), Authorizer(_Source(), False)
    )
    request = ProduceData(None, -1, 1000, (("t", 0, b"batch"),))
    ctx = SimpleNamespace(
        api_version=version, principal=None, connection=SimpleNamespace(appending=asyncio.Lock())
    )
    encoded = asyncio.run(handler(ctx, request))  # type: ignore[arg-type]
    return SERVED[ApiKey.PRODUCE].response[version].decode(bytes(encoded))


@pytest.mark.parametrize("version", [8, 9, 11])
def test_keyless_records_are_named_in_record_errors(version: int) -> None:
    batch = BatchBuilder()
    for i in range(12):
        batch.append(b"v", key=None if i % 5 == 0 else b"k")
    records = batch.build(base_offset=0)

    async def produce(*_: Any, **__: Any) -> Any:
        require_keys(records)  # what BrokerService.produce does for a compacted topic

    answer = _answer(version, produce)
    result = answer.responses[0].partition_responses[0]
    assert result.error_code == KafkaError.INVALID_RECORD
    assert [e.batch_index for e in result.record_errors] == [0, 5, 10]
    assert all(e.batch_index_error_message for e in result.record_errors)
    assert "3 of 12" in result.error_message


def test_other_errors_name_no_record() -> None:
    async def produce(*_: Any, **__: Any) -> Any:
        raise InvalidRequestError("bad", code=ErrorCode.CORRUPT_MESSAGE)

    result = _answer(9, produce).responses[0].partition_responses[0]
    assert result.error_code == KafkaError.CORRUPT_MESSAGE
    assert result.record_errors == []
