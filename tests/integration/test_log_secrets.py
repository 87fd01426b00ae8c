"""No secret ever appears in a service's log: an auth-enabled cluster logging at DEBUG with
the access log on is driven with every kind of credential (the cluster secret from a
file, passwords, tokens; through the CLI, the library and raw HTTP; good and bad), then
every line the coordinator and the broker wrote is searched for each secret, raw and in
the forms it travels in (a Basic header's base64)."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import conveyor
from conveyor.client.security import SecurityAdmin
from tests.integration.cluster import Cluster

CLI_TIMEOUT_S = 60
PARTITION_RECORDS = "/v1/topics/logs/partitions/0/records?offset=0"
LOG_ARGS = ["--auth", "--access-log", "--log-level", "DEBUG", "--log-format", "logfmt"]


def _secret(label: str) -> str:
    return f"{label}-{secrets.token_hex(12)}"


def _cli(cluster: Cluster, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_TOKEN", "CONVEYOR_USER")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *argv],
        env={**clean, "CONVEYOR_URL": cluster.url, **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def _http(url: str, authorization: str | None) -> int:
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_secret_reaches_the_logs(tmp_path: Path) -> None:
    cluster_secret = _secret("cluster")
    root_password, alice_password = _secret("rootpw"), _secret("alicepw")
    wrong_password, bogus_token = _secret("wrongpw"), "cvt_" + secrets.token_hex(16)
    secret_file = tmp_path / "cluster-secret"
    secret_file.write_text(cluster_secret + "\n")
    cluster = Cluster(
        tmp_path / "cluster", broker_count=1, coordinator_args=LOG_ARGS, broker_args=LOG_ARGS
    )
    os.environ["CONVEYOR_CLUSTER_SECRET_FILE"] = str(secret_file)
    try:
        cluster.start()
    finally:
        del os.environ["CONVEYOR_CLUSTER_SECRET_FILE"]
    used = [cluster_secret, root_password, alice_password, wrong_password, bogus_token]
    try:
        broker_url = cluster.brokers[1].url
        # Bootstrap with the cluster secret (library), then a user and tokens through the CLI.
        with SecurityAdmin(cluster.url, token=cluster_secret) as security:
            security.add_user("root", root_password)
            security.add_acl("user:root", "admin", "cluster", "cluster")
            admin_token = security.create_token("user:root").token
            alice_token = security.create_token("user:alice").token
        used += [admin_token, alice_token]
        token_file = tmp_path / "token"
        token_file.write_text(admin_token)
        result = _cli(cluster, "user", "add", "alice", CONVEYOR_NEW_PASSWORD=alice_password,
                      CONVEYOR_TOKEN_FILE=str(token_file))  # fmt: skip
        assert result.returncode == 0, result.stderr
        for argv in (["acl", "add", "user:alice", "produce", "--topic", "logs"],
                     ["acl", "add", "user:alice", "consume", "--topic", "logs"],
                     ["acl", "add", "user:alice", "describe", "--topic", "logs"],
                     ["topic", "create", "logs", "--partitions", "1"]):  # fmt: skip
            result = _cli(cluster, *argv, "--token", admin_token)
            assert result.returncode == 0, result.stderr

        # The library: a producer with a password, an admin with a token.
        with conveyor.Producer(cluster.url, user="alice", password=alice_password) as producer:
            producer.send("logs", b"hello", key="k").result(timeout=30)
        with conveyor.Admin(cluster.url, token=alice_token) as admin:
            assert admin.describe_topic("logs").name == "logs"

        # The CLI with good and bad credentials, from flags, variables and files.
        assert _cli(cluster, "whoami", CONVEYOR_USER="alice",
                    CONVEYOR_PASSWORD=alice_password).returncode == 0  # fmt: skip
        assert _cli(cluster, "produce", "logs", "from-cli", "--token", alice_token).returncode == 0
        assert _cli(cluster, "whoami", "--user", "alice", "--password", wrong_password).returncode
        assert _cli(cluster, "whoami", CONVEYOR_TOKEN=bogus_token).returncode

        # Raw HTTP, good and bad, and a secret in a query string (never logged: paths only).
        paths = {cluster.url: "/v1/topics/logs", broker_url: PARTITION_RECORDS}
        for base, path in paths.items():
            query = "&" if "?" in path else "?"
            for url in (base + path, f"{base}{path}{query}token={alice_token}"):
                assert _http(url, f"Bearer {alice_token}") == 200
            assert _http(base + path, _basic("alice", alice_password)) == 200
            assert _http(base + path, _basic("alice", wrong_password)) == 401
            assert _http(base + path, f"Bearer {bogus_token}") == 401
            assert _http(base + path, "Basic " + wrong_password) == 401  # malformed
    finally:
        cluster.stop()

    pairs = [("alice", alice_password), ("alice", wrong_password), ("root", root_password)]
    forms = set(used) | {base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in pairs}
    services = [cluster.coordinator, *cluster.brokers.values()]
    logs = {s.name: s.log_path.read_text(errors="replace") for s in services if s is not None}
    for name, text in logs.items():
        leaked = [form[:12] + "..." for form in forms if form in text]
        assert not leaked, f"{name}'s log holds secrets: {leaked}"
    # The run was logged: the access log saw the principals and the refusals.
    assert "principal=user:alice" in logs["broker-1"] and "status=401" in logs["broker-1"]
    assert "principal=user:root" in logs["coordinator"] and "status=401" in logs["coordinator"]
    assert "request_id=" in logs["coordinator"]
