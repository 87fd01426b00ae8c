"""Certificates from ``conveyor certs init`` and the TLS contexts built from TLSConfig:
real handshakes over socket pairs in memory (no network), no mocks."""

from __future__ import annotations

import datetime
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from conveyor.transport.certs import CertPaths, init_certs, issue_server_cert
from conveyor.transport.tls import TLSConfig, reload_server_context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return init_certs(tmp_path_factory.mktemp("certs"), ["broker-1.example", "10.0.0.7"])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def server_tls(certs: CertPaths, **kwargs: object) -> TLSConfig:
    return TLSConfig(
        certfile=str(certs.server_cert),
        keyfile=str(certs.server_key),
        cafile=str(certs.ca),
        **kwargs,  # type: ignore[arg-type]
    )


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str = "127.0.0.1"
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake between two in-memory endpoints; raises ssl.SSLError."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, side in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return s, c
    raise AssertionError("handshake did not finish")


def test_init_creates_ca_server_and_client_with_private_keys_0600(certs: CertPaths) -> None:
    assert certs.complete()
    for key in (certs.ca_key, certs.server_key, certs.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ca, server, client = load(certs.ca), load(certs.server_cert), load(certs.client_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == ca.subject and client.issuer == ca.subject
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "broker-1.example"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "::1",
        "10.0.0.7",
    }
    server_usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(server_usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client_usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(client_usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    now = datetime.datetime.now(datetime.UTC)
    assert server.not_valid_before_utc <= now < server.not_valid_after_utc


def test_client_verifying_against_the_ca_connects_by_ip_and_name(certs: CertPaths) -> None:
    server = server_tls(certs).server_context()
    assert server is not None
    client = TLSConfig(cafile=str(certs.ca)).client_context()
    for name in ("127.0.0.1", "localhost", "broker-1.example"):
        _, c = handshake(server, client, name)
        assert c.version() in ("TLSv1.2", "TLSv1.3")


def test_client_without_the_ca_or_for_another_name_is_refused(
    certs: CertPaths, tmp_path: Path
) -> None:
    server = server_tls(certs).server_context()
    assert server is not None
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, TLSConfig().client_context())  # system store: unknown CA
    other = init_certs(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, TLSConfig(cafile=str(other.ca)).client_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, TLSConfig(cafile=str(certs.ca)).client_context(), "evil.example")


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_before_1_2_is_refused_by_the_server(certs: CertPaths, version: str) -> None:
    server = server_tls(certs).server_context()
    assert server is not None
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer what old peers offer
    old.minimum_version = ssl.TLSVersion[version]
    old.maximum_version = ssl.TLSVersion[version]
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = old.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        c.do_handshake()  # the client did offer the old version: its hello is written
    hello = c_out.read()
    assert hello
    s_in.write(hello)
    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL"):
        s.do_handshake()  # the server refuses it
    c_in.write(s_out.read())  # and tells the client with an alert
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        c.do_handshake()


def test_only_strong_tls12_suites_are_enabled(certs: CertPaths) -> None:
    for context in (server_tls(certs).server_context(), TLSConfig().client_context()):
        assert context is not None
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2
        for cipher in context.get_ciphers():
            name = cipher["name"]
            if cipher["protocol"] == "TLSv1.3":
                continue
            assert name.startswith(("ECDHE-", "DHE-")), name  # forward secrecy
            assert "GCM" in name or "CHACHA20" in name, name  # AEAD only
            for weak in ("RC4", "DES", "MD5", "NULL", "EXPORT", "CBC", "SHA1"):
                assert weak not in name, name


def test_internal_mtls_asks_for_a_client_cert_but_does_not_require_one(
    certs: CertPaths,
) -> None:
    server = server_tls(certs, internal_mtls=True).server_context()
    assert server is not None and server.verify_mode is ssl.CERT_OPTIONAL
    plain_client = TLSConfig(cafile=str(certs.ca)).client_context()
    s, _ = handshake(server, plain_client)
    assert not s.getpeercert()
    with_cert = TLSConfig(
        cafile=str(certs.ca),
        client_certfile=str(certs.client_cert),
        client_keyfile=str(certs.client_key),
    ).client_context()
    s, _ = handshake(server, with_cert)
    assert s.getpeercert()


def test_require_client_cert_refuses_a_client_without_one(certs: CertPaths) -> None:
    server = server_tls(certs, require_client_cert=True).server_context()
    assert server is not None and server.verify_mode is ssl.CERT_REQUIRED
    with pytest.raises(ssl.SSLError):
        s, c = handshake(server, TLSConfig(cafile=str(certs.ca)).client_context())
        # TLS 1.3 reports the missing certificate on the first read after the handshake.
        c.write(b"x")
        s.read()


def test_reload_serves_the_new_certificate_and_keeps_the_old_on_bad_files(
    tmp_path: Path,
) -> None:
    paths = init_certs(tmp_path / "c")
    tls = server_tls(paths)
    live = tls.server_context()
    assert live is not None
    client = TLSConfig(cafile=str(paths.ca)).client_context()

    def served_serial() -> int:
        _, c = handshake(live, client)
        der = c.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    old_serial = served_serial()
    new_serial = issue_server_cert(paths).serial_number
    assert new_serial != old_serial
    assert served_serial() == old_serial  # nothing changes until the reload
    reload_server_context(live, tls)
    assert served_serial() == new_serial

    paths.server_key.write_text("not a key")
    with pytest.raises(ssl.SSLError):
        reload_server_context(live, tls)
    assert served_serial() == new_serial


def test_an_expired_server_certificate_is_rejected(tmp_path: Path) -> None:
    from conveyor.transport.certs import cert_pem, key_pem, load_ca, make_leaf, new_key

    paths = init_certs(tmp_path / "c")
    ca_cert, ca_key = load_ca(paths)
    key = new_key()
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = make_leaf(ca_cert, ca_key, key, "old", long_ago, hosts=["127.0.0.1"], days=1)
    (tmp_path / "old.pem").write_bytes(cert_pem(expired))
    (tmp_path / "old-key.pem").write_bytes(key_pem(key))
    server = TLSConfig(
        certfile=str(tmp_path / "old.pem"), keyfile=str(tmp_path / "old-key.pem")
    ).server_context()
    assert server is not None
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        handshake(server, TLSConfig(cafile=str(paths.ca)).client_context())


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_renew_as_root_keeps_the_owner_group_and_mode_of_each_file(tmp_path: Path) -> None:
    """``sudo conveyor certs renew``: the service's user must still read its new key."""
    paths = init_certs(tmp_path / "certs")
    service_uid, service_gid = 10001, 10001
    for path in (paths.server_key, paths.server_cert):
        os.chown(path, service_uid, service_gid)
    os.chmod(paths.server_key, 0o640)  # readable by the service's group
    issue_server_cert(paths)
    key, cert = paths.server_key.stat(), paths.server_cert.stat()
    assert (key.st_uid, key.st_gid, stat.S_IMODE(key.st_mode)) == (10001, 10001, 0o640)
    assert (cert.st_uid, cert.st_gid) == (10001, 10001)
    assert stat.S_IMODE(cert.st_mode) == 0o644


def test_renew_keeps_a_tightened_mode_and_new_keys_start_private(tmp_path: Path) -> None:
    paths = init_certs(tmp_path / "certs")
    assert stat.S_IMODE(paths.server_key.stat().st_mode) == 0o600
    os.chmod(paths.server_cert, 0o640)
    issue_server_cert(paths)
    assert stat.S_IMODE(paths.server_cert.stat().st_mode) == 0o640
    assert stat.S_IMODE(paths.server_key.stat().st_mode) == 0o600
