"""The Kafka listener with authentication on: SASL/PLAIN (users and API tokens) and
SASL/SCRAM-SHA-256/512 through kcat and confluent-kafka, the same ACLs as HTTP, nothing but
ApiVersions and SASL before authentication; and TLS from the same settings as HTTPS."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import conveyor
from conveyor.client.security import SecurityAdmin
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.transport.kafka_client import KafkaClientOptions, KafkaConnection, SaslConfig
from conveyor.transport.tls import TLSConfig
from tests.integration.cluster import Cluster, wait_for
from tests.kafka.conftest import kcat_path
from tests.kafka.wire import KafkaWire, metadata_topics

SECRET = "cluster-secret-for-kafka-tests-0123456789"


@dataclass
class SecureCluster:
    cluster: Cluster
    token: str  # alice's API token

    def kcat(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        argv = [kcat_path(), "-b", self.cluster.bootstrap, *args]
        if self.cluster.ca is not None:
            argv += ["-X", f"ssl.ca.location={self.cluster.ca}"]
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    """Auth on; with TLS too (certificates from ``conveyor certs init``)."""
    from conveyor.transport.certs import init_certs

    root = tmp_path_factory.mktemp("kafka-secure")
    init_certs(root / "certs")
    cluster = Cluster(root, broker_count=1, coordinator_args=["--auth"], broker_args=["--auth"])
    cluster.tls_dir = root / "certs"
    cluster.internal_mtls = True  # listeners ask for (not require) a client certificate
    os.environ["CONVEYOR_CLUSTER_SECRET"] = SECRET
    try:
        cluster.start()
    finally:
        del os.environ["CONVEYOR_CLUSTER_SECRET"]
    try:
        tls = TLSConfig(cafile=str(cluster.ca))
        with SecurityAdmin(cluster.url, token=SECRET, tls=tls) as security:
            security.add_user("alice", "alice-password")
            security.add_acl("user:alice", "produce", "topic", "sasl-", pattern="prefix")
            security.add_acl("user:alice", "consume", "topic", "sasl-", pattern="prefix")
            security.add_acl("user:alice", "create_topic", "topic", "sasl-", pattern="prefix")
            security.add_acl("user:alice", "group", "group", "sasl-", pattern="prefix")
            # the CN of `conveyor certs init`'s client certificate, as a principal
            security.add_acl("user:conveyor-client", "produce", "topic", "sasl-orders")
            security.add_acl("user:conveyor-client", "consume", "topic", "sasl-orders")
            token = security.create_token("user:alice").token
        with conveyor.Admin(cluster.url, token=SECRET, tls=tls) as admin:
            admin.create_topic("sasl-orders", partitions=2, replication_factor=1)
            admin.create_topic("private", partitions=1, replication_factor=1)
        broker_log = cluster.brokers[1].log_path
        wait_for(  # the broker learnt alice and her rules (its heartbeat brings them)
            lambda: "1 users, 1 tokens, 6 acl rules" in broker_log.read_text(),
            15,
            "the broker to learn the security state",
        )
        yield SecureCluster(cluster, token)
    finally:
        cluster.stop()


def _sasl(mechanism: str, user: str, password: str) -> list[str]:
    return [
        "-X",
        "security.protocol=sasl_ssl",
        "-X",
        f"sasl.mechanisms={mechanism}",
        "-X",
        f"sasl.username={user}",
        "-X",
        f"sasl.password={password}",
    ]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kcat_with_sasl_produces_and_consumes(
    secure_cluster: SecureCluster, mechanism: str
) -> None:
    sasl = _sasl(mechanism, "alice", "alice-password")
    value = f"hello-{mechanism}"
    secure_cluster.kcat(*sasl, "-t", "sasl-orders", "-P", "-K:", stdin=f"k:{value}\n")
    out = secure_cluster.kcat(
        *sasl, "-t", "sasl-orders", "-C", "-e", "-o", "beginning", "-f", "%k %s\n"
    )
    assert f"k {value}" in out


def test_kcat_with_an_api_token_as_plain_password(secure_cluster: SecureCluster) -> None:
    sasl = _sasl("PLAIN", "alice", secure_cluster.token)
    secure_cluster.kcat(*sasl, "-t", "sasl-orders", "-P", stdin="by-token\n")
    out = secure_cluster.kcat(*sasl, "-t", "sasl-orders", "-C", "-e", "-o", "beginning")
    assert "by-token" in out


def test_the_cluster_secret_as_plain_password_is_the_clusters_identity(
    secure_cluster: SecureCluster,
) -> None:
    """As over HTTP (a bearer token): an Admin given the secret reads over Kafka too.
    "private" has no rule for anyone: only the cluster's identity reads it."""
    sasl = _sasl("PLAIN", "token", SECRET)
    secure_cluster.kcat(*sasl, "-t", "private", "-P", stdin="by-secret\n")
    out = secure_cluster.kcat(*sasl, "-t", "private", "-C", "-e", "-o", "beginning")
    assert "by-secret" in out
    refused = secure_cluster.kcat(
        *_sasl("PLAIN", "token", SECRET + "x"), "-L", "-m", "5", check=False
    )
    assert "uthentication failed" in refused


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_wrong_password_is_refused(secure_cluster: SecureCluster, mechanism: str) -> None:
    out = secure_cluster.kcat(
        *_sasl(mechanism, "alice", "wrong-password"), "-L", "-m", "5", check=False
    )
    assert "Authentication failed" in out or "authentication failed" in out


def test_acls_apply_to_the_authenticated_principal(secure_cluster: SecureCluster) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    config: dict[str, Any] = {
        "bootstrap.servers": secure_cluster.cluster.bootstrap,
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": str(secure_cluster.cluster.ca),
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "alice-password",
        "message.timeout.ms": 10_000,
    }
    producer = confluent_kafka.Producer(config)
    results: list[Any] = []
    producer.produce("private", b"not allowed", on_delivery=lambda e, m: results.append(e))
    producer.produce("sasl-orders", b"allowed", on_delivery=lambda e, m: results.append(e))
    producer.flush(30)
    codes = sorted(str(e.code()) if e is not None else "ok" for e in results)
    assert codes == [str(confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED), "ok"]


def test_consumer_groups_need_the_group_permission(secure_cluster: SecureCluster) -> None:
    """alice may use groups named sasl-*: she joins one, consumes and commits over SASL
    and TLS; a group outside her rules is GROUP_AUTHORIZATION_FAILED."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    base: dict[str, Any] = {
        "bootstrap.servers": secure_cluster.cluster.bootstrap,
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": str(secure_cluster.cluster.ca),
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": "alice-password",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    secure_cluster.kcat(*_sasl("PLAIN", "alice", "alice-password"), "-t", "sasl-orders", "-P",
                        stdin="for-the-group\n")  # fmt: skip
    allowed = confluent_kafka.Consumer({**base, "group.id": "sasl-readers"})
    try:
        allowed.subscribe(["sasl-orders"])
        got = None
        for _ in range(60):
            got = allowed.poll(0.5)
            if got is not None and got.error() is None:
                break
        assert got is not None and got.error() is None
        committed = allowed.commit(message=got, asynchronous=False)
        assert committed is not None and all(tp.error is None for tp in committed)
    finally:
        allowed.close()
    refused = confluent_kafka.Consumer({**base, "group.id": "other-readers"})
    try:
        refused.subscribe(["sasl-orders"])
        error = None
        for _ in range(40):
            message = refused.poll(0.5)
            if message is not None and message.error() is not None:
                error = message.error()
                break
        assert error is not None
        assert error.code() == confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        refused.close()


def test_only_api_versions_and_sasl_before_authentication(
    secure_cluster: SecureCluster,
) -> None:
    broker = secure_cluster.cluster.brokers[1]
    assert broker.kafka_port is not None
    context = broker.ssl_context()
    with KafkaWire("127.0.0.1", broker.kafka_port, context) as wire:
        assert wire.call(ApiKey.API_VERSIONS, 3).error_code == 0
        handshake = wire.call(ApiKey.SASL_HANDSHAKE, 1, mechanism="PLAIN")
        assert handshake.error_code == 0 and "SCRAM-SHA-256" in handshake.mechanisms
    with (
        KafkaWire("127.0.0.1", broker.kafka_port, context) as wire,
        pytest.raises(ConnectionError),
    ):
        wire.call(ApiKey.METADATA, 9, topics=metadata_topics(9, ["sasl-orders"]))
    with KafkaWire("127.0.0.1", broker.kafka_port, context) as wire:
        unknown = wire.call(ApiKey.SASL_HANDSHAKE, 1, mechanism="GSSAPI")
        assert unknown.error_code == 33  # UNSUPPORTED_SASL_MECHANISM
        assert wire.closed_by_broker()


def test_tls_without_sasl_gets_no_metadata(secure_cluster: SecureCluster) -> None:
    """TLS without a client certificate is no identity: Metadata closes the connection."""
    out = secure_cluster.kcat("-X", "security.protocol=ssl", "-L", "-m", "5", check=False)
    assert "sasl-orders" not in out


def test_client_certificate_is_the_principal_without_sasl(secure_cluster: SecureCluster) -> None:
    """mTLS: a client certificate the CA verified authenticates the connection as
    user:<CN>, and that principal's ACLs apply (no SASL needed)."""
    certs = secure_cluster.cluster.tls_dir
    assert certs is not None
    mtls = [
        "-X",
        "security.protocol=ssl",
        "-X",
        f"ssl.certificate.location={certs / 'client.pem'}",
        "-X",
        f"ssl.key.location={certs / 'client-key.pem'}",
    ]
    secure_cluster.kcat(*mtls, "-t", "sasl-orders", "-P", stdin="by-certificate\n")
    out = secure_cluster.kcat(*mtls, "-t", "sasl-orders", "-C", "-e", "-o", "beginning")
    assert "by-certificate" in out
    denied = secure_cluster.kcat(*mtls, "-t", "private", "-C", "-e", "-o", "beginning", check=False)
    assert "authorization failed" in denied.lower()


# ---- Conveyor's own Kafka connection (transport/kafka_client.py) ---------------------------


def _kafka_client_metadata(secure_cluster: SecureCluster, options: KafkaClientOptions) -> Any:
    async def scenario() -> Any:
        connection = await KafkaConnection.open(secure_cluster.cluster.bootstrap, options)
        try:
            request = new_request(ApiKey.METADATA, 12, topics=metadata_topics(12, ["sasl-orders"]))
            return await connection.call(ApiKey.METADATA, 12, request)
        finally:
            await connection.close()

    return asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_conveyors_kafka_connection_authenticates_over_tls(
    secure_cluster: SecureCluster, mechanism: str
) -> None:
    tls = TLSConfig(cafile=str(secure_cluster.cluster.ca))
    sasl = SaslConfig(mechanism, "alice", "alice-password")
    reply = _kafka_client_metadata(
        secure_cluster, KafkaClientOptions(tls=tls, use_tls=True, sasl=sasl)
    )
    assert reply.topics[0].error_code == 0 and len(reply.topics[0].partitions) == 2


def test_conveyors_kafka_connection_refusals(secure_cluster: SecureCluster) -> None:
    """A wrong password is UNAUTHENTICATED; a server certificate the client cannot
    verify is TLS_ERROR; an API token goes as PLAIN's password."""
    tls = TLSConfig(cafile=str(secure_cluster.cluster.ca))
    wrong = KafkaClientOptions(
        tls=tls, use_tls=True, sasl=SaslConfig("SCRAM-SHA-256", "alice", "wrong")
    )
    with pytest.raises(ConveyorError) as refused:
        _kafka_client_metadata(secure_cluster, wrong)
    assert refused.value.code is ErrorCode.UNAUTHENTICATED
    unverified = KafkaClientOptions(use_tls=True, sasl=SaslConfig("PLAIN", "alice", "x"))
    with pytest.raises(ConveyorError) as tls_refused:
        _kafka_client_metadata(secure_cluster, unverified)
    assert tls_refused.value.code is ErrorCode.TLS_ERROR
    token = KafkaClientOptions(
        tls=tls, use_tls=True, sasl=SaslConfig("PLAIN", "alice", secure_cluster.token)
    )
    assert _kafka_client_metadata(secure_cluster, token).topics[0].error_code == 0


# ---- transactional ids (Kafka's TRANSACTIONAL_ID resource) ---------------------------------


def _as_user(broker: Any, user: str, password: str) -> KafkaWire:
    """A raw Kafka connection authenticated with SASL/PLAIN."""
    assert broker.kafka_port is not None
    wire = KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context())
    assert wire.call(ApiKey.SASL_HANDSHAKE, 1, mechanism="PLAIN").error_code == 0
    proof = f"\0{user}\0{password}".encode()
    assert wire.call(ApiKey.SASL_AUTHENTICATE, 1, auth_bytes=proof).error_code == 0
    return wire


def _describe(wire: KafkaWire, transactional_id: str) -> list[Any]:
    answer = wire.call(ApiKey.DESCRIBE_TRANSACTIONS, 0, transactional_ids=[transactional_id])
    return list(answer.transaction_states)


def test_transactional_ids_need_their_acl(secure_cluster: SecureCluster) -> None:
    """Kafka's TRANSACTIONAL_ID resource: without ``produce`` on the id alice's
    transactional producer fails with TRANSACTIONAL_ID_AUTHORIZATION_FAILED; once the rule
    exists (a prefix), the same id commits and a read_committed consumer sees it.
    DescribeTransactions/ListTransactions show the id only to who may describe it, and a
    producer id without a transactional id needs ``produce`` on some topic (KIP-679)."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    cluster = secure_cluster.cluster
    tid = "sasl-etl-1"
    base: dict[str, Any] = {
        "bootstrap.servers": cluster.bootstrap,
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": str(cluster.ca),
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": "alice-password",
    }
    denied = confluent_kafka.Producer({**base, "transactional.id": tid})
    with pytest.raises(confluent_kafka.KafkaException) as raised:
        denied.init_transactions(30)
    code = raised.value.args[0].code()
    assert code == confluent_kafka.KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    tls = TLSConfig(cafile=str(cluster.ca))
    with SecurityAdmin(cluster.url, token=SECRET, tls=tls) as security:
        security.add_acl("user:alice", "produce", "transactional_id", "sasl-etl-", pattern="prefix")
        security.add_user("mallory", "mallory-password")  # no rules at all
    producer = confluent_kafka.Producer({**base, "transactional.id": tid})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce("sasl-orders", b"committed-in-a-transaction", partition=0)
    producer.commit_transaction(30)
    reader = confluent_kafka.Consumer(
        {**base, "group.id": "sasl-txn-readers", "isolation.level": "read_committed",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    try:
        reader.assign([confluent_kafka.TopicPartition("sasl-orders", 0)])
        seen: list[bytes] = []

        def read() -> bool:
            message = reader.poll(0.5)
            if message is not None and message.error() is None:
                seen.append(message.value())
            return b"committed-in-a-transaction" in seen

        wait_for(read, 30, "the committed record, read committed")
    finally:
        reader.close()
    broker = cluster.brokers[1]
    with _as_user(broker, "alice", "alice-password") as wire:
        [state] = _describe(wire, tid)
        assert (state.error_code, state.transaction_state) == (0, "CompleteCommit")
        listed = wire.call(ApiKey.LIST_TRANSACTIONS, 0, state_filters=[], producer_id_filters=[])
        assert tid in {t.transactional_id for t in listed.transaction_states}
    with _as_user(broker, "mallory", "mallory-password") as wire:
        [state] = _describe(wire, tid)
        assert state.error_code == confluent_kafka.KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        listed = wire.call(ApiKey.LIST_TRANSACTIONS, 0, state_filters=[], producer_id_filters=[])
        assert listed.error_code == 0 and listed.transaction_states == []
        found = wire.call(ApiKey.FIND_COORDINATOR, 3, key=tid, key_type=1)
        assert found.error_code == confluent_kafka.KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        fields = {"transactional_id": None, "transaction_timeout_ms": 60_000}
        idempotent = wire.call(ApiKey.INIT_PRODUCER_ID, 1, **fields)
        assert idempotent.error_code == confluent_kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED
    with _as_user(broker, "alice", "alice-password") as wire:
        fields = {"transactional_id": None, "transaction_timeout_ms": 60_000}
        assert wire.call(ApiKey.INIT_PRODUCER_ID, 1, **fields).error_code == 0


def test_conveyor_transactional_producer_needs_the_id_acl(secure_cluster: SecureCluster) -> None:
    """The HTTP transaction routes authorize as the Kafka APIs do: alice's token may use
    transactional ids under her rule (``sasl-etl-``, added by the Kafka test above or here)
    and no other (403 FORBIDDEN, nothing changed)."""
    cluster = secure_cluster.cluster
    tls = TLSConfig(cafile=str(cluster.ca))
    with SecurityAdmin(cluster.url, token=SECRET, tls=tls) as security:
        rules = security.list_acls()
        rule = ("user:alice", "produce", "transactional_id", "sasl-etl-", "prefix")
        if rule not in {
            (r.principal, r.operation, r.resource_type, r.name, r.pattern) for r in rules
        }:
            security.add_acl(*rule[:4], pattern="prefix")  # type: ignore[arg-type]
    token = secure_cluster.token
    with conveyor.Producer(cluster.url, tls=tls, token=token, transactional_id="other-etl") as p:
        with pytest.raises(conveyor.ConveyorError) as refused:
            p.init_transactions()
        assert refused.value.code.name == "FORBIDDEN"
    with (
        conveyor.Producer(cluster.url, tls=tls, token=token, transactional_id="sasl-etl-2") as p,
        p.transaction(),
    ):
        p.send("sasl-orders", b"conveyor-txn", partition=1)
        p.send_offsets_to_transaction({("sasl-orders", 1): 1}, "sasl-etl-group")
    consumer = conveyor.Consumer(cluster.url, tls=tls, token=token, group_id="sasl-etl-group")
    try:
        committed = consumer.committed([conveyor.TopicPartition("sasl-orders", 1)])
        assert committed[conveyor.TopicPartition("sasl-orders", 1)] == 1
    finally:
        consumer.close()
