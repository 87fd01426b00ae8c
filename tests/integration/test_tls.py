"""HTTPS everywhere: a cluster whose every listener serves TLS from ``conveyor certs init``,
with mutual TLS on internal routes, driven by the CLI and the library as users would."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography import x509

import conveyor
from conveyor.protocol.errors import AuthorizationError, ConveyorError, ErrorCode
from conveyor.protocol.fetchframe import HelloAnswer, ReplicaHello
from conveyor.transport.certs import CertPaths, init_certs
from conveyor.transport.client import SyncHTTP
from conveyor.transport.tls import TLSConfig
from tests.integration.cluster import Cluster, wait_for
from tests.integration.replica_wire import error_code, exchange, listener_address, open_replica


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A coordinator and two brokers on HTTPS, internal routes behind mutual TLS."""
    root = tmp_path_factory.mktemp("tls")
    init_certs(root / "certs")
    cluster = Cluster(root, broker_count=2, tls_dir=root / "certs").start()
    try:
        yield cluster
    finally:
        cluster.stop()


def certs_of(cluster: Cluster) -> CertPaths:
    assert cluster.tls_dir is not None
    return CertPaths(cluster.tls_dir)


def conveyor_cli(
    url: str, *args: str, ca: Path | None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CONVEYOR_URL=url)
    env.pop("CONVEYOR_CA", None)
    if ca is not None:
        env["CONVEYOR_CA"] = str(ca)
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def test_every_listener_is_https(tls_cluster: Cluster) -> None:
    services = [tls_cluster.coordinator, *tls_cluster.brokers.values()]
    for service in services:
        assert service is not None
        assert service.url.startswith("https://")
    with conveyor.Admin(tls_cluster.url, tls=TLSConfig(cafile=str(tls_cluster.ca))) as admin:
        brokers = admin.cluster().brokers
    assert sorted(b.url.split(":")[0] for b in brokers) == ["https", "https"]


def test_cli_produces_and_consumes_over_https_with_replication(tls_cluster: Cluster) -> None:
    ca = tls_cluster.ca
    created = conveyor_cli(
        tls_cluster.url,
        "topic",
        "create",
        "secure-cli",
        "--partitions",
        "2",
        "--replication-factor",
        "2",
        ca=ca,
    )
    assert created.returncode == 0, created.stderr
    produced = conveyor_cli(
        tls_cluster.url, "produce", "secure-cli", "--key", "k", "one", "two", "--json", ca=ca
    )
    assert produced.returncode == 0, produced.stderr
    # --ca on the command line works as well as CONVEYOR_CA.
    consumed = conveyor_cli(
        tls_cluster.url,
        "consume",
        "secure-cli",
        "--from-beginning",
        "--max",
        "2",
        "--json",
        "--ca",
        str(ca),
        ca=None,
    )
    assert consumed.returncode == 0, consumed.stderr
    values = [json.loads(line)["value"] for line in consumed.stdout.splitlines()]
    assert values == ["one", "two"]

    # The follower copied them over the mutually authenticated internal route.
    tls = TLSConfig(cafile=str(ca))

    def replicated() -> bool:
        with conveyor.Admin(tls_cluster.url, tls=tls) as admin:
            partitions = admin.describe_topic("secure-cli").partitions
        return (
            all(sorted(p.isr) == [1, 2] for p in partitions)
            and sum(p.high_watermark or 0 for p in partitions) == 2
        )

    wait_for(replicated, 20, "both replicas in sync over mTLS")


def test_library_produces_and_consumes_over_https(tls_cluster: Cluster) -> None:
    tls = TLSConfig(cafile=str(tls_cluster.ca))
    with conveyor.Admin(tls_cluster.url, tls=tls) as admin:
        admin.create_topic("secure-lib", partitions=2, replication_factor=2)
    with conveyor.Producer(tls_cluster.url, tls=tls) as producer:
        futures = [producer.send("secure-lib", f"v{i}", key=f"k{i % 3}") for i in range(50)]
        producer.flush()
    assert all(f.result(10).offset >= 0 for f in futures)
    received: list[bytes] = []
    with conveyor.Consumer(tls_cluster.url, "secure-lib", group_id="g", tls=tls) as consumer:
        deadline = time.monotonic() + 20
        while len(received) < 50 and time.monotonic() < deadline:
            received += [m.value or b"" for m in consumer.poll(timeout=0.5)]
    assert sorted(received) == sorted(f"v{i}".encode() for i in range(50))


def test_a_client_without_the_ca_is_refused(tls_cluster: Cluster, tmp_path: Path) -> None:
    with (
        pytest.raises(ConveyorError, match="CERTIFICATE_VERIFY_FAILED") as refused,
        conveyor.Admin(tls_cluster.url, tls=TLSConfig()) as admin,
    ):
        admin.list_topics()
    # not retried: the certificate will fail verification the same way next time
    assert refused.value.code is ErrorCode.TLS_ERROR
    assert "CONVEYOR_CA" in str(refused.value)  # and the message names the fix
    other = init_certs(tmp_path / "other")
    with (
        pytest.raises(ConveyorError, match="CERTIFICATE_VERIFY_FAILED"),
        conveyor.Admin(tls_cluster.url, tls=TLSConfig(cafile=str(other.ca))) as admin,
    ):
        admin.list_topics()
    cli = conveyor_cli(tls_cluster.url, "topic", "list", ca=None)
    assert cli.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in cli.stderr


def test_plain_http_to_an_https_listener_fails_cleanly(tls_cluster: Cluster) -> None:
    plain = tls_cluster.url.replace("https://", "http://") + "/healthz"
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        urllib.request.urlopen(plain, timeout=5)
    assert tls_cluster.coordinator is not None and tls_cluster.coordinator.alive()
    context = ssl.create_default_context(cafile=str(tls_cluster.ca))
    with urllib.request.urlopen(tls_cluster.url + "/healthz", context=context) as ok:
        assert ok.status == 200


def internal_urls(cluster: Cluster) -> list[tuple[str, str]]:
    """(method, URL) of every internal route of the coordinator and a broker, from their
    OpenAPI documents."""
    context = ssl.create_default_context(cafile=str(cluster.ca))
    urls: list[tuple[str, str]] = []
    services = [cluster.coordinator, cluster.brokers[1]]
    for service in services:
        assert service is not None
        with urllib.request.urlopen(service.url + "/openapi.json", context=context) as r:
            document = json.load(r)
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                if "internal" in operation.get("tags", []):
                    # every path parameter gets a well-formed value: numbers for the
                    # partition, a name for the rest (topic, group, ...)
                    concrete = re.sub(
                        r"\{(\w+)\}", lambda m: "0" if m[1] == "partition" else "t", path
                    )
                    urls.append((method.upper(), service.url + concrete))
    return urls


def test_internal_routes_need_the_cluster_client_certificate(tls_cluster: Cluster) -> None:
    certs = certs_of(tls_cluster)
    urls = internal_urls(tls_cluster)
    assert len(urls) >= 4  # heartbeat, ISR changes, security state, replica listener
    without = SyncHTTP(TLSConfig(cafile=str(certs.ca)))
    with_cert = SyncHTTP(
        TLSConfig(
            cafile=str(certs.ca),
            client_certfile=str(certs.client_cert),
            client_keyfile=str(certs.client_key),
        )
    )
    for method, url in urls:
        body = b"{}" if method == "POST" else None
        with pytest.raises(AuthorizationError) as refused:
            without.request(method, url, body=body)
        assert refused.value.code is ErrorCode.FORBIDDEN, url
        # With the cluster's certificate the request gets through to validation (400).
        try:
            with_cert.request(method, url, body=body)
        except ConveyorError as exc:
            assert exc.code is not ErrorCode.FORBIDDEN, url


def test_the_replica_listener_needs_the_cluster_client_certificate(tls_cluster: Cluster) -> None:
    """Followers fetch over TLS on the replica listener; as on the internal routes, only
    a connection with the cluster's client certificate gets an answer."""
    certs = certs_of(tls_cluster)
    member = TLSConfig(
        cafile=str(certs.ca),
        client_certfile=str(certs.client_cert),
        client_keyfile=str(certs.client_key),
    )
    address = listener_address(SyncHTTP(member), tls_cluster.brokers[1].url)
    anonymous = TLSConfig(cafile=str(certs.ca)).client_context()
    with open_replica(address, anonymous) as sock:
        ok, header = exchange(sock, ReplicaHello(broker_id=9))
        assert not ok and error_code(header) == "FORBIDDEN"
    with open_replica(address, member.client_context()) as sock:
        ok, header = exchange(sock, ReplicaHello(broker_id=9))
        assert ok and msgspec.json.decode(header, type=HelloAnswer).broker_id == 1


def test_a_broker_with_a_certificate_from_another_ca_cannot_join(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    other = init_certs(tmp_path / "other")
    with pytest.raises(ConveyorError) as refused:
        SyncHTTP(
            TLSConfig(
                cafile=str(certs_of(tls_cluster).ca),
                client_certfile=str(other.server_cert),
                client_keyfile=str(other.server_key),
            )
        ).request("POST", tls_cluster.url + "/v1/brokers/heartbeat", body=b"{}")
    # Refused in the handshake (the server closes it: TLS 1.3 reports it on the first
    # read); from the client's side that is a server going away too, so a network error.
    assert refused.value.code is ErrorCode.NETWORK_ERROR


def served_serial(connection: http.client.HTTPSConnection) -> int:
    assert connection.sock is not None
    der = connection.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_sighup_serves_a_renewed_certificate_without_dropping_connections(
    tls_cluster: Cluster,
) -> None:
    certs = certs_of(tls_cluster)
    broker = tls_cluster.brokers[1]
    assert broker.process is not None
    context = ssl.create_default_context(cafile=str(certs.ca))

    def connect() -> http.client.HTTPSConnection:
        connection = http.client.HTTPSConnection("127.0.0.1", broker.port, context=context)
        connection.connect()
        return connection

    def get(connection: http.client.HTTPSConnection, path: str = "/healthz") -> int:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status

    kept = connect()
    assert get(kept) == 200
    old_serial = served_serial(kept)

    renewed = conveyor_cli(tls_cluster.url, "certs", "renew", str(certs.directory), ca=None)
    assert renewed.returncode == 0, renewed.stderr
    new_serial = x509.load_pem_x509_certificate(certs.server_cert.read_bytes()).serial_number
    assert new_serial != old_serial
    broker.process.send_signal(signal.SIGHUP)

    def new_handshakes_get_the_new_certificate() -> bool:
        fresh = connect()
        try:
            return served_serial(fresh) == new_serial
        finally:
            fresh.close()

    wait_for(new_handshakes_get_the_new_certificate, 10, "the renewed certificate served")
    # The connection opened before the reload keeps working, on its original certificate.
    for _ in range(3):
        assert get(kept) == 200
    assert served_serial(kept) == old_serial
    kept.close()
    assert broker.alive()
    assert "TLS certificate reloaded" in broker.log()
