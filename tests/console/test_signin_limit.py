"""The limit on failed passwords counts each browser, not the console: a guesser signing
in through the console from one address is throttled, a user at another address still
signs in, and the console's note of the browser's address cannot be forged by a client.

Browsers are played by plain HTTP connections from different loopback addresses
(127.0.0.2, 127.0.0.3: the whole 127/8 reaches a listener on 127.0.0.1); the sign-in
form is the page's own (login cookie and token, then the POST). No browser needed."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from conveyor.client.security import SecurityAdmin
from conveyor.transport import forwarded
from tests.integration.cluster import Cluster

SECRET = "console-limit-test-secret-0123456789"
PASSWORD = "alice-password-1"
GUESSER, USER = "127.0.0.2", "127.0.0.3"
PER_ADDRESS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root: Path = tmp_path_factory.mktemp("console-limit")
    limits = ["--auth-failures-per-address-max", str(PER_ADDRESS)]
    limits += ["--auth-failures-per-principal-max", "100"]
    cluster = Cluster(
        root,
        broker_count=0,
        coordinator_args=["--auth", *limits],
        env={"CONVEYOR_CLUSTER_SECRET": SECRET},
    )
    try:
        cluster.start()
        with SecurityAdmin(cluster.url, token=SECRET) as security:
            security.add_user("alice", PASSWORD)
            security.add_acl("user:alice", "describe", "cluster", "cluster")
        yield cluster
    finally:
        cluster.stop()


def request(
    base: str, source: str, method: str, path: str, body: str = "", **headers: str
) -> tuple[int, dict[str, str], str]:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request(method, path, body=body or None, headers=headers)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read().decode()
    finally:
        connection.close()


def sign_in(base: str, source: str, password: str) -> tuple[int, str]:
    """The console's sign-in form, from ``source``: (status, page text)."""
    status, headers, page = request(base, source, "GET", "/console/login")
    assert status == 200
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    found = re.search(r'name="login_token" value="([^"]+)"', page)
    assert found is not None
    form = urlencode(
        {"login_token": found.group(1), "user": "alice", "password": password, "next": ""}
    )
    status, _, page = request(
        base,
        source,
        "POST",
        "/console/login",
        form,
        **{"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    return status, page


def test_a_guesser_through_the_console_does_not_lock_out_other_browsers(
    cluster: Cluster,
) -> None:
    base = cluster.url
    for _ in range(PER_ADDRESS):
        status, page = sign_in(base, GUESSER, "wrong-password")
        assert status == 401 and "Wrong user name" in page
    status, page = sign_in(base, GUESSER, PASSWORD)  # even the right one, for a while
    assert status == 429
    assert f"client {GUESSER}" in page  # counted under the browser's own address
    status, _ = sign_in(base, USER, PASSWORD)
    assert status == 303  # another browser signs in: the console is not one client


def test_the_address_note_cannot_be_forged(cluster: Cluster) -> None:
    base = cluster.url
    for _ in range(PER_ADDRESS):  # throttle this client's own address, directly
        request(base, "127.0.0.4", "GET", "/v1/cluster", Authorization=basic("wrong"))
    forged = {
        "unsigned": "127.0.0.9",
        "bad mac": f"127.0.0.9;{now_ms()};{'0' * 64}",
        "other key": forwarded.sign(b"not-the-cluster-key", "127.0.0.9", now_ms()),
    }
    for what, value in forged.items():
        status, _, body = request(
            base,
            "127.0.0.4",
            "GET",
            "/v1/cluster",
            Authorization=basic(PASSWORD),
            **{forwarded.HEADER: value},
        )
        assert status == 429 and "client 127.0.0.4" in body, what
    # Signed with the cluster's key (what the console does), the note is taken.
    genuine = forwarded.sign(forwarded.derive_key(SECRET), "127.0.0.9", now_ms())
    status, _, _ = request(
        base,
        "127.0.0.4",
        "GET",
        "/v1/cluster",
        Authorization=basic(PASSWORD),
        **{forwarded.HEADER: genuine},
    )
    assert status == 200


def basic(password: str) -> str:
    from conveyor.transport.auth import authorization_header

    return authorization_header(user="alice", password=password) or ""


def now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000
