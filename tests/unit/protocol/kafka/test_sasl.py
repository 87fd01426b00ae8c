"""SASL PLAIN parsing and the SCRAM server (RFC 5802) as pure functions: a full exchange
with an independent client computation, wrong proofs, librdkafka's nonce echo, fuzz."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.kafka.sasl import (
    SaslError,
    check_server_final,
    parse_plain,
    plain_message,
    scram_client_final,
    scram_client_first,
    scram_final,
    scram_first,
)
from conveyor.protocol.security import SCRAM_MECHANISMS, scram_credential


def _client_final(
    mechanism: str, password: str, client_first_bare: str, server_first: bytes, echo: str
) -> tuple[bytes, bytes]:
    """RFC 5802's client side: (client-final, expected server signature)."""
    digest = SCRAM_MECHANISMS[mechanism]
    attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(
        digest, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    without_proof = f"c=biws,r={echo}"
    auth_message = f"{client_first_bare},{server_first.decode()},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    expected = hmac.new(server_key, auth_message, digest).digest()
    final = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
    return final, b"v=" + base64.b64encode(expected)


@pytest.mark.parametrize("mechanism", sorted(SCRAM_MECHANISMS))
@pytest.mark.parametrize("librdkafka_echo", [False, True])
def test_scram_exchange(mechanism: str, librdkafka_echo: bool) -> None:
    credential = scram_credential("secret-pw", mechanism, b"0123456789abcdef")
    bare = "n=alice,r=client-nonce"
    state, server_first = scram_first(
        mechanism, f"n,,{bare}".encode(), {"alice": credential}.get, "server-nonce"
    )
    assert server_first.startswith(b"r=client-nonceserver-nonce,s=")
    echo = state.nonce if not librdkafka_echo else "client-nonce" + state.nonce
    final, expected = _client_final(mechanism, "secret-pw", bare, server_first, echo)
    assert scram_final(state, final) == expected


def test_scram_wrong_password_and_unknown_user_fail_alike() -> None:
    mechanism = "SCRAM-SHA-256"
    credential = scram_credential("secret-pw", mechanism, b"salt-salt-salt-1")
    with pytest.raises(SaslError, match="authentication failed"):
        scram_first(mechanism, b"n,,n=bob,r=x", {"alice": credential}.get, "s")
    state, server_first = scram_first(mechanism, b"n,,n=alice,r=x", {"alice": credential}.get, "s")
    final, _ = _client_final(mechanism, "wrong-pw", "n=alice,r=x", server_first, state.nonce)
    with pytest.raises(SaslError, match="authentication failed"):
        scram_final(state, final)


def test_plain() -> None:
    assert parse_plain(b"\0alice\0pw").user == "alice"
    assert parse_plain(b"alice\0alice\0pw").password == "pw"
    for bad in (b"", b"alice", b"\0\0pw", b"\0alice\0", b"bob\0alice\0pw", b"\xff\0a\0b"):
        with pytest.raises(SaslError):
            parse_plain(bad)


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_scram_never_fails_but_with_sasl_error(first: bytes, final: bytes) -> None:
    credential = scram_credential("pw-pw-pw", "SCRAM-SHA-512", b"salt-salt-salt-2")
    with contextlib.suppress(SaslError):
        state, _ = scram_first("SCRAM-SHA-512", first, lambda _: credential, "n")
        scram_final(state, final)


# ---- the client's side (Conveyor's own client) ---------------------------------------------


@pytest.mark.parametrize("mechanism", sorted(SCRAM_MECHANISMS))
def test_scram_client_against_the_server(mechanism: str) -> None:
    credential = scram_credential("secret-pw", mechanism, b"0123456789abcdef")
    client, first = scram_client_first(mechanism, "al,i=ce", "secret-pw", "cnonce")
    state, server_first = scram_first(mechanism, first, {"al,i=ce": credential}.get, "snonce")
    final, expected = scram_client_final(client, server_first)
    server_final = scram_final(state, final)
    check_server_final(server_final, expected)
    with pytest.raises(SaslError, match="signature"):
        check_server_final(b"v=" + base64.b64encode(b"\0" * 32), expected)
    with pytest.raises(SaslError, match="refused"):
        check_server_final(b"e=invalid-proof", expected)


def test_scram_client_refuses_what_a_server_should_not_ask() -> None:
    client, _ = scram_client_first("SCRAM-SHA-256", "alice", "pw", "cnonce")
    salt = base64.b64encode(b"salt").decode()
    for bad in (
        f"r=cnonce,s={salt},i=4096",  # the server added no nonce of its own
        f"r=other,s={salt},i=4096",  # not the client's nonce
        f"r=cnonceS,s={salt},i=1000000000",  # a billion rounds of PBKDF2 on our CPU
        "r=cnonceS,s=!!,i=4096",
        "r=cnonceS,i=4096",
    ):
        with pytest.raises(SaslError):
            scram_client_final(client, bad.encode())


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_scram_client_final_takes_any_bytes(data: bytes) -> None:
    client, _ = scram_client_first("SCRAM-SHA-512", "alice", "pw", "cnonce")
    with contextlib.suppress(SaslError):
        scram_client_final(client, data)


def test_plain_message_parses_on_the_server() -> None:
    assert parse_plain(plain_message("alice", "pw")) == parse_plain(b"\0alice\0pw")
