"""Coordinator URLs and TLS failures at the client boundary: each a typed error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.transport.client import coordinator_set, tls_error


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:7700", "ftp://h:1", "http://"])
def test_a_malformed_url_is_one_typed_error(url: str) -> None:
    with pytest.raises(ConveyorError) as refused:
        coordinator_set(url)
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    assert not refused.value.retriable


@given(st.text(max_size=80))
def test_any_text_is_coordinators_or_one_typed_error(text: str) -> None:
    try:
        urls = coordinator_set(text or "x").urls
    except ConveyorError as exc:
        assert exc.code is ErrorCode.INVALID_REQUEST
        return
    assert all(url.startswith(("http://", "https://")) for url in urls)


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number", "use http://"),
        ("[SSL: CERTIFICATE_VERIFY_FAILED] unable to get local issuer", "CONVEYOR_CA"),
        ("[SSL] something else", ""),
    ],
)
def test_a_failed_handshake_is_not_retriable_and_says_why(message: str, hint: str) -> None:
    error = tls_error("GET", "https://h:1/healthz", OSError(message))
    assert error.code is ErrorCode.TLS_ERROR and not error.retriable
    assert hint in error.message
