"""A local certificate authority for development, tests and first deployments.

``conveyor certs init DIR`` writes, with the ``cryptography`` library::

    DIR/ca.pem          the CA certificate: what every client and service verifies against
    DIR/ca-key.pem      the CA's private key (keep it off the servers)
    DIR/server.pem      a server certificate signed by the CA, for every listener; its
    DIR/server-key.pem    SANs: 127.0.0.1, ::1, localhost and each --host given; its extended
                          key usage allows client auth too, so a broker can present it for
                          mutual TLS on internal traffic
    DIR/client.pem      a client certificate (CN "conveyor-client") for mutual TLS
    DIR/client-key.pem

Keys are ECDSA P-256 (fast handshakes, 128-bit security); certificates have a random
128-bit serial, so a reissued certificate is told apart from the old one (the reload test
checks the served serial). Private keys are written mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")
log = logging.getLogger(__name__)

CA_DAYS_DEFAULT = 3650
CERT_DAYS_DEFAULT = 825  # the most browsers and Apple platforms accept for a leaf
_KEY_MODE = 0o600


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where ``certs init`` puts each file in ``directory``."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    def all(self) -> tuple[Path, ...]:
        return (
            self.ca,
            self.ca_key,
            self.server_cert,
            self.server_key,
            self.client_cert,
            self.client_key,
        )

    def complete(self) -> bool:
        return all(path.is_file() for path in self.all())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Conveyor"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _validity(
    builder: x509.CertificateBuilder, now: datetime.datetime, days: int
) -> x509.CertificateBuilder:
    # A minute of slack for clocks that disagree a little.
    start = now - datetime.timedelta(minutes=1)
    return builder.not_valid_before(start).not_valid_after(now + datetime.timedelta(days=days))


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(
    key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    days: int = CA_DAYS_DEFAULT,
    common_name: str = "Conveyor local CA",
) -> x509.Certificate:
    name = _name(common_name)
    builder = _validity(x509.CertificateBuilder(), now, days)
    builder = (
        builder.subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def make_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    now: datetime.datetime,
    *,
    hosts: Sequence[str] = (),
    server: bool = True,
    days: int = CERT_DAYS_DEFAULT,
) -> x509.Certificate:
    """A certificate for ``key`` signed by the CA. Server certificates carry ``hosts`` as
    SANs and allow client auth as well (a broker presents its server certificate to its
    peers for mutual TLS); client certificates allow client auth only."""
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = _validity(x509.CertificateBuilder(), now, days)
    builder = (
        builder.subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        sans = [_san(host) for host in dict.fromkeys(hosts)]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write beside and rename over, so a service reloading on SIGHUP never reads half a
    file. A file being replaced keeps its owner, group and mode: ``sudo conveyor certs
    renew`` must not leave a key owned by root that the service (another user, or a group
    allowed 0640) can no longer read."""
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # no wider, even briefly
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if old is not None:
        if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp, old.st_uid, old.st_gid)
            except PermissionError:  # not root: the new file is ours, as before
                log.warning(
                    "%s was owned by uid %d gid %d; the renewed file is owned by this user",
                    path,
                    old.st_uid,
                    old.st_gid,
                )
        mode = stat.S_IMODE(old.st_mode)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_ca(paths: CertPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{paths.ca_key} is not an EC private key")
    return cert, key


def issue_server_cert(
    paths: CertPaths,
    hosts: Sequence[str] = (),
    days: int = CERT_DAYS_DEFAULT,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """(Re)issue ``server.pem``/``server-key.pem`` from the CA in ``paths`` (new key, new
    serial); running services pick it up on SIGHUP."""
    now = now or datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key = load_ca(paths)
    key = new_key()
    cert = make_leaf(
        ca_cert, ca_key, key, "conveyor-server", now, hosts=[*DEFAULT_HOSTS, *hosts], days=days
    )
    # Key first: a reload between the two renames fails to load (mismatch) and keeps the old
    # pair, rather than serving a certificate whose key is gone.
    _write(paths.server_key, key_pem(key), _KEY_MODE)
    _write(paths.server_cert, cert_pem(cert))
    return cert


def init_certs(
    directory: Path,
    hosts: Sequence[str] = (),
    *,
    days: int = CERT_DAYS_DEFAULT,
    ca_days: int = CA_DAYS_DEFAULT,
    now: datetime.datetime | None = None,
) -> CertPaths:
    """Create a CA, a server certificate and a client certificate in ``directory``."""
    now = now or datetime.datetime.now(datetime.UTC)
    paths = CertPaths(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = new_key()
    ca_cert = make_ca(ca_key, now, ca_days)
    _write(paths.ca_key, key_pem(ca_key), _KEY_MODE)
    _write(paths.ca, cert_pem(ca_cert))
    issue_server_cert(paths, hosts, days, now)
    client_key = new_key()
    client_cert = make_leaf(
        ca_cert, ca_key, client_key, "conveyor-client", now, server=False, days=days
    )
    _write(paths.client_key, key_pem(client_key), _KEY_MODE)
    _write(paths.client_cert, cert_pem(client_cert))
    return paths
