"""The loud warning for plain HTTP beyond loopback."""

from __future__ import annotations

import logging

import pytest

from conveyor.transport.runner import is_loopback, warn_if_exposed
from conveyor.transport.tls import TLSConfig


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.7", False),
        ("broker-1.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_plain_http_beyond_loopback_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        warn_if_exposed("0.0.0.0", TLSConfig())
    assert any("WITHOUT TLS" in r.getMessage() for r in caplog.records)


def test_no_warning_on_loopback_or_with_tls(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        warn_if_exposed("127.0.0.1", TLSConfig())
        warn_if_exposed("0.0.0.0", TLSConfig(certfile="server.pem"))
    assert caplog.records == []
