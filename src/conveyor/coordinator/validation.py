"""Checks of user input the coordinator accepts: names, topic settings, broker addresses.

Pure. Each check raises a typed :class:`InvalidRequestError` whose message says which rule
was broken, so a caller can fix the request without reading the source.
"""

from __future__ import annotations

from typing import Final

from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import PartitionOffset, TopicConfig
from conveyor.protocol.topics import (
    BATCH_BYTES_MAX,
    BATCH_BYTES_MIN,
    SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN,
    FlushPolicy,
    check_group_name,
    parse_cleanup_policy,
    validate_topic_name,
)

__all__ = [
    "OFFSETS_PER_COMMIT_MAX",
    "OFFSET_METADATA_CHARS_MAX",
    "PARTITIONS_MAX",
    "offset_refusal",
    "validate_broker_id",
    "validate_broker_url",
    "validate_group_name",
    "validate_partition_count",
    "validate_replication_factor",
    "validate_topic_config",
    "validate_topic_name",
]

PARTITIONS_MAX: Final = 10_000  # per topic; each partition costs files and memory on brokers
OFFSET_METADATA_CHARS_MAX: Final = 4096  # Kafka's offset.metadata.max.bytes
OFFSETS_PER_COMMIT_MAX: Final = 10_000
EPOCH_MAX: Final = 2**31 - 1  # a leader epoch is Kafka's int32
BROKER_URL_CHARS_MAX: Final = 2048


def validate_group_name(group: str) -> None:
    """Kafka's group ids are any string; Conveyor takes the printable ones without a
    path separator (``protocol/topics.check_group_name``): they end up in URLs and logs."""
    check_group_name(group, ErrorCode.INVALID_REQUEST)


def offset_refusal(item: PartitionOffset) -> tuple[ErrorCode, str] | None:
    """What is wrong with one position to commit, its topic and partition aside (they are
    checked against the cluster state): Kafka's error code for that partition and a
    message; None when nothing is. Both commit paths ask it: the HTTP route's
    (``state.commit_offsets``, all or nothing, raising the message) and Kafka's
    OffsetCommit (``kafka_groups``, answering the code per partition)."""
    if item.metadata is not None and len(item.metadata) > OFFSET_METADATA_CHARS_MAX:
        message = f"offset metadata is longer than {OFFSET_METADATA_CHARS_MAX} characters"
        return ErrorCode.OFFSET_METADATA_TOO_LARGE, message
    where = f"{item.topic}-{item.partition}"
    if item.offset < 0:
        return ErrorCode.INVALID_REQUEST, f"offset {item.offset} for {where} must be >= 0"
    if not -1 <= item.leader_epoch <= EPOCH_MAX:
        epochs = f"must be -1 (none) or between 0 and {EPOCH_MAX}"
        return ErrorCode.INVALID_REQUEST, f"leader_epoch {item.leader_epoch} for {where} {epochs}"
    return None


def validate_partition_count(count: int) -> None:
    if not 1 <= count <= PARTITIONS_MAX:
        raise InvalidRequestError(
            f"partitions must be between 1 and {PARTITIONS_MAX}, not {count}",
            code=ErrorCode.INVALID_CONFIG,
        )


def validate_replication_factor(replication_factor: int, live_broker_count: int) -> None:
    if replication_factor < 1:
        raise InvalidRequestError(
            f"replication_factor must be >= 1, not {replication_factor}",
            code=ErrorCode.INVALID_CONFIG,
        )
    if replication_factor > live_broker_count:
        raise InvalidRequestError(
            f"replication_factor {replication_factor} exceeds the {live_broker_count} live "
            "broker(s): each replica needs its own broker",
            code=ErrorCode.INVALID_CONFIG,
            replication_factor=replication_factor,
            live_brokers=live_broker_count,
        )


def validate_topic_config(config: TopicConfig, replication_factor: int) -> None:
    """Reject settings a broker could not honour: the limits the storage engine's
    ``LogConfig`` enforces (``protocol.topics``), so a topic the coordinator accepts always
    opens (a property test builds a LogConfig from every accepted config)."""
    problems = []
    if config.retention_ms != -1 and config.retention_ms < 1:
        problems.append("retention_ms must be -1 (keep forever) or >= 1")
    if config.retention_bytes != -1 and config.retention_bytes < 1:
        problems.append("retention_bytes must be -1 (no size limit) or >= 1")
    if not SEGMENT_BYTES_MIN <= config.segment_bytes <= SEGMENT_BYTES_MAX:
        problems.append(
            f"segment_bytes must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}"
        )
    if not BATCH_BYTES_MIN <= config.max_message_bytes <= BATCH_BYTES_MAX:
        problems.append(
            f"max_message_bytes must be between {BATCH_BYTES_MIN} and {BATCH_BYTES_MAX}"
        )
    isr_min = config.min_insync_replicas
    if isr_min is not None and not 1 <= isr_min <= replication_factor:
        problems.append(
            f"min_insync_replicas must be between 1 and the replication factor {replication_factor}"
        )
    if config.delete_retention_ms < 0:
        problems.append("delete_retention_ms must be >= 0")
    if not 0.0 <= config.min_cleanable_dirty_ratio <= 1.0:
        problems.append("min_cleanable_dirty_ratio must be between 0 and 1")
    if problems:
        raise InvalidRequestError("; ".join(problems), code=ErrorCode.INVALID_CONFIG)
    FlushPolicy.parse(config.flush)  # raises INVALID_CONFIG itself
    parse_cleanup_policy(config.cleanup_policy)  # so does this


def validate_broker_url(url: str) -> None:
    if not url.startswith(("http://", "https://")) or len(url) > BROKER_URL_CHARS_MAX:
        raise InvalidRequestError(
            f"broker url must be an http:// or https:// URL of at most "
            f"{BROKER_URL_CHARS_MAX} characters, not {url[:100]!r}"
        )


def validate_kafka_address(address: str) -> None:
    """``HOST:PORT`` (the advertised Kafka listener); Kafka clients split it at the last
    colon, so an IPv6 host comes in brackets."""
    host, _, port = address.rpartition(":")
    if (
        not host
        or len(address) > BROKER_URL_CHARS_MAX
        or not (port.isascii() and port.isdigit())
        or not 0 < int(port) < 65536
        or not address.isprintable()
    ):
        raise InvalidRequestError(
            f"kafka address must be HOST:PORT of at most {BROKER_URL_CHARS_MAX} characters, "
            f"not {address[:100]!r}"
        )


def validate_broker_id(broker_id: int) -> None:
    if not 0 <= broker_id <= 2**31 - 1:
        raise InvalidRequestError(f"broker_id must be between 0 and 2147483647, not {broker_id}")


def validate_assignments(
    assignments: list[list[int]], partition_count: int, replication_factor: int, live: list[int]
) -> None:
    """Manual replica assignments (Kafka's CreateTopics/CreatePartitions): one list per
    partition, each of ``replication_factor`` distinct live brokers. INVALID_CONFIG with
    ``details["assignments"]`` (Kafka's INVALID_REPLICA_ASSIGNMENT)."""
    problem = None
    if len(assignments) != partition_count:
        problem = f"{len(assignments)} assignments for {partition_count} partitions"
    for index, replicas in enumerate(assignments):
        if problem is not None:
            break
        if len(replicas) != replication_factor:
            problem = f"partition {index} has {len(replicas)} replicas, not {replication_factor}"
        elif len(set(replicas)) != len(replicas):
            problem = f"partition {index} names a broker twice"
        elif not set(replicas) <= set(live):
            unknown = sorted(set(replicas) - set(live))
            problem = f"partition {index} names brokers that are not live: {unknown}"
    if problem is not None:
        raise InvalidRequestError(
            f"invalid replica assignment: {problem}", code=ErrorCode.INVALID_CONFIG, assignments=1
        )
