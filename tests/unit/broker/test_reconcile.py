"""Table tests of reconciliation, plus the property that makes it level-triggered."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.broker.reconcile import (
    UNKNOWN_EPOCH,
    Action,
    BecomeFollower,
    BecomeLeader,
    Delete,
    Open,
    Reconfigure,
    ReplicaState,
    Skip,
    TopicPartition,
    UpdateReplicas,
    check_cluster_id,
    log_config_for,
    reconcile,
)
from conveyor.protocol.messages import BrokerId, Epoch, ReplicaAssignment, TopicConfig
from conveyor.storage import FlushPolicy, LogConfig

ME = BrokerId(1)
DEFAULT_LOG = log_config_for(TopicConfig())


def assign(
    topic: str, partition: int, leader: int | None, epoch: int, replicas: tuple[int, ...] = (1,)
) -> ReplicaAssignment:
    return ReplicaAssignment(
        topic=topic,
        partition=partition,
        leader=None if leader is None else BrokerId(leader),
        leader_epoch=Epoch(epoch),
        replicas=[BrokerId(r) for r in replicas],
        isr=[BrokerId(r) for r in replicas],
    )


def state(
    role: str, epoch: int, leader: int | None, replicas: tuple[int, ...] = (1,), **kw: object
) -> ReplicaState:
    peers = tuple(BrokerId(r) for r in replicas)
    return ReplicaState(
        role=role,  # type: ignore[arg-type]
        leader_epoch=epoch,
        leader=None if leader is None else BrokerId(leader),
        replicas=peers,
        isr=peers,
        min_insync_replicas=2 if len(replicas) >= 3 else 1,
        log_config=kw.get("log_config", DEFAULT_LOG),  # type: ignore[arg-type]
    )


T0 = TopicPartition("t", 0)
T1 = TopicPartition("t", 1)
CONFIGS = {"t": TopicConfig()}


def kinds(actions: list[Action]) -> list[tuple[str, TopicPartition]]:
    return [(type(a).__name__, a.tp) for a in actions]


def test_new_assignments_open_with_role_and_config() -> None:
    config = TopicConfig(segment_bytes=4096, max_message_bytes=2048, flush="interval:50")
    actions = reconcile(ME, {}, [assign("t", 0, 1, 3), assign("t", 1, 2, 1, (2, 1))], {"t": config})
    assert kinds(actions) == [("Open", T0), ("Open", T1)]
    first, second = actions
    assert isinstance(first, Open) and isinstance(second, Open)
    assert first.state.role == "leader" and first.state.leader_epoch == 3
    assert second.state.role == "follower" and second.state.leader == 2
    log_config = first.state.log_config
    assert log_config.segment_bytes_max == 4096
    assert log_config.batch_bytes_max == 2048
    assert log_config.flush == FlushPolicy("interval", 50)


def test_flush_override_wins() -> None:
    actions = reconcile(ME, {}, [assign("t", 0, 1, 0)], CONFIGS, FlushPolicy("never"))
    assert isinstance(actions[0], Open)
    assert actions[0].state.log_config.flush == FlushPolicy("never")


@pytest.mark.parametrize(
    ("hosted", "wanted", "expected"),
    [
        (state("follower", 3, 2), assign("t", 0, 1, 4), BecomeLeader),
        (state("leader", 3, 1), assign("t", 0, 2, 4, (1, 2)), BecomeFollower),
        (state("follower", UNKNOWN_EPOCH, None), assign("t", 0, 1, 0), BecomeLeader),
        (state("follower", 2, 2, (1, 2)), assign("t", 0, 3, 3, (1, 3)), BecomeFollower),
        (state("leader", 3, 1, (1, 2, 3)), assign("t", 0, 1, 3, (1, 2)), UpdateReplicas),
        (state("leader", 5, 1), assign("t", 0, 1, 4), Skip),
    ],
    ids=["to-leader", "to-follower", "reconfigured", "new-leader", "isr-shrink", "stale-epoch"],
)
def test_transitions(hosted: ReplicaState, wanted: ReplicaAssignment, expected: type) -> None:
    actions = reconcile(ME, {T0: hosted}, [wanted], CONFIGS)
    assert [type(a) for a in actions] == [expected]


def test_config_change_is_applied_in_place_and_keeps_role() -> None:
    hosted = {T0: state("leader", 1, 1)}
    actions = reconcile(ME, hosted, [assign("t", 0, 1, 1)], {"t": TopicConfig(segment_bytes=8192)})
    assert len(actions) == 1 and isinstance(actions[0], Reconfigure)
    assert actions[0].log_config.segment_bytes_max == 8192


def test_deletes_come_first_with_reasons() -> None:
    hosted = {
        TopicPartition("gone", 0): state("leader", 1, 1),
        TopicPartition("t", 5): state("leader", 1, 1),
    }
    actions = reconcile(ME, hosted, [assign("t", 0, 1, 1)], CONFIGS)
    assert kinds(actions) == [
        ("Delete", TopicPartition("gone", 0)),
        ("Delete", TopicPartition("t", 5)),
        ("Open", T0),
    ]
    reasons = [a.reason for a in actions if isinstance(a, Delete)]
    assert reasons == ["topic deleted", "replica moved to other brokers"]


def test_assignments_of_other_brokers_are_ignored() -> None:
    assert reconcile(ME, {}, [assign("t", 0, 2, 1, (2, 3))], CONFIGS) == []


def test_unusable_config_is_skipped_and_not_deleted() -> None:
    hosted = {T0: state("leader", 1, 1)}
    actions = reconcile(ME, hosted, [assign("t", 0, 1, 1)], {"t": TopicConfig(flush="sometimes")})
    assert kinds(actions) == [("Skip", T0)]


def apply(
    hosted: dict[TopicPartition, ReplicaState], actions: list[Action]
) -> dict[TopicPartition, ReplicaState]:
    """What the shell does to the hosted states, without files."""
    out = dict(hosted)
    for action in actions:
        match action:
            case Open(tp, wanted, _):
                out[tp] = wanted
            case Reconfigure(tp, config, _):
                out[tp] = msgspec.structs.replace(out[tp], log_config=config)
            case BecomeLeader(tp, wanted, _) | BecomeFollower(tp, wanted, _):
                out[tp] = msgspec.structs.replace(wanted, log_config=out[tp].log_config)
            case UpdateReplicas(tp, wanted, _):
                out[tp] = msgspec.structs.replace(wanted, log_config=out[tp].log_config)
            case Delete(tp, _):
                del out[tp]
            case Skip():
                pass
    return out


assignments = st.lists(
    st.builds(
        assign,
        topic=st.sampled_from(["a", "b"]),
        partition=st.integers(0, 3),
        leader=st.sampled_from([None, 1, 2, 3]),
        epoch=st.integers(0, 5),
        replicas=st.sampled_from([(1,), (1, 2), (2, 3), (1, 2, 3)]),
    ),
    max_size=8,
    unique_by=lambda a: (a.topic, a.partition),
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "a": st.builds(TopicConfig, segment_bytes=st.sampled_from([4096, 8192])),
        "b": st.just(TopicConfig()),
    },
)


@given(first=assignments, second=assignments, topic_configs=configs)
def test_level_triggered(
    first: list[ReplicaAssignment],
    second: list[ReplicaAssignment],
    topic_configs: dict[str, TopicConfig],
) -> None:
    """From any hosted state, applying a response and reconciling again does nothing, and
    the hosted set is then exactly this broker's assignments (unless an epoch was stale)."""
    hosted = apply({}, reconcile(ME, {}, first, topic_configs))
    actions = reconcile(ME, hosted, second, topic_configs)
    after = apply(hosted, actions)
    assert reconcile(ME, after, second, topic_configs) == [
        a for a in actions if isinstance(a, Skip)
    ]
    mine = {(a.topic, a.partition) for a in second if ME in a.replicas or a.leader == ME}
    assert set(after) == mine
    for tp, replica in after.items():
        assert replica.log_config == log_config_for(topic_configs.get(tp.topic, TopicConfig()))


def test_default_log_config_matches_storage_defaults() -> None:
    assert log_config_for(TopicConfig()) == LogConfig(
        segment_bytes_max=128 * 1024 * 1024, batch_bytes_max=1024 * 1024
    )


@pytest.mark.parametrize(
    ("stored", "received", "ok"), [(None, "c1", True), ("c1", "c1", True), ("c1", "c2", False)]
)
def test_cluster_id(stored: str | None, received: str, ok: bool) -> None:
    assert (check_cluster_id(stored, received) is None) is ok
