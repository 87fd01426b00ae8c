"""Auth with several coordinators: users, tokens and rules live in etcd, so what the active
coordinator stored still authenticates and authorizes after a takeover."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

import conveyor
from conveyor.cli.etcd_local import LocalEtcd
from conveyor.client.security import SecurityAdmin
from conveyor.protocol.errors import ConveyorError, ErrorCode
from tests.ha.harness import HaCluster


def test_users_and_rules_survive_a_takeover(
    tmp_path: Path, shared_etcd: LocalEtcd, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = secrets.token_urlsafe(24)
    monkeypatch.setenv("CONVEYOR_CLUSTER_SECRET", secret)  # the processes inherit it
    cluster = HaCluster(tmp_path, shared_etcd, prefix, broker_count=1, extra_args=["--auth"])
    try:
        cluster.start()
        with SecurityAdmin(cluster.urls, token=secret) as admin:
            admin.add_user("alice", "alice-password")
            admin.add_acl("user:alice", "describe", "cluster", "cluster")
            token = admin.create_token("user:alice").token
        old = cluster.wait_active()
        cluster.coordinators[old].kill()
        cluster.wait_active(10, other_than=old)
        with conveyor.Admin(cluster.urls, user="alice", password="alice-password") as alice:
            assert alice.list_topics() == []
        with conveyor.Admin(cluster.urls, token=token) as by_token:
            assert by_token.list_topics() == []
            with pytest.raises(ConveyorError) as refused:  # no rule for creating topics
                by_token.create_topic("nope", partitions=1)
            assert refused.value.code is ErrorCode.FORBIDDEN
        with SecurityAdmin(cluster.urls, token=secret) as admin:
            admin.remove_user("alice")  # changes go on under the new coordinator
        with conveyor.Admin(cluster.urls, user="alice", password="alice-password") as alice:
            with pytest.raises(ConveyorError) as gone:
                alice.list_topics()
            assert gone.value.code is ErrorCode.UNAUTHENTICATED
    finally:
        cluster.stop()
    cluster.check_no_two_actives()
