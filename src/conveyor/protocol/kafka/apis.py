"""The APIs the Kafka listener serves and their versions: one table, answered by
ApiVersions and enforced on every request.

A version range is what kafka-python's message classes support *and* what Conveyor
implements; it stops short of versions whose meaning Conveyor lacks (Fetch v13+ and
Produce v13 name topics by id only; Produce v12 and InitProducerId v5+ are transactions
v2; ListOffsets v8+ asks for tiered-storage offsets). Produce is advertised from v0
although v0-2 are refused (librdkafka picks its feature set from the advertised minimum;
KAFKA-18659, as Kafka 4.0 does). ``before_auth``: allowed on a connection that has not
authenticated yet when authentication is on (Kafka's rule: only ApiVersions and SASL).

Handlers for admin and group APIs add their rows here (one row per API).
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from typing import Any, Final

# kafka-python 3.0 reads its JSON schemas with importlib.resources.read_text, deprecated
# in Python 3.11 (and undeprecated in 3.13): harmless, but pytest turns warnings into errors.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.admin import (
        AlterConfigsRequest,
        AlterConfigsResponse,
        CreateAclsRequest,
        CreateAclsResponse,
        CreatePartitionsRequest,
        CreatePartitionsResponse,
        CreateTopicsRequest,
        CreateTopicsResponse,
        DeleteAclsRequest,
        DeleteAclsResponse,
        DeleteGroupsRequest,
        DeleteGroupsResponse,
        DeleteRecordsRequest,
        DeleteRecordsResponse,
        DeleteTopicsRequest,
        DeleteTopicsResponse,
        DescribeAclsRequest,
        DescribeAclsResponse,
        DescribeClusterRequest,
        DescribeClusterResponse,
        DescribeConfigsRequest,
        DescribeConfigsResponse,
        DescribeGroupsRequest,
        DescribeGroupsResponse,
        DescribeLogDirsRequest,
        DescribeLogDirsResponse,
        IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsResponse,
        ListGroupsRequest,
        ListGroupsResponse,
    )
    from kafka.protocol.admin.transactions import (
        DescribeProducersRequest,
        DescribeProducersResponse,
        DescribeTransactionsRequest,
        DescribeTransactionsResponse,
        ListTransactionsRequest,
        ListTransactionsResponse,
    )
    from kafka.protocol.consumer import (
        FetchRequest,
        FetchResponse,
        HeartbeatRequest,
        HeartbeatResponse,
        JoinGroupRequest,
        JoinGroupResponse,
        LeaveGroupRequest,
        LeaveGroupResponse,
        ListOffsetsRequest,
        ListOffsetsResponse,
        OffsetCommitRequest,
        OffsetCommitResponse,
        OffsetDeleteRequest,
        OffsetDeleteResponse,
        OffsetFetchRequest,
        OffsetFetchResponse,
        OffsetForLeaderEpochRequest,
        OffsetForLeaderEpochResponse,
        SyncGroupRequest,
        SyncGroupResponse,
    )
    from kafka.protocol.metadata import (
        ApiVersionsRequest,
        ApiVersionsResponse,
        FindCoordinatorRequest,
        FindCoordinatorResponse,
        MetadataRequest,
        MetadataResponse,
    )
    from kafka.protocol.producer import (
        InitProducerIdRequest,
        InitProducerIdResponse,
        ProduceRequest,
        ProduceResponse,
    )
    from kafka.protocol.producer.transaction import (
        AddOffsetsToTxnRequest,
        AddOffsetsToTxnResponse,
        AddPartitionsToTxnRequest,
        AddPartitionsToTxnResponse,
        EndTxnRequest,
        EndTxnResponse,
        TxnOffsetCommitRequest,
        TxnOffsetCommitResponse,
    )
    from kafka.protocol.sasl import (
        SaslAuthenticateRequest,
        SaslAuthenticateResponse,
        SaslHandshakeRequest,
        SaslHandshakeResponse,
    )


from conveyor.protocol.kafka.kip848 import (
    ConsumerGroupDescribeRequest,
    ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
)


class ApiKey(enum.IntEnum):
    """Kafka's API keys (those Conveyor serves or plans to)."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_ACLS = 29
    CREATE_ACLS = 30
    DELETE_ACLS = 31
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    DELETE_GROUPS = 42
    OFFSET_DELETE = 47
    DESCRIBE_LOG_DIRS = 35
    SASL_AUTHENTICATE = 36
    CREATE_PARTITIONS = 37
    INCREMENTAL_ALTER_CONFIGS = 44
    DESCRIBE_CLUSTER = 60
    DESCRIBE_PRODUCERS = 61
    DESCRIBE_TRANSACTIONS = 65
    LIST_TRANSACTIONS = 66
    CONSUMER_GROUP_HEARTBEAT = 68
    CONSUMER_GROUP_DESCRIBE = 69


@dataclass(frozen=True, slots=True)
class ApiSpec:
    key: ApiKey
    min_version: int
    max_version: int
    request: Any  # kafka-python request class (versioned by [v])
    response: Any  # kafka-python response class
    advertised_min: int | None = None  # None: min_version
    before_auth: bool = False

    @property
    def advertised_min_version(self) -> int:
        return self.min_version if self.advertised_min is None else self.advertised_min

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version

    def is_flexible(self, version: int) -> bool:
        """Does this version use the flexible encoding? (See :func:`is_flexible`.)"""
        return bool(self.request.flexible_version_q(version))


_SPECS: Final = (
    ApiSpec(ApiKey.PRODUCE, 3, 11, ProduceRequest, ProduceResponse, advertised_min=0),
    ApiSpec(ApiKey.FETCH, 4, 12, FetchRequest, FetchResponse),
    ApiSpec(ApiKey.LIST_OFFSETS, 1, 7, ListOffsetsRequest, ListOffsetsResponse),
    ApiSpec(ApiKey.METADATA, 0, 12, MetadataRequest, MetadataResponse),
    # Served from v1 (after a v0 handshake the SASL tokens travel unframed, without Kafka
    # headers), advertised from v0: librdkafka enables SASL only when v0 is advertised,
    # then uses v1 with SaslAuthenticate, as every current client does.
    ApiSpec(ApiKey.SASL_HANDSHAKE, 1, 1, SaslHandshakeRequest, SaslHandshakeResponse, 0, True),
    ApiSpec(ApiKey.API_VERSIONS, 0, 4, ApiVersionsRequest, ApiVersionsResponse, None, True),
    ApiSpec(ApiKey.INIT_PRODUCER_ID, 0, 4, InitProducerIdRequest, InitProducerIdResponse),
    ApiSpec(
        ApiKey.OFFSET_FOR_LEADER_EPOCH,
        2,
        4,
        OffsetForLeaderEpochRequest,
        OffsetForLeaderEpochResponse,
    ),
    ApiSpec(
        ApiKey.SASL_AUTHENTICATE,
        0,
        2,
        SaslAuthenticateRequest,
        SaslAuthenticateResponse,
        None,
        True,
    ),
)

# The admin APIs (broker/kafka/admin_*.py), from the oldest version Kafka 4.0 still serves.
_ADMIN_SPECS: Final = (
    ApiSpec(ApiKey.CREATE_TOPICS, 2, 7, CreateTopicsRequest, CreateTopicsResponse),
    ApiSpec(ApiKey.DELETE_TOPICS, 1, 6, DeleteTopicsRequest, DeleteTopicsResponse),
    ApiSpec(ApiKey.DELETE_RECORDS, 0, 2, DeleteRecordsRequest, DeleteRecordsResponse),
    ApiSpec(ApiKey.CREATE_PARTITIONS, 0, 3, CreatePartitionsRequest, CreatePartitionsResponse),
    ApiSpec(ApiKey.DESCRIBE_CONFIGS, 1, 4, DescribeConfigsRequest, DescribeConfigsResponse),
    ApiSpec(ApiKey.ALTER_CONFIGS, 0, 2, AlterConfigsRequest, AlterConfigsResponse),
    ApiSpec(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        0,
        1,
        IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsResponse,
    ),
    ApiSpec(ApiKey.DESCRIBE_CLUSTER, 0, 2, DescribeClusterRequest, DescribeClusterResponse),
    ApiSpec(ApiKey.DESCRIBE_LOG_DIRS, 1, 4, DescribeLogDirsRequest, DescribeLogDirsResponse),
    ApiSpec(ApiKey.CREATE_ACLS, 1, 3, CreateAclsRequest, CreateAclsResponse),
    ApiSpec(ApiKey.DESCRIBE_ACLS, 1, 3, DescribeAclsRequest, DescribeAclsResponse),
    ApiSpec(ApiKey.DELETE_ACLS, 1, 3, DeleteAclsRequest, DeleteAclsResponse),
)

# Consumer groups (broker/kafka/groups.py, group_offsets.py, group_admin.py,
# consumer_groups.py): the classic protocol from the oldest version kafka-python has,
# OffsetCommit/OffsetFetch up to v9 (v10 names topics by id only), FindCoordinator with
# the batched keys of v4+, KIP-848 as librdkafka 2.12 speaks it.
_GROUP_SPECS: Final = (
    ApiSpec(ApiKey.FIND_COORDINATOR, 0, 6, FindCoordinatorRequest, FindCoordinatorResponse),
    ApiSpec(ApiKey.JOIN_GROUP, 0, 9, JoinGroupRequest, JoinGroupResponse),
    ApiSpec(ApiKey.SYNC_GROUP, 0, 5, SyncGroupRequest, SyncGroupResponse),
    ApiSpec(ApiKey.HEARTBEAT, 0, 4, HeartbeatRequest, HeartbeatResponse),
    ApiSpec(ApiKey.LEAVE_GROUP, 0, 5, LeaveGroupRequest, LeaveGroupResponse),
    ApiSpec(ApiKey.OFFSET_COMMIT, 2, 9, OffsetCommitRequest, OffsetCommitResponse),
    ApiSpec(ApiKey.OFFSET_FETCH, 1, 9, OffsetFetchRequest, OffsetFetchResponse),
    ApiSpec(ApiKey.OFFSET_DELETE, 0, 0, OffsetDeleteRequest, OffsetDeleteResponse),
    ApiSpec(ApiKey.LIST_GROUPS, 0, 5, ListGroupsRequest, ListGroupsResponse),
    ApiSpec(ApiKey.DESCRIBE_GROUPS, 0, 6, DescribeGroupsRequest, DescribeGroupsResponse),
    ApiSpec(ApiKey.DELETE_GROUPS, 0, 2, DeleteGroupsRequest, DeleteGroupsResponse),
    ApiSpec(
        ApiKey.CONSUMER_GROUP_HEARTBEAT,
        0,
        1,
        ConsumerGroupHeartbeatRequest,
        ConsumerGroupHeartbeatResponse,
    ),
    ApiSpec(
        ApiKey.CONSUMER_GROUP_DESCRIBE,
        0,
        0,
        ConsumerGroupDescribeRequest,
        ConsumerGroupDescribeResponse,
    ),
)

# Transactions (issue 21, broker/kafka/transactions.py): up to the versions before
# KIP-890's transactions v2 (AddPartitionsToTxn v4+ is broker-to-broker, EndTxn v4+ and
# TxnOffsetCommit v4+ add TRANSACTION_ABORTABLE).
_TXN_SPECS: Final = (
    ApiSpec(
        ApiKey.ADD_PARTITIONS_TO_TXN, 0, 3, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse
    ),
    ApiSpec(ApiKey.ADD_OFFSETS_TO_TXN, 0, 3, AddOffsetsToTxnRequest, AddOffsetsToTxnResponse),
    ApiSpec(ApiKey.END_TXN, 0, 3, EndTxnRequest, EndTxnResponse),
    ApiSpec(ApiKey.TXN_OFFSET_COMMIT, 0, 3, TxnOffsetCommitRequest, TxnOffsetCommitResponse),
    ApiSpec(
        ApiKey.DESCRIBE_TRANSACTIONS,
        0,
        0,
        DescribeTransactionsRequest,
        DescribeTransactionsResponse,
    ),
    ApiSpec(ApiKey.LIST_TRANSACTIONS, 0, 1, ListTransactionsRequest, ListTransactionsResponse),
    ApiSpec(ApiKey.DESCRIBE_PRODUCERS, 0, 0, DescribeProducersRequest, DescribeProducersResponse),
)

SERVED: Final[dict[int, ApiSpec]] = {
    int(spec.key): spec for spec in (*_SPECS, *_ADMIN_SPECS, *_GROUP_SPECS, *_TXN_SPECS)
}


def spec_for(api_key: int) -> ApiSpec | None:
    return SERVED.get(api_key)


def is_flexible(api_key: int, api_version: int) -> bool:
    """Does this request version use the flexible encoding (compact types, tagged fields,
    request header v2)? False for APIs not served."""
    spec = SERVED.get(api_key)
    return spec is not None and spec.is_flexible(api_version)


def response_is_flexible(api_key: int, api_version: int) -> bool:
    """Response header v1? ApiVersions always answers with v0 (see ``header.py``)."""
    return api_key != ApiKey.API_VERSIONS and is_flexible(api_key, api_version)
