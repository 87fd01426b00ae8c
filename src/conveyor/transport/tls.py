"""TLS settings in one object, used by every server and client.

A later issue switches HTTPS on everywhere; every listener and every HTTP client is built
from a :class:`TLSConfig`, so that switch is one setting. With no certificate configured
everything speaks plain HTTP.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TLSConfig:
    certfile: str | None = None  # this process's certificate (servers; clients for mTLS)
    keyfile: str | None = None
    cafile: str | None = None  # CA to verify peers against; None: the system store
    verify: bool = True
    require_client_cert: bool = False  # mutual TLS on a listener

    @property
    def enabled(self) -> bool:
        return self.certfile is not None

    @property
    def scheme(self) -> str:
        return "https" if self.enabled else "http"

    @classmethod
    def from_env(cls) -> TLSConfig:
        """``CONVEYOR_TLS_CERT``, ``CONVEYOR_TLS_KEY``, ``CONVEYOR_CA``."""
        return cls(
            certfile=os.environ.get("CONVEYOR_TLS_CERT") or None,
            keyfile=os.environ.get("CONVEYOR_TLS_KEY") or None,
            cafile=os.environ.get("CONVEYOR_CA") or None,
        )

    def server_context(self) -> ssl.SSLContext | None:
        if not self.enabled:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        assert self.certfile is not None
        context.load_cert_chain(self.certfile, self.keyfile)
        if self.require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certfile and self.require_client_cert:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context
