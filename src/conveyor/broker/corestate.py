"""The broker core's state: every hosted replica, the follower fetch sessions, the parked
long-polls of followers fetching from us. Immutable values (see ``core.py`` for the rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from msgspec.structs import replace

from conveyor.broker.replica import Replica
from conveyor.protocol.messages import (
    BrokerId,
    EpochEndRequest,
    ErrorBody,
    ReplicaFetchRequest,
)
from conveyor.protocol.replica import ReplicaState, TopicPartition, Value
from conveyor.protocol.topics import FlushPolicy

ISR_CHECK_INTERVAL_MS: Final = 500
REPLICA_FETCH_WAIT_MS_CAP: Final = 30_000  # a follower's long-poll is held at most this long
DURABLE_WAIT_MS: Final = 10_000  # a caught-up follower waits this long for its fsync at most
FETCH_BACKOFF_BASE_MS: Final = 50
FETCH_BACKOFF_MAX_MS: Final = 1000


class CoreConfig(Value, frozen=True):
    """The settings the rules read (a subset of BrokerConfig)."""

    broker_id: BrokerId
    replica_lag_time_max_ms: int = 10_000
    replica_fetch_max_wait_ms: int = 500
    replica_fetch_partition_max_bytes: int = 8 * 1024 * 1024
    replica_fetch_max_bytes: int = 32 * 1024 * 1024
    flush_override: FlushPolicy | None = None
    # A request to a leader unanswered this long is lost (a fetch: beyond its long-poll);
    # the session backs off and asks again. As the shell's HTTP timeouts (peers.py).
    replica_request_timeout_ms: int = 10_000

    @property
    def replica_fetch_timeout_ms(self) -> int:
        """A fetch unanswered this long is lost (its long-poll plus the request timeout)."""
        return self.replica_fetch_max_wait_ms + self.replica_request_timeout_ms


class FetchSession(Value, frozen=True):
    """This broker as a follower of ``leader``: one request at a time carries every
    partition it copies from that leader (Kafka's fetcher thread per source broker).

    Busy while a request is out (``sent``), while the appends of an answer are being
    performed (``applying``), and while waiting for their fsync (``durable_wait``: a
    caught-up follower's next fetch reports the new durable offset, which is what moves
    the leader's high watermark). ``resume_at_ms``: no request before (a backoff after a
    failure, or the deadline of the durable wait)."""

    leader: BrokerId
    sent: ReplicaFetchRequest | EpochEndRequest | None = None
    sent_ms: int = 0
    applying: frozenset[TopicPartition] = frozenset()
    appended: frozenset[TopicPartition] = frozenset()
    answered: frozenset[TopicPartition] = frozenset()  # partitions answered without error
    progressed: bool = False
    draw: float = 0.5  # the jitter of the backoff, should this round have failed
    durable_wait: Mapping[TopicPartition, int] = {}  # tp -> the log end to be durable
    resume_at_ms: int = 0
    failures: int = 0

    @property
    def busy(self) -> bool:
        return self.sent is not None or bool(self.applying) or bool(self.durable_wait)


class ParkedFetch(Value, frozen=True):
    """A follower's fetch with nothing to answer yet (a long-poll), until data arrives,
    the role changes, or ``deadline_ms``. ``problems[i]``: why partition i of the request
    was refused when it arrived (None: served)."""

    fetch_id: int
    request: ReplicaFetchRequest
    problems: tuple[ErrorBody | None, ...]
    deadline_ms: int


class BrokerState(Value, frozen=True):
    config: CoreConfig
    replicas: Mapping[TopicPartition, Replica] = {}
    opening: Mapping[TopicPartition, ReplicaState] = {}  # OpenLog sent, Opened not yet
    sessions: Mapping[BrokerId, FetchSession] = {}
    parked: Mapping[int, ParkedFetch] = {}
    next_isr_check_ms: int = 0
    stopping: bool = False

    @property
    def broker_id(self) -> BrokerId:
        return self.config.broker_id


def with_replica(state: BrokerState, replica: Replica) -> BrokerState:
    return replace(state, replicas={**state.replicas, replica.tp: replica})


def without_replica(state: BrokerState, tp: TopicPartition) -> BrokerState:
    replicas = dict(state.replicas)
    replicas.pop(tp, None)
    return replace(state, replicas=replicas)


def with_session(state: BrokerState, session: FetchSession) -> BrokerState:
    return replace(state, sessions={**state.sessions, session.leader: session})


def without_session(state: BrokerState, leader: BrokerId) -> BrokerState:
    sessions = dict(state.sessions)
    sessions.pop(leader, None)
    return replace(state, sessions=sessions)
