"""The broker's settings: every limit named here with its default and why."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from conveyor.broker.rules import FETCH_MAX_BYTES, FETCH_MAX_WAIT_MS, PRODUCE_MAX_TIMEOUT_MS
from conveyor.protocol.messages import DEFAULT_COORDINATOR_URL, BrokerId
from conveyor.storage import FlushPolicy
from conveyor.storage.cleaner import CleanerSettings
from conveyor.transport.coordinators import CoordinatorSet
from conveyor.transport.tls import TLSConfig

MIB = 1024 * 1024


def coordinators_of(config: BrokerConfig) -> CoordinatorSet:
    """Every coordinator the broker was given; its HTTP client sends their requests to
    the active one (transport/coordinators.py)."""
    return CoordinatorSet(config.coordinator_urls or (config.coordinator_url,))


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The broker's Kafka listener (``--kafka-listen``, on by default); every limit with
    its default."""

    listen_host: str
    listen_port: int  # 0: one the OS picks (``bound`` gives the settings once listening)
    # HOST:PORT given to clients in Metadata answers and to the coordinator in heartbeats;
    # None: the listen host (the host name for a wildcard) and the bound port
    advertise: str | None = None
    max_frame_bytes: int = 100 * MIB  # Kafka's socket.request.max.bytes
    connections_max: int = 4096  # Kafka's max.connections (per broker)
    connections_per_address_max: int = 1024  # Kafka's max.connections.per.ip
    idle_timeout_ms: int = 600_000  # Kafka's connections.max.idle.ms
    inflight_max: int = 32  # pipelined requests per connection

    def bound(self, port: int) -> KafkaSettings:
        """These settings once the listener is bound on ``port``: the port the OS picked
        for port 0, and the address clients are given when none was set."""
        advertise = self.advertise
        if advertise is None:
            host = self.listen_host
            if host in WILDCARD_HOSTS:  # not an address anyone can connect to
                host = socket.gethostname()
            elif ":" in host and not host.startswith("["):
                host = f"[{host}]"  # Kafka clients split HOST:PORT at the last colon
            advertise = f"{host}:{port}"
        return replace(self, listen_port=port, advertise=advertise)


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})  # noqa: S104 -- names, not binds


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    broker_id: BrokerId
    data_dir: Path
    advertised_url: str = "http://127.0.0.1:7701"
    coordinator_url: str = DEFAULT_COORDINATOR_URL  # the first of coordinator_urls
    # every coordinator given (--coordinator URL,URL,URL); requests go to the active one
    coordinator_urls: tuple[str, ...] = ()
    # None: each topic's own flush policy; set: an operator override for every topic.
    flush_override: FlushPolicy | None = None
    tls: TLSConfig = field(default_factory=TLSConfig)
    # One HTTP request body at most (aiohttp answers 413 beyond it); batches are also
    # limited one by one by their topic's max_message_bytes.
    request_max_bytes: int = 16 * MIB
    fetch_max_bytes: int = FETCH_MAX_BYTES
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    # Fetch answers read and not yet written, broker-wide (fetchmemory.py); past it an
    # answer is cut to 64 KiB (at least one batch). Replica fetches are not counted.
    fetch_memory_max_bytes: int = 32 * MIB
    # A fetch answer not written within this (a consumer that stopped reading its socket)
    # closes the connection, like NATS's write deadline for slow consumers.
    fetch_write_timeout_ms: int = 30_000
    produce_max_timeout_ms: int = PRODUCE_MAX_TIMEOUT_MS
    heartbeat_interval_ms: int = 1000  # until the coordinator says otherwise
    heartbeat_timeout_ms: int = 5000
    heartbeat_max_backoff_ms: int = 5000
    metadata_refresh_ms_min: int = 1000  # at most one lookup per topic per second
    metadata_max_age_ms: int = 30_000
    forward_connections_max: int = 100  # to other brokers, for the routing endpoint
    retention_check_interval_ms: int = 300_000  # Kafka's log.retention.check.interval.ms
    flusher_threads: int = 2
    # The log cleaner of compacted topics (storage/cleaner.py): throttle, map memory, idle.
    cleaner: CleanerSettings = field(default_factory=CleanerSettings)
    # Replication (Kafka's replica.lag.time.max.ms and replica fetcher settings).
    replica_lag_time_max_ms: int = 10_000
    replica_fetch_max_wait_ms: int = 500
    replica_fetch_max_bytes: int = 32 * MIB
    replica_fetch_partition_max_bytes: int = 8 * MIB
    # The replica listener (followers fetch there, broker/replica_listener.py): the host
    # of the HTTP listener, and a port (0: one the OS picks; followers ask for it).
    replica_listen_host: str = "127.0.0.1"
    replica_port: int = 0
    shutdown_timeout_s: float = 10.0
    # The cluster's own token, sent on calls to the coordinator and other brokers; kept
    # out of repr so that logging a config never shows it.
    cluster_secret: str | None = field(default=None, repr=False)
    kafka: KafkaSettings | None = None  # the Kafka protocol listener; None: none
    # With auth on: client requests are refused (503 NOT_READY) once the broker's copy of
    # the users, tokens and ACLs has not been confirmed by the coordinator for this long
    # (at least 3 heartbeat intervals): the bound on how long a revocation can be missed.
    security_max_staleness_ms: int = 10_000
