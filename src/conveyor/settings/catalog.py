"""Every setting of every service and command, in one place.

Adding a setting: define it here with :func:`setting` (name, kind, default, help, the
services that read it), add it to its service's tuple, and read it where it is used with
``settings[NAME]`` from the service's resolved :class:`Settings`. Its flag, variable, TOML
key, ``--help`` line, ``conveyor config show`` row and docs/deployment.md row all follow
(a test checks the table against this module: ``python -m conveyor.settings.docs``
rewrites it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from conveyor.protocol.messages import DEFAULT_COORDINATOR_URL
from conveyor.settings import kinds
from conveyor.settings.core import CONFIG_ENV, REQUIRED, Setting, setting

if TYPE_CHECKING:
    from conveyor.protocol.topics import FlushPolicy

SERVERS: Final = ("coordinator", "broker")
EVERYONE: Final = ("coordinator", "broker", "client")

# The same grammar as the coordinator's topic validation (coordinator/validation.py
# PARTITIONS_MAX; a unit test keeps them equal: settings sit below the services).
PARTITIONS_MAX: Final = 10_000
MIB: Final = 1024 * 1024

CONFIG: Final = setting(
    "config",
    kinds.optional(kinds.FILE),
    None,
    "TOML file of settings (flags and CONVEYOR_* variables win over it)",
    EVERYONE,
)

# The connection profile (``conveyor profile``, cli/profile.py) names the settings file
# itself, so like ``config`` these two come from a flag, a variable or their default, never
# from the file (``CHOOSE_THE_FILE``).
PROFILE: Final = setting(
    "profile",
    kinds.optional(kinds.PROFILE_NAME),
    None,
    "the profile (conveyor profile) whose file is the command's settings file, in place of "
    "--config/CONVEYOR_CONFIG",
    ("client",),
    default_text="the one 'conveyor profile use' chose, else none",
)
PROFILES_DIR: Final = setting(
    "profiles_dir",
    kinds.optional(kinds.PATH),
    None,
    "the directory holding the profiles (conveyor profile)",
    ("client",),
    flag=False,
    default_text="$XDG_CONFIG_HOME/conveyor/profiles, else ~/.config/conveyor/profiles",
)
CHOOSE_THE_FILE: Final = (CONFIG, PROFILE, PROFILES_DIR)

# ---- logs (every service) ---------------------------------------------------------------
LOG_LEVEL: Final = setting(
    "log_level",
    kinds.choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True),
    "INFO",
    "log level",
    SERVERS,
)
LOG_FORMAT: Final = setting(
    "log_format",
    kinds.choice("auto", "logfmt", "json", "text"),
    "auto",
    "log line format; auto: text on a terminal, logfmt otherwise",
    SERVERS,
)
ACCESS_LOG: Final = setting(
    "access_log",
    kinds.BOOL,
    False,
    "log one line per HTTP request (method, path, status, bytes, duration, principal)",
    SERVERS,
)

# ---- TLS and authentication ---------------------------------------------------------------
TLS_CERT: Final = setting(
    "tls_cert",
    kinds.optional(kinds.FILE),
    None,
    "PEM certificate (and chain) to serve HTTPS with",
    SERVERS,
    default_text="unset (plain HTTP)",
)
TLS_KEY: Final = setting(
    "tls_key", kinds.optional(kinds.FILE), None, "its PEM private key", SERVERS,
    default_text="inside the certificate file",
)  # fmt: skip
CA: Final = setting(
    "ca",
    kinds.optional(kinds.FILE),
    None,
    "CA bundle to verify peers against",
    EVERYONE,
    default_text="the system's CAs",
)
INTERNAL_MTLS: Final = setting(
    "internal_mtls",
    kinds.BOOL,
    False,
    "internal routes (heartbeats, ISR changes, replication) accept only connections with a "
    "client certificate signed by the CA",
    SERVERS,
)
TLS_CLIENT_CERT: Final = setting(
    "tls_client_cert",
    kinds.optional(kinds.FILE),
    None,
    "certificate presented when connecting to the coordinator or brokers (mutual TLS)",
    ("broker", "client"),
    default_text="with internal_mtls: the broker's tls_cert",
)
TLS_CLIENT_KEY: Final = setting(
    "tls_client_key",
    kinds.optional(kinds.FILE),
    None,
    "its private key",
    ("broker", "client"),
    default_text="with internal_mtls: the broker's tls_key",
)
AUTH: Final = setting(
    "auth",
    kinds.BOOL,
    False,
    "require credentials and ACLs on every request (docs/security.md)",
    SERVERS,
)
METRICS_TOKEN: Final = setting(
    "metrics_token",
    kinds.optional(kinds.SECRET),
    None,
    "the bearer token GET /metrics requires (Prometheus: authorization.credentials_file); "
    "unset: /metrics is open",
    SERVERS,
    flag=False,
    secret=True,
    default_text="unset (/metrics open)",
)
CLUSTER_SECRET: Final = setting(
    "cluster_secret",
    kinds.optional(kinds.SECRET),
    None,
    "the cluster's own bearer token (internal routes, the first administrator); "
    "never a flag (ps shows argv)",
    EVERYONE,
    flag=False,
    secret=True,
)

# ---- listener limits (transport/limits.py, transport/authlimit.py; a unit test keeps
# these defaults equal to the constants there) --------------------------------------------
CONNECTIONS_MAX: Final = setting(
    "connections_max",
    kinds.integer(1),
    4096,
    "open connections the listener accepts; beyond it a connection is answered 503 "
    "TOO_MANY_CONNECTIONS before its request is read (docs/security.md#limits)",
    SERVERS,
)
CONNECTIONS_PER_ADDRESS_MAX: Final = setting(
    "connections_per_address_max",
    kinds.integer(1),
    1024,
    "open connections from one client address (clients behind one NAT or proxy share it)",
    SERVERS,
)
IDLE_TIMEOUT_MS: Final = setting(
    "idle_timeout_ms",
    kinds.duration_ms(1),
    120_000,
    "a connection with no request in progress this long is closed",
    SERVERS,
)
AUTH_FAILURES_PER_ADDRESS_MAX: Final = setting(
    "auth_failures_per_address_max",
    kinds.integer(1),
    30,
    "failed authentications from one client address per window before further attempts "
    "get 429 THROTTLED",
    SERVERS,
)
AUTH_FAILURES_PER_PRINCIPAL_MAX: Final = setting(
    "auth_failures_per_principal_max",
    kinds.integer(1),
    10,
    "failed password checks for one user name per window before further attempts get 429 THROTTLED",
    SERVERS,
)
AUTH_FAILURE_WINDOW_MS: Final = setting(
    "auth_failure_window_ms",
    kinds.duration_ms(1),
    60_000,
    "the window of the two limits above (failures are forgotten at the same pace)",
    SERVERS,
)

# ---- coordinator ------------------------------------------------------------------------
COORDINATOR_LISTEN: Final = setting(
    "listen", kinds.HOST_PORT, "127.0.0.1:7700", "address to serve HTTP on", ("coordinator",)
)
COORDINATOR_DATA: Final = setting(
    "data",
    kinds.PATH,
    Path("data/coordinator"),
    "data directory",
    ("coordinator",),
    default_text="./data/coordinator",
)
SESSION_TIMEOUT_MS: Final = setting(
    "session_timeout_ms",
    kinds.duration_ms(1),
    6000,
    "a broker silent this long is declared dead",
    ("coordinator",),
)
HEARTBEAT_INTERVAL_MS: Final = setting(
    "heartbeat_interval_ms",
    kinds.duration_ms(1),
    1000,
    "heartbeat interval told to brokers (at most a third of the session timeout)",
    ("coordinator",),
)
AUTO_CREATE_TOPICS: Final = setting(
    "auto_create_topics",
    kinds.BOOL,
    True,
    "create unknown topics on a metadata request that asks for it",
    ("coordinator",),
)
DEFAULT_PARTITIONS: Final = setting(
    "default_partitions",
    kinds.integer(1, PARTITIONS_MAX),
    8,
    "partitions of a topic created without a count",
    ("coordinator",),
)
DEFAULT_REPLICATION_FACTOR: Final = setting(
    "default_replication_factor",
    kinds.optional(kinds.integer(1)),
    None,
    "replication factor of a topic created without one",
    ("coordinator",),
    default_text="min(3, live brokers)",
)
REPLICA_RESTORE_DELAY_MS: Final = setting(
    "replica_restore_delay_ms",
    kinds.duration_ms(1),
    30_000,
    "replicas of a broker dead this long are re-created on other brokers",
    ("coordinator",),
)
MAX_CONCURRENT_MOVES: Final = setting(
    "max_concurrent_moves",
    kinds.integer(1),
    2,
    "partitions copying a new replica at once (restoration, rebalancing, decommissioning)",
    ("coordinator",),
)
# Kafka-protocol consumer groups (issue 17, docs/kafka-compatibility.md "Consumer groups")
GROUP_INITIAL_REBALANCE_DELAY_MS: Final = setting(
    "group_initial_rebalance_delay_ms",
    kinds.duration_ms(0, 300_000),
    3000,
    "a new Kafka classic group's first rebalance waits this long for more members "
    "(Kafka's group.initial.rebalance.delay.ms)",
    ("coordinator",),
)
GROUP_MIN_SESSION_TIMEOUT_MS: Final = setting(
    "group_min_session_timeout_ms",
    kinds.duration_ms(1),
    6000,
    "shortest session timeout a Kafka classic group member may ask for "
    "(Kafka's group.min.session.timeout.ms)",
    ("coordinator",),
)
GROUP_MAX_SESSION_TIMEOUT_MS: Final = setting(
    "group_max_session_timeout_ms",
    kinds.duration_ms(1),
    1_800_000,
    "longest session timeout a Kafka classic group member may ask for "
    "(Kafka's group.max.session.timeout.ms)",
    ("coordinator",),
)
GROUP_CONSUMER_SESSION_TIMEOUT_MS: Final = setting(
    "group_consumer_session_timeout_ms",
    kinds.duration_ms(100, 300_000),
    10_000,
    "session timeout of KIP-848 members (Conveyor's clients, Kafka clients with "
    "group.protocol=consumer); Kafka's group.consumer.session.timeout.ms, 45000 there",
    ("coordinator",),
)
# share groups (issue 23, docs/queues.md)
SHARE_STATE_PARTITIONS: Final = setting(
    "share_state_partitions",
    kinds.integer(1, 1000),
    16,
    "partitions of the internal topic __share_state, made with the first share group "
    "(fixed afterwards: share-partitions are hashed onto them)",
    ("coordinator",),
)
# high availability on etcd (issue 20, docs/coordinator.md "High availability")
STORE: Final = setting(
    "store",
    kinds.STORE,
    "sqlite",
    "metadata store: sqlite (coordinator.db under data) or etcd://HOST:PORT,... (several "
    "coordinators share it, one active)",
    ("coordinator",),
)
ETCD_PREFIX: Final = setting(
    "prefix",
    kinds.TEXT,
    "/conveyor/default",
    "etcd key prefix of this cluster's metadata (one cluster per prefix)",
    ("coordinator",),
)
LEASE_TTL_MS: Final = setting(
    "lease_ttl_ms",
    kinds.duration_ms(2000),
    5000,
    "the active coordinator's etcd lease, whole seconds: a standby takes over this long "
    "after the active one stops renewing",
    ("coordinator",),
)
COORDINATOR_ADVERTISED_URL: Final = setting(
    "advertised_url",
    kinds.optional(kinds.URL),
    None,
    "the URL clients and brokers reach this coordinator at (standbys name it)",
    ("coordinator",),
    default_text="http(s)://LISTEN (the host name for a wildcard)",
)
ETCD_CA: Final = setting(
    "etcd_ca", kinds.optional(kinds.FILE), None, "CA to verify etcd's TLS against",
    ("coordinator",), default_text="the system's CAs",
)  # fmt: skip
ETCD_CERT: Final = setting(
    "etcd_cert", kinds.optional(kinds.FILE), None, "client certificate presented to etcd",
    ("coordinator",),
)  # fmt: skip
ETCD_KEY: Final = setting(
    "etcd_key", kinds.optional(kinds.FILE), None, "its private key", ("coordinator",)
)
ETCD_USER: Final = setting(
    "etcd_user", kinds.optional(kinds.TEXT), None, "etcd user (with etcd_password)",
    ("coordinator",),
)  # fmt: skip
ETCD_PASSWORD: Final = setting(
    "etcd_password",
    kinds.optional(kinds.SECRET),
    None,
    "etcd user's password; never a flag (ps shows argv)",
    ("coordinator",),
    flag=False,
    secret=True,
)

# ---- web console (served by the coordinator, docs/console.md) ----------------------------
CONSOLE: Final = setting(
    "console",
    kinds.BOOL,
    True,
    "serve the web console under /console",
    ("coordinator",),
)
CONSOLE_API_URL: Final = setting(
    "console_api_url",
    kinds.optional(kinds.URL),
    None,
    "where the console calls this coordinator's API (set it when the certificate does not "
    "name 127.0.0.1)",
    ("coordinator",),
    default_text="http(s)://127.0.0.1:PORT (the listen port, over loopback)",
)
PROMETHEUS_URL: Final = setting(
    "prometheus_url",
    kinds.optional(kinds.URL),
    None,
    "Prometheus whose firing alerts the console's overview shows",
    ("coordinator",),
    default_text="unset (no alerts shown)",
)
CONSOLE_SESSION_IDLE_MS: Final = setting(
    "console_session_idle_ms",
    kinds.duration_ms(1_000),
    30 * 60 * 1000,
    "a console session unused this long ends",
    ("coordinator",),
)
CONSOLE_SESSION_LIFETIME_MS: Final = setting(
    "console_session_lifetime_ms",
    kinds.duration_ms(1_000),
    12 * 3600 * 1000,
    "a console session ends this long after sign-in, used or not",
    ("coordinator",),
)

# ---- broker ---------------------------------------------------------------------------
BROKER_ID: Final = setting(
    "id",
    kinds.integer(0),
    REQUIRED,
    "this broker's id, unique in the cluster, never reused for another disk",
    ("broker",),
)
BROKER_LISTEN: Final = setting(
    "listen", kinds.HOST_PORT, "127.0.0.1:7701", "address to serve HTTP on", ("broker",)
)
ADVERTISED_URL: Final = setting(
    "advertised_url",
    kinds.optional(kinds.URL),
    None,
    "the URL other brokers and clients reach this broker at",
    ("broker",),
    default_text="http(s)://LISTEN (the host name for a wildcard)",
)
COORDINATOR_URL: Final = setting(
    "coordinator",
    kinds.URL_LIST,
    DEFAULT_COORDINATOR_URL,
    "the coordinator's URL, or every coordinator's, comma-separated (the active one is found)",
    ("broker",),
    env=("CONVEYOR_URL",),
)
BROKER_DATA: Final = setting(
    "data",
    kinds.optional(kinds.PATH),
    None,
    "data directory",
    ("broker",),
    default_text="./data/broker-ID",
)
FLUSH: Final[Setting[FlushPolicy | None]] = setting(
    "flush",
    kinds.optional(kinds.FLUSH),
    None,
    "override every topic's flush policy",
    ("broker",),
    default_text="each topic's own (always)",
)
FETCH_MEMORY_MAX_BYTES: Final = setting(
    "fetch_memory_max_bytes",
    kinds.size(1),
    32 * MIB,
    "fetch answers read and not yet written, broker-wide; past it answers are cut to the "
    "room left (at least 64 KiB, always one whole batch)",
    ("broker",),
)
REQUEST_MAX_BYTES: Final = setting(
    "request_max_bytes",
    kinds.size(1024),
    16 * MIB,
    "largest HTTP request body (a produce request: one or more batches); larger ones are "
    "answered 413 MESSAGE_TOO_LARGE",
    ("broker",),
)
SECURITY_MAX_STALENESS_MS: Final = setting(
    "security_max_staleness_ms",
    kinds.duration_ms(1),
    10_000,
    "with auth on: client requests get 503 once the users, tokens and ACLs have not been "
    "confirmed by the coordinator this long (at least 3 heartbeat intervals): the bound on "
    "a missed revocation",
    ("broker",),
)
FETCH_WRITE_TIMEOUT_MS: Final = setting(
    "fetch_write_timeout_ms",
    kinds.duration_ms(1),
    30_000,
    "a connection whose fetch answer is not read within this is reset (a slow consumer)",
    ("broker",),
)
CLEANER_IO_BYTES_PER_S: Final = setting(
    "cleaner_io_bytes_per_s",
    kinds.size(0),
    0,
    "bytes a second the log cleaner may read and write, together (0: unthrottled, as "
    "Kafka's log.cleaner.io.max.bytes.per.second)",
    ("broker",),
)
CLEANER_DEDUPE_BUFFER_BYTES: Final = setting(
    "cleaner_dedupe_buffer_bytes",
    kinds.size(64 * 1024),
    32 * MIB,
    "memory of the log cleaner's key -> offset map (about 128 bytes a key); a dirty part "
    "with more keys is cleaned in several passes",
    ("broker",),
)
CLEANER_BACKOFF_MS: Final = setting(
    "cleaner_backoff_ms",
    kinds.duration_ms(1),
    15_000,
    "how long the log cleaner sleeps when no compacted log is dirty enough",
    ("broker",),
)

# ---- the broker's Kafka listener (docs/kafka-compatibility.md) ---------------------------
REPLICA_PORT: Final = setting(
    "replica_port",
    kinds.integer(0, 65535),
    0,
    "the port of the replica listener (followers fetch from leaders there, on the host of "
    "broker_listen; 0: one the OS picks, which followers learn from the broker's HTTP API)",
    ("broker",),
)
KAFKA_LISTEN: Final = setting(
    "kafka_listen",
    kinds.optional(kinds.LISTEN_OR_OFF),
    None,
    "where to serve the Kafka protocol, which Conveyor's own clients speak to brokers; "
    "off: no Kafka listener (no Kafka client, Conveyor's included, can use this broker)",
    ("broker",),
    default_text="the host of listen, a port the OS picks (advertised to clients)",
)
KAFKA_ADVERTISE: Final = setting(
    "kafka_advertise",
    kinds.optional(kinds.ADDRESS),
    None,
    "the HOST:PORT Kafka clients reach this broker at, given in Metadata answers and "
    "listed by the coordinator (set it behind NAT, in containers, with published ports)",
    ("broker",),
    default_text="the listener's host (the host name for a wildcard) and bound port",
)
KAFKA_MAX_FRAME_BYTES: Final = setting(
    "kafka_max_frame_bytes",
    kinds.size(64),
    100 * MIB,
    "largest Kafka request accepted (Kafka's socket.request.max.bytes); larger ones close "
    "the connection unread",
    ("broker",),
)
KAFKA_CONNECTIONS_MAX: Final = setting(
    "kafka_connections_max",
    kinds.integer(1),
    4096,
    "open Kafka connections at most (Kafka's max.connections); more are closed at once",
    ("broker",),
)

# ---- clients and the CLI ------------------------------------------------------------------
URL: Final = setting(
    "url",
    kinds.URL_LIST,
    DEFAULT_COORDINATOR_URL,
    "the coordinator's URL, or every coordinator's, comma-separated (the active one is found)",
    ("client",),
)
BOOTSTRAP_SERVERS: Final = setting(
    "bootstrap_servers",
    kinds.optional(kinds.TEXT),
    None,
    "the brokers' Kafka listeners, HOST:PORT[,HOST:PORT...]: clients then speak the Kafka "
    "protocol to them and need no coordinator URL for what Kafka's APIs carry",
    ("client",),
)
TRANSPORT: Final = setting(
    "transport",
    kinds.optional(kinds.choice("http", "kafka")),
    None,
    "what Admin and the admin commands (topic, group, cluster) speak: http (the "
    "coordinator) or kafka (the brokers' Kafka listeners); unset: kafka when "
    "bootstrap_servers is set, else http. The data path (produce, consume, Producer, "
    "Consumer) is always Kafka: http there is an error",
    ("client",),
)
TOKEN: Final = setting(
    "token", kinds.optional(kinds.SECRET), None, "API token", ("client",), secret=True
)
GROUP_INSTANCE_ID: Final = setting(
    "group_instance_id",
    kinds.optional(kinds.TEXT),
    None,
    "static group membership for the seed functions (pull, subscribe): a restarted "
    "process with the same id takes its partitions back at once",
    ("client",),
    flag=False,
)
RECORD_CODEC: Final = setting(
    "record_codec",
    kinds.choice("auto", "compiled", "python"),
    "auto",
    "the producer's and consumer's record batch codec: compiled (aiokafka's extension), "
    "python (the pure-Python fallback), or auto: compiled when installed",
    ("client",),
    flag=False,
)
USER: Final = setting(
    "user", kinds.optional(kinds.TEXT), None, "user name (with a password)", ("client",)
)
PASSWORD: Final = setting(
    "password",
    kinds.optional(kinds.SECRET),
    None,
    "password (prefer the variable or its _FILE twin: argv is visible)",
    ("client",),
    secret=True,
)
NEW_PASSWORD: Final = setting(
    "new_password",
    kinds.optional(kinds.SECRET),
    None,
    "the password `conveyor user add` gives a new user (else it prompts)",
    ("client",),
    flag=False,
    secret=True,
)

_COMMON_SERVER: Final[tuple[Setting[Any], ...]] = (
    CONFIG,
    LOG_LEVEL,
    LOG_FORMAT,
    ACCESS_LOG,
    TLS_CERT,
    TLS_KEY,
    CA,
    INTERNAL_MTLS,
    AUTH,
    CLUSTER_SECRET,
    METRICS_TOKEN,
    CONNECTIONS_MAX,
    CONNECTIONS_PER_ADDRESS_MAX,
    IDLE_TIMEOUT_MS,
    AUTH_FAILURES_PER_ADDRESS_MAX,
    AUTH_FAILURES_PER_PRINCIPAL_MAX,
    AUTH_FAILURE_WINDOW_MS,
)
COORDINATOR: Final[tuple[Setting[Any], ...]] = (
    COORDINATOR_LISTEN,
    COORDINATOR_DATA,
    SESSION_TIMEOUT_MS,
    HEARTBEAT_INTERVAL_MS,
    AUTO_CREATE_TOPICS,
    DEFAULT_PARTITIONS,
    DEFAULT_REPLICATION_FACTOR,
    REPLICA_RESTORE_DELAY_MS,
    MAX_CONCURRENT_MOVES,
    GROUP_INITIAL_REBALANCE_DELAY_MS,
    GROUP_MIN_SESSION_TIMEOUT_MS,
    GROUP_MAX_SESSION_TIMEOUT_MS,
    GROUP_CONSUMER_SESSION_TIMEOUT_MS,
    SHARE_STATE_PARTITIONS,
    CONSOLE,
    CONSOLE_API_URL,
    PROMETHEUS_URL,
    CONSOLE_SESSION_IDLE_MS,
    CONSOLE_SESSION_LIFETIME_MS,
    STORE,
    ETCD_PREFIX,
    LEASE_TTL_MS,
    COORDINATOR_ADVERTISED_URL,
    ETCD_CA,
    ETCD_CERT,
    ETCD_KEY,
    ETCD_USER,
    ETCD_PASSWORD,
    *_COMMON_SERVER,
)
BROKER: Final[tuple[Setting[Any], ...]] = (
    BROKER_ID,
    BROKER_LISTEN,
    ADVERTISED_URL,
    COORDINATOR_URL,
    BROKER_DATA,
    FLUSH,
    FETCH_MEMORY_MAX_BYTES,
    REQUEST_MAX_BYTES,
    SECURITY_MAX_STALENESS_MS,
    FETCH_WRITE_TIMEOUT_MS,
    CLEANER_IO_BYTES_PER_S,
    CLEANER_DEDUPE_BUFFER_BYTES,
    CLEANER_BACKOFF_MS,
    REPLICA_PORT,
    KAFKA_LISTEN,
    KAFKA_ADVERTISE,
    KAFKA_MAX_FRAME_BYTES,
    KAFKA_CONNECTIONS_MAX,
    *_COMMON_SERVER,
    TLS_CLIENT_CERT,
    TLS_CLIENT_KEY,
)
CLIENT: Final[tuple[Setting[Any], ...]] = (
    URL,
    BOOTSTRAP_SERVERS,
    TRANSPORT,
    CA,
    TOKEN,
    GROUP_INSTANCE_ID,
    RECORD_CODEC,
    USER,
    PASSWORD,
    TLS_CLIENT_CERT,
    TLS_CLIENT_KEY,
    CLUSTER_SECRET,
    NEW_PASSWORD,
    CONFIG,
    PROFILE,
    PROFILES_DIR,
)
BY_SERVICE: Final[dict[str, tuple[Setting[Any], ...]]] = {
    "coordinator": COORDINATOR,
    "broker": BROKER,
    "client": CLIENT,
}

# Variables docker-compose.yml interpolates itself (docs/deployment.md's second table):
# services never read them, but they may sit in the same environment or .env file.
COMPOSE_ONLY: Final = frozenset(
    {
        "CONVEYOR_IMAGE",
        "CONVEYOR_BASE_IMAGE",
        "CONVEYOR_PUBLISH_ADDRESS",
        "CONVEYOR_KAFKA_ADVERTISE_HOST",
        "CONVEYOR_PUBLISH_COORDINATOR",
        "CONVEYOR_PUBLISH_PROMETHEUS",
        "CONVEYOR_PUBLISH_GRAFANA",
        "CONVEYOR_SCHEME",
        "CONVEYOR_PROMETHEUS_IMAGE",
        "CONVEYOR_GRAFANA_IMAGE",
        "CONVEYOR_PROMETHEUS_RETENTION",
        "CONVEYOR_GRAFANA_ADMIN_USER",
        "CONVEYOR_GRAFANA_ADMIN_PASSWORD",
        # the `ha` profile (deploy/compose/ha.env)
        "CONVEYOR_COORDINATORS",
        "CONVEYOR_ETCD_IMAGE",
        "CONVEYOR_PUBLISH_COORDINATOR_2",
        "CONVEYOR_PUBLISH_COORDINATOR_3",
    }
)
# Prefixes of variables that are not settings: compose's per-broker ports, and the test
# suite's own switches (CONVEYOR_TEST_TLS, ...), the chaos harness's (CONVEYOR_CHAOS_NETWORK).
NOT_SETTINGS_PREFIXES: Final = ("CONVEYOR_PUBLISH_BROKER_", "CONVEYOR_TEST_", "CONVEYOR_CHAOS_")


def every_setting() -> list[Setting[Any]]:
    """Each setting once, in catalogue order."""
    seen: dict[int, Setting[Any]] = {}
    for group in BY_SERVICE.values():
        for item in group:
            seen.setdefault(id(item), item)
    return list(seen.values())


def known_env() -> set[str]:
    """Every variable some service or command reads (secrets' ``_FILE`` twins too)."""
    names = {CONFIG_ENV, *COMPOSE_ONLY}
    for item in every_setting():
        names.update(item.env)
        if item.secret:
            names.update(f"{name}_FILE" for name in item.env)
    return names


def is_known_env(name: str) -> bool:
    return name in known_env() or name.startswith(NOT_SETTINGS_PREFIXES)


def file_keys() -> dict[str, set[str]]:
    """The keys the TOML file may hold, per service (not those choosing the file)."""
    keys: dict[str, set[str]] = {}
    for service, group in BY_SERVICE.items():
        names = {item.name for item in group} - {item.name for item in CHOOSE_THE_FILE}
        names.update(f"{item.name}_file" for item in group if item.secret)
        keys[service] = names
    return keys


def by_env(name: str) -> Setting[Any]:
    """The setting read from variable ``name``."""
    for item in every_setting():
        if name in item.env:
            return item
    raise KeyError(name)
