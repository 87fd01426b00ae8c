"""SASL mechanisms of the Kafka listener, as pure functions: PLAIN's message (RFC 4616) and
the server side of SCRAM-SHA-256/512 (RFC 5802, RFC 7677), without channel binding, as
Kafka's. The caller supplies the credentials lookup and the server nonce; nothing here
touches a socket, a clock or a random source.

SCRAM exchange::

    client-first  n,,n=<user>,r=<client nonce>
    server-first  r=<client nonce><server nonce>,s=<salt>,i=<iterations>
    client-final  c=biws,r=<nonce>,p=<base64 ClientProof>
    server-final  v=<base64 ServerSignature>

The server checks H(ClientProof XOR HMAC(StoredKey, AuthMessage)) == StoredKey.

The client side (Conveyor's own client, ``transport/kafka_client.py``) is here too:
:func:`plain_message`, :func:`scram_client_first`, :func:`scram_client_final` and
:func:`check_server_final`, pure as the server's (the caller draws the nonce).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from conveyor.protocol.security import SCRAM_MECHANISMS, ScramCredential

PLAIN: Final = "PLAIN"
MECHANISMS: Final = (PLAIN, *SCRAM_MECHANISMS)
MESSAGE_BYTES_MAX: Final = 4096  # a SASL message longer than this is not a client's


class SaslError(ValueError):
    """The exchange failed: malformed message or wrong credentials (one message for both
    to a client, so that it learns nothing about which users exist)."""


@dataclass(frozen=True, slots=True)
class PlainCredentials:
    authzid: str
    user: str
    password: str


def parse_plain(message: bytes) -> PlainCredentials:
    """``[authzid] NUL user NUL password`` (RFC 4616)."""
    if len(message) > MESSAGE_BYTES_MAX:
        raise SaslError("PLAIN message too long")
    try:
        authzid, user, password = message.decode().split("\0")
    except (UnicodeDecodeError, ValueError):
        raise SaslError("malformed PLAIN message") from None
    if not user or not password or (authzid and authzid != user):
        raise SaslError("malformed PLAIN message")
    return PlainCredentials(authzid, user, password)


@dataclass(frozen=True, slots=True)
class ScramFirst:
    """The server's state between the two SCRAM rounds."""

    mechanism: str
    user: str
    credential: ScramCredential
    nonce: str
    client_first_bare: str
    server_first: str


def _attributes(message: str) -> dict[str, str]:
    pairs = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise SaslError("malformed SCRAM message")
        pairs[key] = value
    return pairs


def _sasl_name(value: str) -> str:
    if "=" in value.replace("=2C", "").replace("=3D", ""):
        raise SaslError("malformed SCRAM user name")
    return value.replace("=2C", ",").replace("=3D", "=")


def scram_first(
    mechanism: str,
    message: bytes,
    lookup: Callable[[str], ScramCredential | None],
    server_nonce: str,
) -> tuple[ScramFirst, bytes]:
    """Read client-first; the state and server-first. Unknown users fail here."""
    if mechanism not in SCRAM_MECHANISMS or len(message) > MESSAGE_BYTES_MAX:
        raise SaslError("unsupported SCRAM mechanism or message too long")
    try:
        text = message.decode()
    except UnicodeDecodeError:
        raise SaslError("malformed SCRAM message") from None
    gs2, sep, bare = text.partition(",,")  # gs2 header: "n" (no channel binding), no authzid
    if not sep or gs2 not in ("n", "y"):
        raise SaslError("unsupported SCRAM channel binding or authzid")
    attributes = _attributes(bare)
    user = _sasl_name(attributes.get("n", ""))
    client_nonce = attributes.get("r", "")
    if not user or not client_nonce or "m" in attributes:
        raise SaslError("malformed SCRAM client-first message")
    credential = lookup(user)
    if credential is None:
        raise SaslError("authentication failed")
    nonce = client_nonce + server_nonce
    server_first = f"r={nonce},s={credential.salt_b64},i={credential.iterations}"
    state = ScramFirst(mechanism, user, credential, nonce, bare, server_first)
    return state, server_first.encode()


def scram_final(state: ScramFirst, message: bytes) -> bytes:
    """Check client-final's proof; server-final (with the server's signature)."""
    if len(message) > MESSAGE_BYTES_MAX:
        raise SaslError("SCRAM message too long")
    try:
        text = message.decode()
    except UnicodeDecodeError:
        raise SaslError("malformed SCRAM message") from None
    without_proof, sep, _ = text.rpartition(",p=")
    attributes = _attributes(text)
    # librdkafka echoes its own nonce + the whole server nonce (which starts with its own):
    # Kafka's broker checks only that the echo ends with the server nonce, and so do we.
    echoed = attributes.get("r", "")
    if not sep or not echoed.endswith(state.nonce) or attributes.get("c") not in ("biws", "eSws"):
        raise SaslError("malformed SCRAM client-final message")
    digest = SCRAM_MECHANISMS[state.mechanism]
    try:
        proof = base64.b64decode(attributes["p"], validate=True)
        stored_key = base64.b64decode(state.credential.stored_key_b64)
        server_key = base64.b64decode(state.credential.server_key_b64)
    except (binascii.Error, KeyError):
        raise SaslError("malformed SCRAM proof") from None
    auth_message = f"{state.client_first_bare},{state.server_first},{without_proof}".encode()
    client_signature = hmac.new(stored_key, auth_message, digest).digest()
    if len(proof) != len(client_signature):
        raise SaslError("authentication failed")
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    if not hmac.compare_digest(hashlib.new(digest, client_key).digest(), stored_key):
        raise SaslError("authentication failed")
    server_signature = hmac.new(server_key, auth_message, digest).digest()
    return b"v=" + base64.b64encode(server_signature)


# ---- the client's side ---------------------------------------------------------------------

# Kafka's ScramMechanism accepts 4096..16384 iterations; a server asking for more would
# make the client burn CPU on its behalf.
SCRAM_ITERATIONS_MIN: Final = 4096
SCRAM_ITERATIONS_MAX: Final = 16384


def plain_message(user: str, password: str) -> bytes:
    """PLAIN's message without an authzid (RFC 4616). An API token goes as the password."""
    return b"\0" + user.encode() + b"\0" + password.encode()


@dataclass(frozen=True, slots=True)
class ScramClientFirst:
    """The client's state between its two SCRAM messages."""

    mechanism: str
    password: str
    nonce: str
    bare: str  # client-first-message-bare, part of the AuthMessage


def scram_client_first(
    mechanism: str, user: str, password: str, nonce: str
) -> tuple[ScramClientFirst, bytes]:
    """client-first (no channel binding, no authzid), and the state to finish with."""
    if mechanism not in SCRAM_MECHANISMS:
        raise SaslError(f"unsupported SCRAM mechanism {mechanism!r}")
    name = user.replace("=", "=3D").replace(",", "=2C")
    bare = f"n={name},r={nonce}"
    return ScramClientFirst(mechanism, password, nonce, bare), f"n,,{bare}".encode()


def scram_client_final(state: ScramClientFirst, server_first: bytes) -> tuple[bytes, bytes]:
    """client-final for ``server_first``, and the server-final expected back (the proof
    that the server knows the password's keys, checked by :func:`check_server_final`)."""
    if len(server_first) > MESSAGE_BYTES_MAX:
        raise SaslError("SCRAM server-first message too long")
    try:
        text = server_first.decode()
    except UnicodeDecodeError:
        raise SaslError("malformed SCRAM server-first message") from None
    attributes = _attributes(text)
    nonce = attributes.get("r", "")
    try:
        salt = base64.b64decode(attributes["s"], validate=True)
        iterations = int(attributes["i"])
    except (binascii.Error, KeyError, ValueError):
        raise SaslError("malformed SCRAM server-first message") from None
    if not nonce.startswith(state.nonce) or len(nonce) == len(state.nonce) or "m" in attributes:
        raise SaslError("SCRAM server-first message does not extend the client's nonce")
    if not SCRAM_ITERATIONS_MIN <= iterations <= SCRAM_ITERATIONS_MAX:
        raise SaslError(f"SCRAM iteration count {iterations} outside [4096, 16384]")
    digest = SCRAM_MECHANISMS[state.mechanism]
    salted = hashlib.pbkdf2_hmac(digest, state.password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    without_proof = f"c=biws,r={nonce}"
    auth_message = f"{state.bare},{text},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    expected = b"v=" + base64.b64encode(hmac.new(server_key, auth_message, digest).digest())
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode(), expected


def check_server_final(message: bytes, expected: bytes) -> None:
    """The server proved it holds the password's keys (RFC 5802's ``v=``), else raise."""
    if message.startswith(b"e="):
        raise SaslError(f"SCRAM refused: {message[2:200].decode('utf-8', 'replace')}")
    if not hmac.compare_digest(message, expected):
        raise SaslError("the server's SCRAM signature is wrong: it does not know the password")
