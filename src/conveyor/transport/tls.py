"""TLS settings in one object, used by every server and client.

Every listener and every HTTP client is built from a :class:`TLSConfig`, so HTTPS is one
setting. With no certificate configured a listener speaks plain HTTP (and warns when that
is not on loopback, see ``runner.warn_if_exposed``).

Defaults are modern (Mozilla's "intermediate" profile): TLS 1.2 or 1.3 only; for TLS 1.2
only ECDHE/DHE key exchange with AES-GCM or ChaCha20-Poly1305 (forward secrecy, AEAD); no
RC4, 3DES, CBC, export, NULL or anonymous suites. TLS 1.3's suites are all strong.

Mutual TLS, two ways: ``internal_mtls`` makes a listener ask for a client certificate
(verified against ``cafile`` when given) and lets only requests that came with one reach
internal routes (``transport/secure.py``), so clients keep connecting without one;
``require_client_cert`` refuses any connection without one. A process presents
``client_certfile`` when it connects to others (brokers to the coordinator and each other).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Final

TLS_MIN_VERSION: Final = ssl.TLSVersion.TLSv1_2
# TLS 1.2 suites (OpenSSL names); TLS 1.3 suites are configured separately and all strong.
TLS12_CIPHERS: Final = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    certfile: str | None = None  # this listener's certificate (PEM, may hold the chain)
    keyfile: str | None = None  # its private key; None: inside certfile
    cafile: str | None = None  # CA to verify peers against; None: the system store
    verify: bool = True  # clients: verify the server (never turn off outside tests)
    require_client_cert: bool = False  # listener: refuse connections without a client cert
    internal_mtls: bool = False  # listener: internal routes need a verified client cert
    client_certfile: str | None = None  # presented when this process connects to others
    client_keyfile: str | None = None

    @property
    def enabled(self) -> bool:
        return self.certfile is not None

    @property
    def scheme(self) -> str:
        return "https" if self.enabled else "http"

    @classmethod
    def from_env(cls) -> TLSConfig:
        """A client's TLS from its settings (``conveyor.settings.client_settings``): the
        CA (``CONVEYOR_CA``) and the certificate it presents (``CONVEYOR_TLS_CLIENT_CERT``,
        ``CONVEYOR_TLS_CLIENT_KEY``), from the CLI's flags, the environment or the file."""
        from conveyor.settings import catalog, client_settings

        settings = client_settings()

        def text(value: object) -> str | None:
            return None if value is None else str(value)

        return cls(
            cafile=text(settings[catalog.CA]),
            client_certfile=text(settings[catalog.TLS_CLIENT_CERT]),
            client_keyfile=text(settings[catalog.TLS_CLIENT_KEY]),
        )

    def server_context(self) -> ssl.SSLContext | None:
        """The listener's context, or None for plain HTTP. Raises ``OSError`` or
        ``ssl.SSLError`` when a file is missing or the key does not match."""
        if not self.enabled:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _harden(context)
        assert self.certfile is not None
        context.load_cert_chain(self.certfile, self.keyfile)
        if self.require_client_cert or self.internal_mtls:
            if self.cafile:
                context.load_verify_locations(cafile=self.cafile)
            else:
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            context.verify_mode = (
                ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
            )
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        _harden(context)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_certfile:
            context.load_cert_chain(self.client_certfile, self.client_keyfile)
        return context


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = TLS_MIN_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE


def reload_server_context(context: ssl.SSLContext, tls: TLSConfig) -> None:
    """Load ``tls``'s certificate, key and CA again into the live ``context``: handshakes
    from now on use them, open connections keep theirs. The files are first loaded into a
    scratch context, so a missing file or a mismatched key raises here and leaves the
    listener serving the previous certificate."""
    scratch = tls.server_context()
    if scratch is None:
        raise ValueError("no certificate configured: nothing to reload")
    assert tls.certfile is not None
    context.load_cert_chain(tls.certfile, tls.keyfile)
    if tls.cafile and context.verify_mode != ssl.CERT_NONE:
        context.load_verify_locations(cafile=tls.cafile)
