"""The pure authentication and authorization decisions, exhaustively."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.security import (
    CLUSTER_PRINCIPAL,
    OPERATIONS,
    RESOURCE_TYPES,
    AclRule,
    SecuritySnapshot,
    Token,
    User,
    authenticate_password,
    authenticate_token,
    authorize,
    hash_password,
    token_digest,
    verify_password,
)

ALICE = "user:alice"
RESOURCES = [
    ("topic", "orders"),
    ("topic", "orders-eu"),
    ("group", "billing"),
    ("transactional_id", "orders"),
    ("cluster", "cluster"),
]
# Kafka's implications (protocol/security.py): (rule's operation, type) -> what it also allows
IMPLIED = {
    ("produce", "transactional_id"): {("describe", "transactional_id", "orders")},
    ("produce", "topic"): {("idempotent_write", "cluster", "cluster")},
}


def rule(op: str, rtype: str, name: str, pattern: str = "literal", who: str = ALICE) -> AclRule:
    return AclRule(principal=who, operation=op, resource_type=rtype, name=name, pattern=pattern)  # type: ignore[arg-type]


def test_deny_by_default_for_every_operation_and_resource() -> None:
    for op, (rtype, name) in itertools.product(OPERATIONS, RESOURCES):
        assert not authorize([], ALICE, op, rtype, name)


def test_a_literal_rule_allows_exactly_its_operation_on_exactly_its_resource() -> None:
    for op, rtype in itertools.product(OPERATIONS, RESOURCE_TYPES):
        if op == "admin" and rtype == "cluster":
            continue  # the superuser rule, tested below
        name = "cluster" if rtype == "cluster" else "orders"
        acls = [rule(op, rtype, name)]
        for other_op, (other_type, other_name) in itertools.product(OPERATIONS, RESOURCES):
            asked = (other_op, other_type, other_name)
            expected = asked == (op, rtype, name) or asked in IMPLIED.get((op, rtype), set())
            assert authorize(acls, ALICE, other_op, other_type, other_name) is expected, (
                op,
                rtype,
                other_op,
                other_type,
                other_name,
            )
        assert not authorize(acls, "user:bob", op, rtype, name)


def test_prefix_rules_match_names_starting_with_the_prefix() -> None:
    acls = [rule("consume", "topic", "orders", "prefix")]
    assert authorize(acls, ALICE, "consume", "topic", "orders")
    assert authorize(acls, ALICE, "consume", "topic", "orders-eu")
    assert not authorize(acls, ALICE, "consume", "topic", "order")
    assert not authorize(acls, ALICE, "consume", "topic", "eu-orders")
    assert not authorize(acls, ALICE, "consume", "group", "orders")
    assert not authorize(acls, ALICE, "produce", "topic", "orders")


def test_wildcard_principal_and_admin_and_cluster_identity() -> None:
    everyone = [rule("describe", "cluster", "cluster", who="*")]
    assert authorize(everyone, "user:anyone", "describe", "cluster", "cluster")
    admin = [rule("admin", "cluster", "cluster")]
    for op, (rtype, name) in itertools.product(OPERATIONS, RESOURCES):
        assert authorize(admin, ALICE, op, rtype, name)
        assert not authorize(admin, "user:bob", op, rtype, name)
        assert authorize([], CLUSTER_PRINCIPAL, op, rtype, name)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(OPERATIONS),
            st.sampled_from(["topic", "group"]),
            st.text("ab", min_size=1, max_size=3),
            st.sampled_from(["literal", "prefix"]),
        ),
        max_size=5,
    ),
    st.sampled_from(OPERATIONS),
    st.sampled_from(["topic", "group"]),
    st.text("ab", min_size=1, max_size=4),
)
def test_authorize_is_exactly_the_union_of_its_rules(
    rules: list[tuple[str, str, str, str]], op: str, rtype: str, name: str
) -> None:
    acls = [rule(*r) for r in rules]
    expected = any(
        r_op == op
        and r_type == rtype
        and (name.startswith(r_name) if pattern == "prefix" else name == r_name)
        for r_op, r_type, r_name, pattern in rules
    )
    assert authorize(acls, ALICE, op, rtype, name) is expected


def test_passwords_are_salted_scrypt_hashes() -> None:
    a = hash_password("correct horse", b"s" * 16)
    b = hash_password("correct horse", b"t" * 16)
    assert a.hash_hex != b.hash_hex  # the salt changes the hash
    assert "correct horse" not in a.hash_hex
    assert verify_password("correct horse", a)
    assert not verify_password("correct hors", a)


def test_authenticate_password_and_token() -> None:
    secret = "cvt_abc_s3cr3t"
    snapshot = SecuritySnapshot(
        version=3,
        enabled=True,
        users=[User(name="alice", password=hash_password("pw-alice-1", b"x" * 16))],
        tokens=[
            Token(
                token_id="abc",
                principal="svc",
                secret_sha256_hex=token_digest(secret),
                created_ms=0,
                expires_ms=1000,
            ),
        ],
    )
    assert authenticate_password(snapshot, "alice", "pw-alice-1") == ALICE
    assert authenticate_password(snapshot, "alice", "wrong") is None
    assert authenticate_password(snapshot, "bob", "pw-alice-1") is None
    assert authenticate_token(snapshot, secret, now_ms=999) == "svc"
    assert authenticate_token(snapshot, secret, now_ms=1000) is None  # expired
    assert authenticate_token(snapshot, "cvt_abc_guess", now_ms=0) is None
    assert authenticate_token(snapshot, "garbage", now_ms=0) is None
    assert authenticate_token(snapshot, "the-secret", 0, cluster_secret="the-secret") == (
        CLUSTER_PRINCIPAL
    )
    assert authenticate_token(snapshot, "", 0, cluster_secret="") is None


@pytest.mark.parametrize("op", OPERATIONS)
def test_every_operation_is_covered(op: str) -> None:
    assert authorize([rule(op, "cluster", "cluster")], ALICE, op, "cluster", "cluster")
