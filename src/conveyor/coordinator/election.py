"""Leader election and ISR changes when brokers die or come back. Pure.

Modelled on Kafka's ``PartitionChangeBuilder.electLeader``: a leader is chosen from the
in-sync replicas that are alive, in replica order (so the preferred leader ``replicas[0]``
wins when it can); a replica outside the ISR may lead only when the topic explicitly allows
unclean election, because it may lack acknowledged writes.

Rules, so that issue #4 (replication) builds on them unchanged:

* every leader change bumps ``leader_epoch``, including a change to or from "no leader",
  so a deposed leader's requests carry a stale epoch and can be fenced;
* a dead broker leaves the ISR, except the last member: it holds the only complete copy and
  is the one replica that may safely lead when it returns (Kafka keeps it the same way);
* a partition whose ISR has no live member has no leader (offline) until one returns;
* every change of leader, replicas or ISR bumps ``partition_epoch`` (AlterIsr fencing);
* AlterIsr (``isr_change``): only the current leader, quoting the current leader epoch
  *and* partition epoch, may change the ISR; anything else is a deposed or confused leader
  and is fenced with STALE_EPOCH. The new ISR must contain the leader and be a subset of
  the replicas.

Worked example: replicas [1, 2, 3], isr [1, 2, 3], leader 1 at leader epoch 4, partition
epoch 9. Broker 1 dies: isr [2, 3], leader 2 (first live in-sync replica in replica order),
leader epoch 5, partition epoch 10. Broker 2 dies too: isr [3], leader 3, epochs 6 and 11.
Broker 3 dies: it stays the last ISR member, leader None (offline), epochs 7 and 12; it
leads again, epochs 8 and 13, when it returns. Broker 1 returning does not lead: it is not
in the ISR; the leader re-adds it through AlterIsr once it has caught up, and then
``preferred_leader`` moves leadership back to it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from conveyor.coordinator.model import Partition
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import AlterIsrRequest, BrokerId, Epoch


@dataclass(frozen=True, slots=True)
class Election:
    leader: BrokerId | None
    unclean: bool  # the leader was not in the ISR: writes it lacks are lost
    reason: str


def elect_leader(
    replicas: tuple[BrokerId, ...],
    isr: tuple[BrokerId, ...],
    alive: Collection[BrokerId],
    unclean_allowed: bool,
) -> Election:
    for broker in replicas:
        if broker in isr and broker in alive:
            return Election(broker, False, f"broker {broker} is the first live in-sync replica")
    if unclean_allowed:
        for broker in replicas:
            if broker in alive:
                return Election(
                    broker, True, f"unclean election of out-of-sync broker {broker} (allowed)"
                )
    return Election(None, False, f"no live in-sync replica among isr {list(isr)}")


def on_broker_dead(
    partition: Partition, dead: BrokerId, alive: Collection[BrokerId], unclean_allowed: bool
) -> tuple[Partition, str] | None:
    """The partition after ``dead`` was declared dead (``alive`` excludes it), with the
    reason; None when the partition does not change."""
    if dead not in partition.replicas:
        return None
    isr = partition.isr
    if dead in isr and len(isr) > 1:
        isr = tuple(b for b in isr if b != dead)
    if partition.leader != dead:
        if isr == partition.isr:
            return None
        return _with_isr(partition, isr), f"broker {dead} removed from the isr"
    election = elect_leader(partition.replicas, isr, alive, unclean_allowed)
    if election.leader is not None and election.unclean:
        isr = (election.leader,)
    changed = _with_leader(partition, election.leader, isr)
    return changed, f"leader {dead} died; {election.reason}"


def on_broker_restarted(
    partition: Partition, broker: BrokerId, alive: Collection[BrokerId], unclean_allowed: bool
) -> tuple[Partition, str] | None:
    """The partition after ``broker`` came back within its session as a new process, which
    may have lost an unsynced tail: as a death (``on_broker_dead``; ``alive`` excludes
    it), except that the sole in-sync replica keeps leading, since it holds the only copy,
    but at a new epoch, so that followers holding offsets it lost truncate them (KIP-101)
    instead of keeping them under an epoch whose history changed (simulation, seed 14254).
    """
    if partition.isr == (broker,):
        if partition.leader != broker:
            return None
        reason = f"broker {broker} restarted; the sole in-sync replica leads at a new epoch"
        return _with_leader(partition, broker, partition.isr), reason
    change = on_broker_dead(partition, broker, alive, unclean_allowed)
    if change is None:
        return None
    return change[0], f"broker {broker} restarted (new incarnation); {change[1]}"


def _with_isr(partition: Partition, isr: tuple[BrokerId, ...]) -> Partition:
    return replace(partition, isr=isr, partition_epoch=Epoch(partition.partition_epoch + 1))


def _with_leader(
    partition: Partition, leader: BrokerId | None, isr: tuple[BrokerId, ...]
) -> Partition:
    """A leader change (to or from none, too): both epochs move on."""
    return replace(
        partition,
        leader=leader,
        leader_epoch=Epoch(partition.leader_epoch + 1),
        isr=isr,
        partition_epoch=Epoch(partition.partition_epoch + 1),
    )


def on_replica_failed(
    partition: Partition, broker: BrokerId, alive: Collection[BrokerId]
) -> tuple[Partition, str] | None:
    """``broker`` reports that its log of ``partition`` cannot take writes (disk full, an
    fsync error; Kafka's offline replica): it leaves the ISR and, when it led, the first
    live in-sync replica leads instead. Never unclean, and never the last ISR member or one
    whose in-sync peers are all dead: it keeps what it has, and a partition that refuses
    writes beats one with no leader. None when nothing changes."""
    if broker not in partition.isr:
        return None
    isr = tuple(b for b in partition.isr if b != broker)
    if not any(b in alive for b in isr):
        return None
    reason = f"broker {broker} reported its log failed (disk full or an fsync error)"
    if partition.leader != broker:
        return _with_isr(partition, isr), f"{reason}; removed from the isr"
    election = elect_leader(partition.replicas, isr, alive, unclean_allowed=False)
    return _with_leader(partition, election.leader, isr), f"{reason}; {election.reason}"


def on_broker_alive(
    partition: Partition, alive: Collection[BrokerId], unclean_allowed: bool
) -> tuple[Partition, str] | None:
    """An offline partition regains a leader when an eligible replica is alive again."""
    if partition.leader is not None:
        return None
    election = elect_leader(partition.replicas, partition.isr, alive, unclean_allowed)
    if election.leader is None:
        return None
    isr = (election.leader,) if election.unclean else partition.isr
    changed = _with_leader(partition, election.leader, isr)
    return changed, f"partition back online: {election.reason}"


def isr_change(partition: Partition, request: AlterIsrRequest) -> tuple[Partition, str] | None:
    """AlterIsr (Kafka's AlterPartition): the partition with the ISR its leader asks for;
    None when it is already that.

    Raises STALE_EPOCH (retriable: the leader refreshes its assignment on its next
    heartbeat) unless the sender is the current leader with both current epochs, and
    INVALID_REQUEST for an ISR outside the replicas or without the leader.
    """
    label = f"{partition.topic}-{partition.partition}"
    if (
        partition.leader != request.broker_id
        or partition.leader_epoch != request.leader_epoch
        or partition.partition_epoch != request.partition_epoch
    ):
        raise RetriableError(
            f"alter isr for {label} from broker {request.broker_id} at leader_epoch "
            f"{request.leader_epoch} partition_epoch {request.partition_epoch} is stale: leader "
            f"is {partition.leader} at leader_epoch {partition.leader_epoch} partition_epoch "
            f"{partition.partition_epoch}",
            code=ErrorCode.STALE_EPOCH,
            topic=partition.topic,
            partition=partition.partition,
        )
    isr = tuple(dict.fromkeys(request.isr))
    if len(isr) != len(request.isr):
        raise InvalidRequestError(f"isr {request.isr} for {label} lists a broker twice")
    if request.broker_id not in isr:
        raise InvalidRequestError(f"isr {request.isr} for {label} must contain the leader")
    outside = [b for b in isr if b not in partition.replicas]
    if outside:
        raise InvalidRequestError(
            f"isr {request.isr} for {label} has brokers {outside} outside the replicas "
            f"{list(partition.replicas)}"
        )
    # kept in replica order so the stored form does not depend on the leader's ordering
    ordered = tuple(b for b in partition.replicas if b in isr)
    if ordered == partition.isr:
        return None
    return _with_isr(partition, ordered), (
        f"isr changed by leader {request.broker_id} from {list(partition.isr)}"
    )


def preferred_leader(
    partition: Partition, alive: Collection[BrokerId]
) -> tuple[Partition, str] | None:
    """Move leadership back to the preferred replica ``replicas[0]`` (Kafka's preferred
    leader election) when it is alive, in the ISR and not leading; None otherwise.

    Only an in-sync replica may take over, so no acknowledged write is lost; leaders spread
    again after failovers because placement spread the preferred replicas.
    """
    preferred = partition.replicas[0]
    if partition.leader == preferred or preferred not in partition.isr or preferred not in alive:
        return None
    changed = _with_leader(partition, preferred, partition.isr)
    return changed, f"preferred leader election: broker {preferred} is back in the isr"
