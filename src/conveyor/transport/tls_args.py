"""The one function that turns a service's resolved TLS settings (``tls_cert``,
``tls_key``, ``ca``, ``internal_mtls`` and, for brokers, ``tls_client_cert`` and
``tls_client_key``; defined in ``conveyor.settings.catalog``) into a :class:`TLSConfig`,
with its consistency checks."""

from __future__ import annotations

from conveyor.settings import Settings, SettingsError, catalog
from conveyor.transport.tls import TLSConfig


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def tls_from_settings(settings: Settings) -> TLSConfig:
    """The service's TLS settings; raises ``SettingsError`` for inconsistent ones."""
    cert = _text(settings[catalog.TLS_CERT])
    key = _text(settings[catalog.TLS_KEY])
    if key and not cert:
        raise SettingsError("--tls-key needs --tls-cert")
    internal_mtls = settings[catalog.INTERNAL_MTLS]
    if internal_mtls and not cert:
        raise SettingsError("--internal-mtls needs --tls-cert (mutual TLS is TLS)")
    client_cert_path = settings.get(catalog.TLS_CLIENT_CERT)  # None: a coordinator
    client_key_path = settings.get(catalog.TLS_CLIENT_KEY)
    client_cert, client_key = _text(client_cert_path), _text(client_key_path)
    if client_key and not client_cert:
        raise SettingsError("--tls-client-key needs --tls-client-cert")
    if client_cert is None and internal_mtls:
        client_cert, client_key = cert, key
    return TLSConfig(
        certfile=cert,
        keyfile=key,
        cafile=_text(settings[catalog.CA]),
        internal_mtls=internal_mtls,
        client_certfile=client_cert,
        client_keyfile=client_key,
    )
