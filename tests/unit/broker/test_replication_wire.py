"""Reconciliation of partition epochs (the replica protocol: protocol/test_fetchframe.py)."""

from __future__ import annotations

from conveyor.broker.reconcile import ReplicaState, TopicPartition, UpdateReplicas, reconcile
from conveyor.protocol.messages import (
    BrokerId,
    Epoch,
    ReplicaAssignment,
    TopicConfig,
)


def _assignment(partition_epoch: int, isr: list[int]) -> ReplicaAssignment:
    return ReplicaAssignment(
        topic="t",
        partition=0,
        leader=BrokerId(1),
        leader_epoch=Epoch(3),
        replicas=[BrokerId(1), BrokerId(2), BrokerId(3)],
        isr=[BrokerId(b) for b in isr],
        partition_epoch=partition_epoch,
    )


def test_a_newer_partition_epoch_updates_the_isr_and_an_older_one_is_ignored() -> None:
    tp = TopicPartition("t", 0)
    hosted = {
        tp: ReplicaState(
            role="leader",
            leader_epoch=3,
            leader=BrokerId(1),
            replicas=(BrokerId(1), BrokerId(2), BrokerId(3)),
            isr=(BrokerId(1), BrokerId(2)),
            min_insync_replicas=2,
            partition_epoch=5,
        )
    }
    configs = {"t": TopicConfig()}
    newer = reconcile(BrokerId(1), hosted, [_assignment(6, [1, 2, 3])], configs)
    assert len(newer) == 1 and isinstance(newer[0], UpdateReplicas)
    assert newer[0].state.isr == (1, 2, 3)
    # An answer computed before our own AlterIsr landed must not undo it.
    assert reconcile(BrokerId(1), hosted, [_assignment(4, [1])], configs) == []
