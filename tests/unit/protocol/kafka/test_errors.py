"""Every Conveyor error code maps to one Kafka error code."""

from __future__ import annotations

import pytest

from conveyor.protocol.errors import ErrorCode
from conveyor.protocol.kafka.errors import KafkaError, kafka_error, unmapped_codes


def test_every_error_code_is_mapped() -> None:
    assert unmapped_codes() == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (ErrorCode.NOT_LEADER, KafkaError.NOT_LEADER_OR_FOLLOWER),
        (ErrorCode.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS),
        (ErrorCode.UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PARTITION),
        (ErrorCode.OUT_OF_ORDER_SEQUENCE, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER),
        (ErrorCode.DUPLICATE_SEQUENCE, KafkaError.DUPLICATE_SEQUENCE_NUMBER),
        (ErrorCode.STALE_EPOCH, KafkaError.FENCED_LEADER_EPOCH),
        (ErrorCode.CORRUPT_MESSAGE, KafkaError.CORRUPT_MESSAGE),
        (ErrorCode.DISK_FULL, KafkaError.KAFKA_STORAGE_ERROR),
    ],
)
def test_kafka_codes_follow_kafka(code: ErrorCode, expected: KafkaError) -> None:
    assert kafka_error(code) is expected


def test_forbidden_depends_on_the_resource() -> None:
    assert kafka_error(ErrorCode.FORBIDDEN, "topic") is KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert kafka_error(ErrorCode.FORBIDDEN, "group") is KafkaError.GROUP_AUTHORIZATION_FAILED
    assert kafka_error(ErrorCode.FORBIDDEN, "cluster") is KafkaError.CLUSTER_AUTHORIZATION_FAILED


def test_kafka_numbers_match_kafka_python() -> None:
    """The numbering is Kafka's (cross-checked against kafka-python's error table)."""
    import conveyor.protocol.kafka.apis  # noqa: F401 -- imports kafka without its warning
    from kafka import errors

    by_code: dict[int, str] = {}
    pending = [errors.BrokerResponseError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        by_code.setdefault(cls.errno, cls.message)
    renamed = {  # kafka-python keeps some pre-KIP names
        "NOT_LEADER_OR_FOLLOWER": "NOT_LEADER_FOR_PARTITION",
        "MESSAGE_TOO_LARGE": "MESSAGE_SIZE_TOO_LARGE",
        "INVALID_TOPIC_EXCEPTION": "INVALID_TOPIC",
        "GROUP_NOT_EMPTY": "NON_EMPTY_GROUP",
        "INVALID_REPLICA_ASSIGNMENT": "INVALID_REPLICATION_ASSIGNMENT",
    }
    # newer than kafka-python 3.0's table; the number is Kafka's (clients' Errors.java)
    newer = {"INVALID_REGULAR_EXPRESSION": 128}
    for error in KafkaError:
        if error.name in newer:
            assert error.value == newer[error.name] and error.value not in by_code
        elif error.value > 0:
            assert by_code[error.value] == renamed.get(error.name, error.name), error
