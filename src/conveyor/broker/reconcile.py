"""Reconciliation: from what this broker hosts and what the coordinator wants, the actions.

Pure and level-triggered (as Kafka's brokers apply metadata deltas and Kubernetes
controllers reconcile): every heartbeat response carries the whole desired state for this
broker, :func:`reconcile` compares it with the hosted replicas and returns what to do.
Applying the same response twice yields no actions the second time, so a lost or repeated
response heals itself. The shell (``heartbeat.py``) applies the actions in order and logs
each with its ``reason``.

Worked example, broker 1 hosting ``orders-0`` as follower at epoch 3 and nothing else;
the response says ``orders-0`` leader 1 epoch 4 and ``orders-1`` leader 2 epoch 1::

    BecomeLeader(orders-0, epoch 4)     reason "leader at epoch 4 (was follower at 3)"
    Open(orders-1, follower, epoch 1)   reason "newly assigned replica"

Rules: a desired epoch lower than the hosted one is a stale answer and is skipped (never
go back in epochs); a hosted replica missing from the answer is deleted (topic deleted or
replica moved away); a changed topic config is applied to the open log in place
(``PartitionLog.reconfigure``: no reopen, no pause in serving).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.messages import BrokerId, ReplicaAssignment, TopicConfig
from conveyor.protocol.replica import UNKNOWN_EPOCH, ReplicaState, Role, TopicPartition
from conveyor.protocol.topics import (
    FlushPolicy,
    LogConfig,
    min_insync_replicas,
    parse_cleanup_policy,
)

__all__ = [
    "UNKNOWN_EPOCH",
    "Action",
    "BecomeFollower",
    "BecomeLeader",
    "Delete",
    "Open",
    "Reconfigure",
    "ReplicaState",
    "Role",
    "Skip",
    "TopicPartition",
    "UpdateReplicas",
    "check_cluster_id",
    "log_config_for",
    "reconcile",
]


@dataclass(frozen=True, slots=True)
class Open:
    tp: TopicPartition
    state: ReplicaState
    reason: str


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """Apply a topic config change to the open log (no reopen, no pause)."""

    tp: TopicPartition
    log_config: LogConfig
    reason: str


@dataclass(frozen=True, slots=True)
class BecomeLeader:
    tp: TopicPartition
    state: ReplicaState
    reason: str


@dataclass(frozen=True, slots=True)
class BecomeFollower:
    tp: TopicPartition
    state: ReplicaState
    reason: str


@dataclass(frozen=True, slots=True)
class UpdateReplicas:
    """Same leader and epoch; the replica set, ISR or min ISR changed."""

    tp: TopicPartition
    state: ReplicaState
    reason: str


@dataclass(frozen=True, slots=True)
class Delete:
    tp: TopicPartition
    reason: str


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing done for a reason worth a warning (a stale epoch, an unusable config)."""

    tp: TopicPartition
    reason: str


Action = Open | Reconfigure | BecomeLeader | BecomeFollower | UpdateReplicas | Delete | Skip


def log_config_for(config: TopicConfig, flush_override: FlushPolicy | None = None) -> LogConfig:
    """The storage settings of a topic's partitions; ``flush_override`` is the broker's
    ``--flush`` (an operator override for every topic). Raises INVALID_CONFIG."""
    return LogConfig(
        segment_bytes_max=config.segment_bytes,
        batch_bytes_max=config.max_message_bytes,
        retention_bytes=config.retention_bytes,
        retention_ms=config.retention_ms,
        flush=flush_override or FlushPolicy.parse(config.flush),
        cleanup_policy=parse_cleanup_policy(config.cleanup_policy),
        delete_retention_ms=config.delete_retention_ms,
        min_cleanable_dirty_ratio=config.min_cleanable_dirty_ratio,
    )


def desired_state(
    broker_id: BrokerId,
    assignment: ReplicaAssignment,
    config: TopicConfig,
    flush_override: FlushPolicy | None,
) -> ReplicaState:
    return ReplicaState(
        role="leader" if assignment.leader == broker_id else "follower",
        leader_epoch=assignment.leader_epoch,
        leader=assignment.leader,
        replicas=tuple(assignment.replicas),
        isr=tuple(assignment.isr),
        min_insync_replicas=min_insync_replicas(
            config.min_insync_replicas, len(assignment.replicas)
        ),
        log_config=log_config_for(config, flush_override),
        partition_epoch=assignment.partition_epoch,
    )


def reconcile(
    broker_id: BrokerId,
    hosted: Mapping[TopicPartition, ReplicaState],
    assignments: Sequence[ReplicaAssignment],
    topic_configs: Mapping[str, TopicConfig],
    flush_override: FlushPolicy | None = None,
) -> list[Action]:
    """The actions that take ``hosted`` to the desired state, deletions first (they free
    disk and file handles), then opens, config changes and role changes, each in partition order."""
    desired: dict[TopicPartition, ReplicaState] = {}
    actions: list[Action] = []
    for assignment in assignments:
        tp = TopicPartition(assignment.topic, assignment.partition)
        if broker_id not in assignment.replicas and assignment.leader != broker_id:
            continue  # not ours: the coordinator sent more than this broker's replicas
        config = topic_configs.get(assignment.topic, TopicConfig())
        try:
            desired[tp] = desired_state(broker_id, assignment, config, flush_override)
        except InvalidRequestError as exc:
            actions.append(Skip(tp, f"unusable topic config: {exc.message}"))
    skipped = {action.tp for action in actions}
    deletes: list[Action] = [
        Delete(tp, _delete_reason(tp, topic_configs, desired))
        for tp in sorted(hosted)
        if tp not in desired and tp not in skipped
    ]
    changes: list[Action] = []
    for tp in sorted(desired):
        current = hosted.get(tp)
        if current is None:
            changes.append(Open(tp, desired[tp], "newly assigned replica"))
        else:
            changes += _changes(tp, current, desired[tp])
    return deletes + actions + changes


def _changes(tp: TopicPartition, current: ReplicaState, wanted: ReplicaState) -> list[Action]:
    if wanted.leader_epoch < current.leader_epoch:
        return [
            Skip(
                tp,
                f"stale assignment: epoch {wanted.leader_epoch} is older than the hosted "
                f"epoch {current.leader_epoch}",
            )
        ]
    if (
        wanted.leader_epoch == current.leader_epoch
        and wanted.partition_epoch < current.partition_epoch
    ):
        # An answer computed before our own AlterIsr took effect: newer state is applied.
        return []
    out: list[Action] = []
    if wanted.log_config != current.log_config:
        out.append(Reconfigure(tp, wanted.log_config, "topic config changed"))
    was = f"was {current.role} at {current.leader_epoch}"
    if (wanted.role, wanted.leader_epoch, wanted.leader) != (
        current.role,
        current.leader_epoch,
        current.leader,
    ):
        if wanted.role == "leader":
            out.append(BecomeLeader(tp, wanted, f"leader at epoch {wanted.leader_epoch} ({was})"))
        else:
            reason = f"follower of {wanted.leader} at epoch {wanted.leader_epoch} ({was})"
            out.append(BecomeFollower(tp, wanted, reason))
    elif (wanted.replicas, wanted.isr, wanted.min_insync_replicas, wanted.partition_epoch) != (
        current.replicas,
        current.isr,
        current.min_insync_replicas,
        current.partition_epoch,
    ):
        reason = f"replicas {list(wanted.replicas)}, isr {list(wanted.isr)}"
        out.append(UpdateReplicas(tp, wanted, reason))
    return out


def _delete_reason(
    tp: TopicPartition,
    topic_configs: Mapping[str, TopicConfig],
    desired: Mapping[TopicPartition, ReplicaState],
) -> str:
    if tp.topic not in topic_configs and not any(d.topic == tp.topic for d in desired):
        return "topic deleted"
    return "replica moved to other brokers"


def check_cluster_id(stored: str | None, received: str) -> str | None:
    """None when the coordinator belongs to this broker's cluster, else why not.

    A broker whose data came from another cluster (or a coordinator that lost its store and
    made a new cluster id) must not reconcile: the answer would delete every partition it
    holds. Kafka refuses to start on the same condition (InconsistentClusterIdException)."""
    if stored is None or stored == received:
        return None
    return (
        f"coordinator reports cluster {received!r} but this broker's data belongs to "
        f"cluster {stored!r}: refusing to reconcile (delete the data dir to join anew)"
    )
