"""The etcd store's record encoding: round trips of every record kind, compression, and
garbage refused with CORRUPT_DATA (fuzzed). Also the etcd endpoint list parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.coordinator import state as core
from conveyor.coordinator.model import (
    BrokerRecord,
    BrokerSeen,
    GroupRemoved,
    OffsetRecord,
    OffsetRemoved,
    apply,
    snapshot_records,
)
from conveyor.coordinator.records_codec import (
    decode_records,
    encode_records,
    split_entries,
)
from conveyor.protocol.errors import ErrorCode, FatalError
from conveyor.protocol.messages import (
    BrokerHeartbeat,
    BrokerId,
    CreateTopicRequest,
    OffsetCommitRequest,
    PartitionOffset,
    TopicConfig,
)
from conveyor.transport.etcd import parse_endpoints
from tests.unit.coordinator.helpers import DEFAULTS, with_brokers


def sample_state():  # type: ignore[no-untyped-def]
    state = with_brokers([1, 2, 3])
    request = CreateTopicRequest(
        name="t", partitions=50, config=TopicConfig(retention_ms=5, flush="never")
    )
    state = core.create_topic(state, request, 7, DEFAULTS).state
    commit = OffsetCommitRequest(
        offsets=[PartitionOffset(topic="t", partition=1, offset=9, metadata="m", leader_epoch=3)]
    )
    return core.commit_offsets(state, "g", commit, 8).state


def test_every_record_kind_round_trips_and_big_entries_are_compressed() -> None:
    records = snapshot_records(sample_state())
    entry = encode_records(records)
    assert entry[:1] == b"z"  # over ENTRY_COMPRESS_BYTES as JSON: compressed
    assert decode_records(entry) == records


def test_an_offset_keeps_its_leader_epoch_and_entries_from_before_it_read_none() -> None:
    commit = OffsetCommitRequest(offsets=[PartitionOffset(topic="t", partition=2, offset=4)])
    state = core.commit_offsets(sample_state(), "g", commit, 9).state
    records = [r for r in snapshot_records(state) if isinstance(r, OffsetRecord)]
    epochs = {
        (r.offset.partition, r.offset.leader_epoch) for r in decode_records(encode_records(records))
    }
    assert epochs == {(1, 3), (2, -1)}
    old = (  # an entry written before committed offsets had a leader epoch
        b'[["offset",{"group":"g","topic":"t","partition":1,"offset":9,'
        b'"metadata":null,"committed_ms":8}]]'
    )
    (record,) = decode_records(old)
    assert isinstance(record, OffsetRecord)
    assert (record.offset.offset, record.offset.leader_epoch) == (9, -1)


def test_group_and_offset_removals_round_trip_and_replay() -> None:
    state = sample_state()
    records = [OffsetRemoved("g", "t", 1), GroupRemoved("g")]
    assert decode_records(encode_records(records)) == records
    assert not apply(state, records[:1]).offsets
    assert core.delete_offsets(state, "g", [("t", 1), ("t", 2)]).records == (records[0],)


def test_a_brokers_kafka_listener_round_trips() -> None:
    """The etcd store's log keeps the broker registration's Kafka address (issue 15)."""
    beat = BrokerHeartbeat(
        broker_id=BrokerId(4), url="http://127.0.0.1:9004", kafka_address="127.0.0.1:19004"
    )
    records = core.handle_heartbeat(sample_state(), beat, 9, 300).durable_records
    (decoded,) = [r for r in decode_records(encode_records(records)) if isinstance(r, BrokerRecord)]
    assert decoded.broker.kafka_address == "127.0.0.1:19004"


def test_soft_records_are_not_written() -> None:
    assert decode_records(encode_records([BrokerSeen(BrokerId(1), 5)])) == []


def test_snapshots_split_into_bounded_entries() -> None:
    records = snapshot_records(sample_state())
    entries = split_entries(records, 2000)
    assert len(entries) > 1 and all(len(e) <= 2000 for e in entries)
    assert [r for e in entries for r in decode_records(e)] == records


@given(st.binary(max_size=300))
def test_garbage_is_corrupt_data_never_another_error(data: bytes) -> None:
    try:
        decode_records(data)
    except FatalError as exc:
        assert exc.code is ErrorCode.CORRUPT_DATA


@pytest.mark.parametrize(
    ("text", "endpoints"),
    [
        ("etcd://a:1,b:2", ("http://a:1", "http://b:2")),
        ("etcds://a:1", ("https://a:1",)),
        ("http://a:1/, http://a:1", ("http://a:1",)),
    ],
)
def test_etcd_endpoints(text: str, endpoints: tuple[str, ...]) -> None:
    assert parse_endpoints(text) == endpoints


@given(st.text(max_size=100))
def test_the_endpoint_parser_returns_urls_or_raises_value_error(text: str) -> None:
    try:
        endpoints = parse_endpoints(text)
    except ValueError:
        return
    assert endpoints and all(e.startswith(("http://", "https://")) for e in endpoints)
