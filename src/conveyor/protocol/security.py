"""Principals, credentials and ACLs: the wire types, and the pure decisions on them.

The coordinator stores users, tokens and ACL rules (``coordinator/security_store.py``) and
sends a :class:`SecuritySnapshot` to every broker in its heartbeat response; each service
then answers "who is this?" (:func:`authenticate`) and "may they?" (:func:`authorize`)
locally, with no round trip on the hot path. Both functions are pure: no clock (``now_ms``
is passed in), no I/O.

Credentials at rest: passwords as scrypt hashes (per-user random salt, N=2^14, r=8, p=1:
about 16 MiB and tens of ms per check, the cost a stolen table's brute force pays per
guess); API tokens are 256-bit random strings, stored as their SHA-256 (a slow hash adds
nothing to a value that cannot be guessed). Plaintext is never stored nor sent to brokers.

Authorization: deny by default. A rule allows one principal (or ``*``) one operation on
resources of one type whose name equals the rule's name (``literal``) or starts with it
(``prefix``). ``admin`` on ``cluster`` allows everything. The cluster's own identity
(``CLUSTER_PRINCIPAL``) is allowed everything as well. Two implications, Kafka's:
``produce`` on a transactional id allows ``describe`` on it (WRITE implies DESCRIBE), and
``idempotent_write`` on the cluster (getting a producer id) is allowed to whoever may
``produce`` on some topic (KIP-679, Kafka 2.8+: WRITE on any topic implies it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final, Literal, get_args

import msgspec

Operation = Literal[
    "produce",
    "consume",
    "create_topic",
    "delete_topic",
    "describe",
    "group",
    "admin",
    "idempotent_write",  # cluster only: a producer id without a transactional id
]
# transactional_id: Kafka's TRANSACTIONAL_ID resource (``produce`` is its WRITE: use the id
# for a transaction; ``describe`` its DESCRIBE: find its coordinator, see its state)
ResourceType = Literal["topic", "group", "cluster", "transactional_id"]
PatternType = Literal["literal", "prefix"]

OPERATIONS: Final[tuple[str, ...]] = get_args(Operation)
RESOURCE_TYPES: Final[tuple[str, ...]] = get_args(ResourceType)
ANY_PRINCIPAL: Final = "*"
CLUSTER_PRINCIPAL: Final = "cluster:internal"
CLUSTER_RESOURCE: Final = "cluster"
USER_PREFIX: Final = "user:"


class Wire(msgspec.Struct, kw_only=True, omit_defaults=True):
    """As ``messages.Wire`` (messages.py imports this module for the heartbeat)."""


SCRYPT_N: Final = 1 << 14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SCRYPT_BYTES: Final = 32
SALT_BYTES: Final = 16
NAME_LENGTH_MAX: Final = 128


SCRAM_ITERATIONS: Final = 4096  # Kafka's minimum for SCRAM credentials
# SASL mechanism -> hashlib name (RFC 5802, RFC 7677; Kafka's two SCRAM mechanisms)
SCRAM_MECHANISMS: Final = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class ScramCredential(Wire):
    """What a SCRAM server keeps of a password (RFC 5802): enough to check a client's proof
    and prove itself, not enough to log in as the user."""

    salt_b64: str
    iterations: int
    stored_key_b64: str
    server_key_b64: str


class PasswordHash(Wire):
    salt_hex: str
    hash_hex: str
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    # SASL/SCRAM credentials per mechanism (the Kafka listener), derived when the password
    # is set; users whose password was set before they existed have none (PLAIN works).
    scram: dict[str, ScramCredential] | None = None


class User(Wire):
    name: str
    password: PasswordHash


class Token(Wire):
    """An API token: ``token_id`` is public (shown by ``token list``, used to revoke), the
    secret only exists in the holder's hands; ``secret_sha256_hex`` checks it."""

    token_id: str
    principal: str  # "user:alice", or a service name chosen at creation
    secret_sha256_hex: str
    created_ms: int
    expires_ms: int | None = None


class AclRule(Wire):
    principal: str  # "user:alice", a token's principal, or "*"
    operation: Operation
    resource_type: ResourceType
    name: str  # a topic, group or transactional id (or prefix); "cluster" for the cluster
    pattern: PatternType = "literal"


class SecuritySnapshot(Wire):
    """Everything a broker needs to authenticate and authorize, as of ``version`` (bumped
    by every change). Hashes only."""

    version: int
    enabled: bool
    users: list[User] = msgspec.field(default_factory=list)
    tokens: list[Token] = msgspec.field(default_factory=list)
    acls: list[AclRule] = msgspec.field(default_factory=list)


# ---- admin API bodies ---------------------------------------------------------------------


class UserCreateRequest(Wire):
    name: str
    password: str


class UserSummary(Wire):
    name: str
    principal: str


class TokenCreateRequest(Wire):
    principal: str
    expires_in_ms: int | None = None


class TokenCreated(Wire):
    token_id: str
    principal: str
    token: str  # the secret: shown once, never stored
    expires_ms: int | None = None


class TokenSummary(Wire):
    token_id: str
    principal: str
    created_ms: int
    expires_ms: int | None = None


class WhoAmI(Wire):
    principal: str
    auth_enabled: bool
    # The allow rules that apply to the caller (its own and those for "*"): what a user
    # interface may offer it (Kafka's "authorized operations"); the server checks anyway.
    acls: list[AclRule] = msgspec.field(default_factory=list)


# ---- pure decisions ------------------------------------------------------------------------


def hash_password(password: str, salt: bytes) -> PasswordHash:
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=64 * 1024 * 1024,
        dklen=SCRYPT_BYTES,
    )
    return PasswordHash(salt_hex=salt.hex(), hash_hex=digest.hex())


def scram_credential(
    password: str, mechanism: str, salt: bytes, iterations: int = SCRAM_ITERATIONS
) -> ScramCredential:
    """RFC 5802: SaltedPassword = Hi(password, salt, i); StoredKey = H(HMAC(SP, "Client
    Key")); ServerKey = HMAC(SP, "Server Key")."""
    digest = SCRAM_MECHANISMS[mechanism]
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    return ScramCredential(
        salt_b64=base64.b64encode(salt).decode(),
        iterations=iterations,
        stored_key_b64=base64.b64encode(hashlib.new(digest, client_key).digest()).decode(),
        server_key_b64=base64.b64encode(server_key).decode(),
    )


def scram_credentials(password: str, salt: bytes) -> dict[str, ScramCredential]:
    """Both of Kafka's SCRAM mechanisms for one password (one salt each, derived)."""
    return {
        mechanism: scram_credential(password, mechanism, hashlib.sha256(salt + name).digest()[:16])
        for mechanism, name in ((m, m.encode()) for m in SCRAM_MECHANISMS)
    }


def verify_password(password: str, stored: PasswordHash) -> bool:
    digest = hashlib.scrypt(
        password.encode(),
        salt=bytes.fromhex(stored.salt_hex),
        n=stored.n,
        r=stored.r,
        p=stored.p,
        maxmem=64 * 1024 * 1024,
        dklen=len(stored.hash_hex) // 2,
    )
    return hmac.compare_digest(digest.hex(), stored.hash_hex)


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """``cvt_<id>_<secret>`` -> (id, whole token); None when it is not shaped like one."""
    parts = token.split("_", 2)  # the secret part may contain "_" (token_urlsafe)
    if len(parts) != 3 or parts[0] != "cvt" or not parts[1] or not parts[2]:
        return None
    return parts[1], token


def authenticate_token(
    snapshot: SecuritySnapshot, token: str, now_ms: int, cluster_secret: str | None = None
) -> str | None:
    """The principal of a bearer token, or None (unknown, revoked, expired, wrong)."""
    if cluster_secret and hmac.compare_digest(token.encode(), cluster_secret.encode()):
        return CLUSTER_PRINCIPAL
    parsed = split_token(token)
    if parsed is None:
        return None
    token_id, whole = parsed
    digest = token_digest(whole)
    for stored in snapshot.tokens:
        if stored.token_id == token_id and hmac.compare_digest(stored.secret_sha256_hex, digest):
            if stored.expires_ms is not None and now_ms >= stored.expires_ms:
                return None
            return stored.principal
    return None


def authenticate_password(snapshot: SecuritySnapshot, name: str, password: str) -> str | None:
    for user in snapshot.users:
        if user.name == name:
            return USER_PREFIX + name if verify_password(password, user.password) else None
    return None


def _matches(rule: AclRule, resource_type: str, name: str) -> bool:
    if rule.resource_type != resource_type:
        return False
    if rule.pattern == "prefix":
        return name.startswith(rule.name)
    return name == rule.name


def authorize(
    acls: list[AclRule], principal: str, operation: str, resource_type: str, name: str
) -> bool:
    """May ``principal`` do ``operation`` on the resource? Deny unless a rule allows it."""
    if principal == CLUSTER_PRINCIPAL:
        return True
    for rule in acls:
        if rule.principal not in (principal, ANY_PRINCIPAL):
            continue
        if rule.operation == "admin" and rule.resource_type == "cluster":
            return True
        if rule.operation == operation and _matches(rule, resource_type, name):
            return True
        if _implies(rule, operation, resource_type, name):
            return True
    return False


def _implies(rule: AclRule, operation: str, resource_type: str, name: str) -> bool:
    """Kafka's implied operations that Conveyor keeps (see the module docstring)."""
    if operation == "describe" and resource_type == "transactional_id":
        return rule.operation == "produce" and _matches(rule, resource_type, name)
    if operation == "idempotent_write" and resource_type == "cluster":
        return rule.operation == "produce" and rule.resource_type == "topic"
    return False


def valid_name(name: str) -> bool:
    return 0 < len(name) <= NAME_LENGTH_MAX and name.isprintable() and ":" not in name
