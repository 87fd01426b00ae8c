"""The share-state client's outcome after retries (``broker/share/remote.py``): a write
whose first attempt may have been applied and whose retry is then refused by a newer
leader's fence ends in an unknown outcome, never in that refusal (chaos queue seed 411:
an accept applied and answered refused, so the checker found a record settled without
an accept). Pure fakes for the store, the metadata and the HTTP client."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from conveyor.broker.share.remote import RoutedStateClient
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError, outcome_unknown
from conveyor.protocol.messages import PartitionInfo, TopicConfig, TopicDescription
from conveyor.protocol.share import StateEntry

MOVED_AFTER_APPEND = RetriableError(
    "leadership moved before offset 7 was acknowledged; it may or may not survive",
    code=ErrorCode.NOT_LEADER,
    outcome_unknown=True,
)
NOT_LEADER_BEFORE = RetriableError("this broker does not lead it", code=ErrorCode.NOT_LEADER)
FENCED = RetriableError("writer epoch 1 is fenced by epoch 2", code=ErrorCode.STALE_EPOCH)


class _Store:
    def __init__(self, error: ConveyorError) -> None:
        self.error = error

    async def write(self, request: Any) -> None:
        raise self.error


class _Metadata:
    async def topic(self, topic: str, *, auto_create: bool = False, force: bool = False) -> Any:
        partition = PartitionInfo(
            partition=0, leader=2, leader_epoch=2, replicas=[2], isr=[2], leader_url="http://b2"
        )
        return TopicDescription(
            name=topic, partitions=[partition], replication_factor=1, config=TopicConfig()
        )

    def leader_url(self, leader: Any, hint: str | None = None) -> str | None:
        return hint


class _HTTP:
    def __init__(self, error: ConveyorError) -> None:
        self.error = error

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def _write(local: ConveyorError, remote: ConveyorError) -> ConveyorError:
    client = RoutedStateClient(_Store(local), _Metadata(), _HTTP(remote))  # type: ignore[arg-type]
    entries = [StateEntry(b"d1", msgspec.msgpack.encode(1))]
    with pytest.raises(ConveyorError) as raised:
        asyncio.run(client.write(b"key", 1, entries))
    return raised.value


def test_a_refusal_after_an_attempt_that_may_have_been_applied_is_an_unknown_outcome() -> None:
    error = _write(MOVED_AFTER_APPEND, FENCED)
    assert outcome_unknown(error) and error.code is ErrorCode.REQUEST_TIMED_OUT


def test_a_refusal_after_attempts_that_were_not_applied_stays_a_refusal() -> None:
    error = _write(NOT_LEADER_BEFORE, FENCED)
    assert error.code is ErrorCode.STALE_EPOCH and not outcome_unknown(error)
