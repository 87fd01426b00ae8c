"""Authentication and ACLs on a real cluster: the coordinator stores users, tokens and
rules; brokers learn them from heartbeats and enforce them locally."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import pytest

import conveyor
from conveyor.client.group import GroupAdmin
from conveyor.client.security import SecurityAdmin
from conveyor.protocol.errors import (
    AuthenticationError,
    AuthorizationError,
    ConveyorError,
    ErrorCode,
    RetriableError,
)
from conveyor.protocol.fetchframe import HelloAnswer, ReplicaHello
from conveyor.protocol.messages import (
    BrokerId,
    Epoch,
    EpochEndPartition,
    EpochEndRequest,
    EpochEndResponse,
)
from conveyor.transport.auth import PUBLIC, policy_for
from conveyor.transport.client import SyncHTTP
from conveyor.transport.credentials import authorization_header
from tests.integration.cluster import Cluster, wait_for
from tests.integration.replica_wire import error_code, exchange, listener_address, open_replica

SECRET = "cluster-secret-for-tests-0123456789"
GUESS_WINDOW_MS = 600_000


@dataclass
class AuthCluster:
    cluster: Cluster
    admin_token: str

    @property
    def url(self) -> str:
        return self.cluster.url

    def broker_url(self) -> str:
        return self.cluster.brokers[1].url

    def security(self) -> SecurityAdmin:
        return SecurityAdmin(self.url, token=self.admin_token)


@pytest.fixture(scope="module")
def auth_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthCluster]:
    root = tmp_path_factory.mktemp("auth")
    # A failure window of 10 min (10 per user per 10 min): password guessing is throttled
    # on a burst whatever the machine's load (at 1 a minute the bucket barely drains).
    slow_drain = ["--auth", "--auth-failure-window-ms", str(GUESS_WINDOW_MS)]
    env = {
        "CONVEYOR_CLUSTER_SECRET": SECRET,
        # A client token in the services' environment too: brokers must still speak as
        # the cluster (internal routes refuse client tokens).
        "CONVEYOR_TOKEN": "cvt_0000_client-token-in-a-shared-env",
    }
    cluster = Cluster(
        root, broker_count=1, coordinator_args=slow_drain, broker_args=slow_drain, env=env
    )
    cluster.start()
    try:
        # Bootstrap as operators do: the cluster secret creates the first administrator.
        with SecurityAdmin(cluster.url, token=SECRET) as security:
            security.add_user("root", "root-password")
            security.add_acl("user:root", "admin", "cluster", "cluster")
            admin_token = security.create_token("user:root").token
        with conveyor.Admin(cluster.url, token=admin_token) as admin:
            admin.create_topic("orders", partitions=1, replication_factor=1)
            admin.create_topic("team-a.events", partitions=1, replication_factor=1)
            admin.create_topic("team-b.events", partitions=1, replication_factor=1)
        ac = AuthCluster(cluster, admin_token)
        wait_for(lambda: _knows(ac, admin_token), 5, "the broker to learn the admin token")
        for topic in ("orders", "team-a.events", "team-b.events"):
            wait_for(lambda t=topic: _serves(ac, t), 10, f"the broker to lead {topic}-0")
        yield ac
    finally:
        cluster.stop()


def new_token(ac: AuthCluster, principal: str, expires_in_ms: int | None = None) -> tuple[str, str]:
    """A new token, once the broker knows it (from its next heartbeat)."""
    with ac.security() as security:
        created = security.create_token(principal, expires_in_ms)
    wait_for(lambda: _knows(ac, created.token), 5, "the broker to learn the token")
    return created.token_id, created.token


def _knows(ac: AuthCluster, token: str) -> bool:
    """Does the broker know ``token`` (403 or 200 rather than 401)?"""
    http = SyncHTTP(authorization=authorization_header(token))
    try:
        http.request("GET", f"{ac.broker_url()}/v1/partitions")
    except AuthenticationError:
        return False
    except AuthorizationError:
        return True
    return True


def _serves(ac: AuthCluster, topic: str) -> bool:
    try:
        end_offset(ac, topic)
    except RetriableError:
        return False
    return True


def produce(ac: AuthCluster, topic: str, token: str | None, value: bytes = b"v") -> None:
    """One JSON record to the broker's routing endpoint; raises the typed error."""
    http = SyncHTTP(authorization=authorization_header(token))
    body = json.dumps({"records": [{"value": value.decode()}]}).encode()
    http.request("POST", f"{ac.broker_url()}/v1/topics/{topic}/records", body=body)


def end_offset(ac: AuthCluster, topic: str) -> int:
    """The log end offset of partition 0, read from the broker as the administrator."""
    http = SyncHTTP(authorization=authorization_header(ac.admin_token))
    url = f"{ac.broker_url()}/v1/topics/{topic}/partitions/0/offsets"
    return int(json.loads(http.request("GET", url).data)["log_end_offset"])


def wait_until_broker_refuses(ac: AuthCluster, topic: str, token: str, timeout_s: float) -> float:
    started = time.monotonic()

    def refused() -> bool:
        try:
            produce(ac, topic, token)
        except (AuthenticationError, AuthorizationError):
            return True
        return False

    wait_for(refused, timeout_s, "the broker to refuse", interval_s=0.02)
    return time.monotonic() - started


def test_no_credentials_wrong_password_and_unknown_token_get_401(auth_cluster: AuthCluster) -> None:
    before = end_offset(auth_cluster, "orders")
    for token in (None, "cvt_nope_nope", "not-a-token"):
        with pytest.raises(AuthenticationError) as refused:
            produce(auth_cluster, "orders", token)
        assert refused.value.code is ErrorCode.UNAUTHENTICATED
    with auth_cluster.security() as security:
        security.add_user("mallory", "right-password")
    for user, password in (("mallory", "wrong-password"), ("nobody", "right-password")):
        with (
            pytest.raises(AuthenticationError),
            conveyor.Admin(auth_cluster.url, user=user, password=password) as admin,
        ):
            admin.list_topics()
    assert end_offset(auth_cluster, "orders") == before  # nothing written


def test_deny_by_default_then_allow_by_acl(auth_cluster: AuthCluster) -> None:
    _, token = new_token(auth_cluster, "svc-orders")
    before = end_offset(auth_cluster, "orders")
    with pytest.raises(AuthorizationError) as refused:
        produce(auth_cluster, "orders", token)
    assert refused.value.code is ErrorCode.FORBIDDEN
    assert end_offset(auth_cluster, "orders") == before
    with auth_cluster.security() as security:
        security.add_acl("svc-orders", "produce", "topic", "orders")

    def allowed() -> bool:
        try:
            produce(auth_cluster, "orders", token)
        except AuthorizationError:
            return False
        return True

    wait_for(allowed, 5, "the broker to learn the new rule from a heartbeat")
    assert end_offset(auth_cluster, "orders") == before + 1
    # produce on orders only: not consume, not another topic, not admin
    with pytest.raises(AuthorizationError):
        produce(auth_cluster, "team-a.events", token)
    with pytest.raises(AuthorizationError), conveyor.Admin(auth_cluster.url, token=token) as admin:
        admin.delete_topic("orders")
    with conveyor.Admin(auth_cluster.url, token=auth_cluster.admin_token) as admin:
        assert "orders" in [t.name for t in admin.list_topics()]


def test_a_token_and_a_rule_created_just_now_work_on_the_broker_at_once(
    auth_cluster: AuthCluster,
) -> None:
    # No wait for a heartbeat: a broker that meets unknown credentials or a denial asks
    # the coordinator for the newer state before answering 401/403.
    before = end_offset(auth_cluster, "orders")
    with auth_cluster.security() as security:
        token = security.create_token("svc-fresh").token
        security.add_acl("svc-fresh", "produce", "topic", "orders")
    produce(auth_cluster, "orders", token)
    assert end_offset(auth_cluster, "orders") == before + 1


def test_prefix_rules_and_the_library_with_a_user(auth_cluster: AuthCluster) -> None:
    with auth_cluster.security() as security:
        security.add_user("alice", "alice-password")
        security.add_acl("user:alice", "produce", "topic", "team-a.", "prefix")
        security.add_acl("user:alice", "describe", "topic", "team-a.", "prefix")
    basic = {"user": "alice", "password": "alice-password"}
    deadline = time.monotonic() + 5
    while True:
        try:
            SyncHTTP(authorization=authorization_header(**basic)).request(
                "POST",
                f"{auth_cluster.broker_url()}/v1/topics/team-a.events/records",
                body=b'{"records": [{"value": "a"}]}',
            )
            break
        except (AuthenticationError, AuthorizationError):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with pytest.raises(AuthorizationError):
        SyncHTTP(authorization=authorization_header(**basic)).request(
            "POST",
            f"{auth_cluster.broker_url()}/v1/topics/team-b.events/records",
            body=b'{"records": [{"value": "b"}]}',
        )
    with conveyor.Admin(auth_cluster.url, **basic) as admin:
        assert admin.describe_topic("team-a.events").name == "team-a.events"
        with pytest.raises(AuthorizationError):
            admin.describe_topic("team-b.events")


def test_revocation_takes_effect_within_one_heartbeat(auth_cluster: AuthCluster) -> None:
    token_id, token = new_token(auth_cluster, "svc-revoked")
    with auth_cluster.security() as security:
        security.add_acl("svc-revoked", "produce", "topic", "orders")
    wait_for(lambda: _produces(auth_cluster, token), 5, "the token to work on the broker")
    with auth_cluster.security() as security:
        security.revoke_token(token_id)
    took_s = wait_until_broker_refuses(auth_cluster, "orders", token, 5)
    heartbeat_interval_s = 1.0
    assert took_s <= heartbeat_interval_s + 0.5, took_s


# Long enough for the broker to learn the token and its ACL (heartbeats) and for a first
# produce: with 4 s, the token expired before it ever worked on a loaded host (make test's
# two sessions at load 30); the test waits out the rest of it.
SHORT_TOKEN_LIFE_S = 8.0


def test_an_expired_token_is_refused(auth_cluster: AuthCluster) -> None:
    life_ms = int(SHORT_TOKEN_LIFE_S * 1000)
    _, token = new_token(auth_cluster, "svc-short", expires_in_ms=life_ms)
    with auth_cluster.security() as security:
        security.add_acl("svc-short", "produce", "topic", "orders")
    wait_for(lambda: _produces(auth_cluster, token), SHORT_TOKEN_LIFE_S, "the token to work")
    wait_until_broker_refuses(auth_cluster, "orders", token, SHORT_TOKEN_LIFE_S + 4)
    with pytest.raises(AuthenticationError):
        produce(auth_cluster, "orders", token)


def _produces(ac: AuthCluster, token: str) -> bool:
    try:
        produce(ac, "orders", token)
    except (AuthenticationError, AuthorizationError):
        return False
    return True


def routes_of(url: str) -> list[tuple[str, str, bool]]:
    with urllib.request.urlopen(url + "/openapi.json") as response:
        document = json.load(response)
    return [
        (method.upper(), path, "internal" in operation.get("tags", []))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def concrete(path: str) -> str:
    return (
        path.replace("{topic}", "orders")
        .replace("{partition}", "0")
        .replace("{group}", "g")
        .replace("{broker_id}", "1")
        .replace("{name}", "alice")
        .replace("{token_id}", "x")
    )


def test_every_endpoint_refuses_missing_credentials_and_tokens_without_acls(
    auth_cluster: AuthCluster,
) -> None:
    """Enumerated from the OpenAPI documents: a new endpoint without a policy fails here."""
    _, no_acl_token = new_token(auth_cluster, "svc-nothing")
    anonymous = SyncHTTP(authorization=None)
    anonymous._authorization = None
    nothing = SyncHTTP(authorization=authorization_header(no_acl_token))
    checked = 0
    for base in (auth_cluster.url, auth_cluster.broker_url()):
        for method, path, internal in routes_of(base):
            if not internal and policy_for(method, path) is PUBLIC:
                continue
            url = base + concrete(path)
            body = b"{}" if method in ("POST", "PUT") else None
            with pytest.raises(AuthenticationError):
                anonymous.request(method, url, body=body)
            if internal or policy_for(method, path).operation is not None:
                with pytest.raises(AuthorizationError):
                    nothing.request(method, url, body=body)
            checked += 1
    assert checked >= 20


def test_client_tokens_are_refused_on_internal_routes_whatever_their_acls(
    auth_cluster: AuthCluster,
) -> None:
    admin = SyncHTTP(authorization=authorization_header(auth_cluster.admin_token))
    for base in (auth_cluster.url, auth_cluster.broker_url()):
        for method, path, internal in routes_of(base):
            if internal:
                with pytest.raises(AuthorizationError):
                    admin.request(method, base + concrete(path), body=b"{}")


def test_the_replica_listener_admits_the_cluster_secret_only(auth_cluster: AuthCluster) -> None:
    """Followers fetch on the replica listener: the internal routes' rule holds there
    (no credentials, a client's token or a fetch before the hello are refused)."""
    if auth_cluster.cluster.tls_dir is not None:
        pytest.skip(
            "the HTTPS pass: the replica listener speaks TLS and admits by client certificate"
            " (test_tls.py: test_the_replica_listener_needs_the_cluster_client_certificate)"
        )
    cluster_http = SyncHTTP(authorization=authorization_header(SECRET))
    address = listener_address(cluster_http, auth_cluster.broker_url())
    refusals = [
        (ReplicaHello(broker_id=9), "UNAUTHENTICATED"),
        (ReplicaHello(broker_id=9, secret=auth_cluster.admin_token), "FORBIDDEN"),
        (EpochEndRequest(broker_id=BrokerId(9), partitions=[]), "INVALID_REQUEST"),
    ]
    for request, code in refusals:
        with open_replica(address) as sock:
            ok, header = exchange(sock, request)
            assert not ok and error_code(header) == code, request
            with pytest.raises(ConnectionError):  # and the connection is closed
                exchange(sock, request)
    with open_replica(address) as sock:
        ok, header = exchange(sock, ReplicaHello(broker_id=9, secret=SECRET))
        assert ok and msgspec.json.decode(header, type=HelloAnswer).broker_id == 1
        asked = EpochEndPartition(
            topic="orders", partition=0, current_leader_epoch=Epoch(-1), epoch=Epoch(0)
        )
        ok, header = exchange(sock, EpochEndRequest(broker_id=BrokerId(9), partitions=[asked]))
        assert ok and msgspec.json.decode(header, type=EpochEndResponse).partitions


def test_cli_user_token_acl_and_produce(auth_cluster: AuthCluster) -> None:
    env = dict(os.environ, CONVEYOR_URL=auth_cluster.url, CONVEYOR_TOKEN=auth_cluster.admin_token)

    def cli(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            capture_output=True,
            text=True,
            env={**env, **(extra or {})},
            timeout=60,
            check=False,
        )

    added = cli("user", "add", "carol", "--new-password", "carol-password")
    assert added.returncode == 0, added.stderr
    acl = cli("acl", "add", "user:carol", "produce", "--topic", "orders")
    assert acl.returncode == 0, acl.stderr
    created = cli("token", "create", "user:carol", "--json")
    assert created.returncode == 0, created.stderr
    carol_token = json.loads(created.stdout)["token"]
    listed = cli("acl", "list", "--json")
    assert {
        "principal": "user:carol",
        "operation": "produce",
        "resource_type": "topic",
        "name": "orders",
        "pattern": "literal",  # --json has every field, defaults included
    } in json.loads(listed.stdout)
    tokens = cli("token", "list", "--json")
    assert carol_token not in tokens.stdout  # secrets are shown once, never listed
    produced = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "produce",
            "orders",
            "hi",
            "--user",
            "carol",
            "--password",
            "carol-password",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ, CONVEYOR_URL=auth_cluster.url),
    )
    # carol may produce but not read metadata beyond what producing needs
    assert produced.returncode == 0, produced.stderr
    refused = cli("topic", "list", extra={"CONVEYOR_TOKEN": carol_token})
    assert refused.returncode == 1 and "FORBIDDEN" in refused.stderr


def test_secrets_never_appear_in_logs_or_metrics(auth_cluster: AuthCluster) -> None:
    texts = [auth_cluster.cluster.logs()]
    for base in (auth_cluster.url, auth_cluster.broker_url()):
        with urllib.request.urlopen(base + "/metrics") as response:
            texts.append(response.read().decode())
    for text in texts:
        assert SECRET not in text
        assert auth_cluster.admin_token not in text
        assert "root-password" not in text
        assert "alice-password" not in text


def test_metadata_auto_creates_only_with_create_topic(auth_cluster: AuthCluster) -> None:
    _, token = new_token(auth_cluster, "svc-creator")
    http = SyncHTTP(authorization=authorization_header(token))
    url = f"{auth_cluster.url}/v1/metadata?topics=made-by-svc&auto_create=true"
    with pytest.raises(ConveyorError) as unknown:
        http.request("GET", url)  # as without auto_create: nothing is created
    assert unknown.value.code is ErrorCode.UNKNOWN_TOPIC

    def topics() -> list[str]:
        with conveyor.Admin(auth_cluster.url, token=auth_cluster.admin_token) as admin:
            return [t.name for t in admin.list_topics()]

    assert "made-by-svc" not in topics()
    with auth_cluster.security() as security:
        security.add_acl("svc-creator", "create_topic", "topic", "made-by-", "prefix")
    http.request("GET", url)  # the coordinator enforces its own state: no heartbeat wait
    assert "made-by-svc" in topics()


def test_library_producer_and_group_consumer_with_the_documented_rules(
    auth_cluster: AuthCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """produce + consume on the topic and group on the group are all a service needs."""
    with auth_cluster.security() as security:
        for operation in ("produce", "consume"):
            security.add_acl("svc-app", operation, "topic", "app.", "prefix")  # type: ignore[arg-type]
        security.add_acl("svc-app", "group", "group", "app-", "prefix")
    with conveyor.Admin(auth_cluster.url, token=auth_cluster.admin_token) as admin:
        admin.create_topic("app.events", partitions=2, replication_factor=1)
    _, token = new_token(auth_cluster, "svc-app")
    monkeypatch.setenv("CONVEYOR_TOKEN", token)  # what Producer and Consumer read
    with conveyor.Producer(auth_cluster.url) as producer:
        for i in range(20):
            producer.send("app.events", f"m{i}", key=f"k{i % 4}")
        producer.flush()
    received: list[bytes] = []
    with conveyor.Consumer(auth_cluster.url, "app.events", group_id="app-workers") as consumer:
        deadline = time.monotonic() + 20
        while len(received) < 20 and time.monotonic() < deadline:
            received += [m.value or b"" for m in consumer.poll(timeout=0.5)]
    assert sorted(received) == sorted(f"m{i}".encode() for i in range(20))


def test_library_clients_take_credentials_as_arguments(
    auth_cluster: AuthCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Producer, AsyncProducer, Consumer (group member) and GroupAdmin with token= or
    user=/password=, with nothing in the environment; a wrong token fails typed."""
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    with auth_cluster.security() as security:
        security.add_user("dave", "dave-password")
        for principal in ("svc-args", "user:dave"):
            for operation in ("produce", "consume"):
                security.add_acl(principal, operation, "topic", "args.", "prefix")  # type: ignore[arg-type]
            security.add_acl(principal, "group", "group", "args-", "prefix")
            security.add_acl(principal, "describe", "group", "args-", "prefix")
        token = security.create_token("svc-args").token
    with conveyor.Admin(auth_cluster.url, token=auth_cluster.admin_token) as admin:
        admin.create_topic("args.events", partitions=2, replication_factor=1)
    with conveyor.Producer(auth_cluster.url, token=token) as producer:
        for i in range(10):
            producer.send("args.events", f"t{i}", key=f"k{i % 3}")
        producer.flush()

    async def send_async() -> None:
        async with conveyor.AsyncProducer(
            auth_cluster.url, user="dave", password="dave-password"
        ) as producer:
            for i in range(10):
                await producer.send("args.events", f"u{i}", key=f"k{i % 3}")
            await producer.flush()

    asyncio.run(send_async())
    received: list[bytes] = []
    with conveyor.Consumer(
        auth_cluster.url, "args.events", group_id="args-workers", token=token
    ) as consumer:
        deadline = time.monotonic() + 30
        while len(received) < 20 and time.monotonic() < deadline:
            received += [m.value or b"" for m in consumer.poll(timeout=0.5)]
        consumer.commit()
        described = GroupAdmin(
            auth_cluster.url, user="dave", password="dave-password"
        ).describe_group("args-workers")
        assert len(described.members) == 1
    expected = [f"t{i}".encode() for i in range(10)] + [f"u{i}".encode() for i in range(10)]
    assert sorted(received) == sorted(expected)
    with (
        pytest.raises(AuthenticationError),
        conveyor.Producer(auth_cluster.url, token="cvt_nope_nope", retries=0) as bad,
    ):
        bad.send("args.events", "x").result(timeout=30)


def _whoami_basic(ac: AuthCluster, user: str, password: str) -> ConveyorError | None:
    http = SyncHTTP(authorization=authorization_header(user=user, password=password))
    try:
        http.request("GET", f"{ac.url}/v1/security/whoami")
    except ConveyorError as exc:
        return exc
    return None


def _metric(url: str, series: str) -> float:
    with urllib.request.urlopen(url + "/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_password_guessing_is_throttled_per_user_with_a_metric_and_a_log_line(
    auth_cluster: AuthCluster,
) -> None:
    """Wrong passwords for one user: after the limit's burst (10), every attempt, even with
    the right password, is answered 429 THROTTLED unchecked, with Retry-After; another
    user is unaffected. Counted in /metrics and logged once."""
    with auth_cluster.security() as security:
        security.add_user("guessed", "the-right-password")
        security.add_user("bystander", "bystander-password")
    failures_before = _metric(auth_cluster.url, 'conveyor_auth_failures_total{scheme="basic"}')
    checked = 0
    for attempt in range(20):  # the bucket may drain a little while a loaded machine works
        error = _whoami_basic(auth_cluster, "guessed", f"guess-{attempt}")
        assert error is not None
        if error.code is ErrorCode.THROTTLED:
            break
        assert isinstance(error, AuthenticationError), error
        checked += 1
    assert checked >= 10  # the burst the limit allows (10 per user per window)
    throttled = _whoami_basic(auth_cluster, "guessed", "the-right-password")
    assert throttled is not None and throttled.code is ErrorCode.THROTTLED, throttled
    assert throttled.retriable
    assert throttled.details["scope"] == "principal"
    assert 0 < throttled.details["retry_after_ms"] <= GUESS_WINDOW_MS // 10
    assert _whoami_basic(auth_cluster, "bystander", "bystander-password") is None
    url = auth_cluster.url
    assert _metric(url, 'conveyor_auth_failures_total{scheme="basic"}') >= failures_before + 10
    assert _metric(url, 'conveyor_auth_throttled_total{scope="principal"}') >= 1
    logs = auth_cluster.cluster.logs()
    assert "possible password guessing" in logs and "principal guessed" in logs
    assert "the-right-password" not in logs and "guess-3" not in logs


def test_a_broker_cut_off_from_the_coordinator_stops_serving_within_the_staleness_bound(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Revocation is bounded even when a broker cannot learn of it: once its copy of the
    security state has not been confirmed for --security-max-staleness-ms (here 3 s, at
    least 3 heartbeats), client requests get 503 NOT_READY; confirmed again, it serves."""
    staleness_ms = 3000
    cluster = Cluster(
        tmp_path_factory.mktemp("stale"),
        broker_count=1,
        coordinator_args=["--auth"],
        broker_args=["--auth", "--security-max-staleness-ms", str(staleness_ms)],
        env={"CONVEYOR_CLUSTER_SECRET": SECRET},
    )
    cluster.start()
    try:
        with SecurityAdmin(cluster.url, token=SECRET) as security:
            security.add_acl("svc", "describe", "cluster", "cluster")
            token = security.create_token("svc").token
        http = SyncHTTP(authorization=authorization_header(token))
        broker = f"{cluster.brokers[1].url}/v1/partitions"

        def serves() -> bool:
            try:
                http.request("GET", broker)
            except ConveyorError:
                return False
            return True

        wait_for(serves, 10, "the broker to serve the token")
        assert cluster.coordinator is not None and cluster.coordinator.process is not None
        coordinator_pid = cluster.coordinator.process.pid
        os.kill(coordinator_pid, signal.SIGSTOP)  # unreachable: no refresh can confirm
        paused = time.monotonic()
        try:
            wait_for(lambda: not serves(), 15, "the broker to stop trusting its copy")
            refused_after_s = time.monotonic() - paused
            with pytest.raises(RetriableError) as refused:
                http.request("GET", broker)
            assert refused.value.code is ErrorCode.NOT_READY
            assert "could not confirm" in refused.value.message
        finally:
            os.kill(coordinator_pid, signal.SIGCONT)
        # the bound plus one heartbeat round (the last confirmation may be that old)
        assert refused_after_s <= staleness_ms / 1000 + 1.0 + 1.5, refused_after_s
        wait_for(serves, 15, "the broker to serve again once confirmed")
    finally:
        cluster.stop()
