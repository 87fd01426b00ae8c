"""Replica reassignment: restoring a dead broker's replicas, drains, rebalancing. Pure.

Modelled on Kafka's ``ReplicationControlManager`` and ``PartitionChangeBuilder``.
ISR changes and elections are in ``election.py``; the transitions that apply these plans
are in ``control.py``.

* **Reassignment** (adding/removing replicas, KIP-455): a replica that must go (its broker
  has been dead longer than the restore delay, or is being decommissioned) is replaced by
  first *adding* a replica on another live broker (``replicas`` grows beyond the RF, the
  new replica starts outside the ISR), waiting until the leader reports it in sync through
  AlterIsr, and only then removing the old one (moving leadership first if it led). So a
  planned move never leaves fewer in-sync copies than before.

Worked example: RF 3, replicas [1, 2, 3], isr [2, 3], leader 2; broker 1 dead for longer
than the restore delay; live brokers 2, 3, 4. ``plan_reassignments`` adds 4: replicas
[1, 2, 3, 4], isr [2, 3], partition epoch bumped (the leader, and so the leader epoch, is
unchanged). Leader 2 sees 4 caught up and sends AlterIsr isr [2, 3, 4]. The next plan
drops 1: replicas [2, 3, 4], isr [2, 3, 4].
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from conveyor.coordinator.model import Broker, ClusterState, Partition
from conveyor.protocol.messages import BrokerId, Epoch


def leaving_brokers(
    brokers: Mapping[BrokerId, Broker],
    decommissioning: Collection[BrokerId],
    now_ms: int,
    restore_delay_ms: int,
) -> set[BrokerId]:
    """Brokers whose replicas must move elsewhere: those being decommissioned and those dead
    for longer than ``restore_delay_ms`` (``last_heartbeat_ms`` of a dead broker is when it
    was last heard from)."""
    gone = {
        b.broker_id
        for b in brokers.values()
        if not b.alive and now_ms - b.last_heartbeat_ms > restore_delay_ms
    }
    return gone | set(decommissioning)


def plan_reassignments(
    state: ClusterState,
    replication_factor: Mapping[str, int],
    leaving: Collection[BrokerId],
    moves_max: int,
) -> list[tuple[Partition, str]]:
    """The next steps of moving replicas off ``leaving`` brokers and of rebalancing, at most
    ``moves_max`` partitions with a move in flight (holding more replicas than its RF).

    Per partition, level-triggered (re-running it on its own output changes nothing more
    until the leader reports the new replica in sync):

    1. a move in flight whose staying replicas are all in the ISR drops the replicas it
       replaces (moving leadership first to the first in-sync staying replica);
    2. a partition holding a leaving replica and fewer than RF staying replicas gets one
       new replica on the live, staying broker holding the fewest replicas (ties: lowest
       id), in the leaving replica's slot, so the preferred leader order is kept;
    3. when nothing has to leave, ``plan_rebalance`` fills what is left of the budget.
    """
    alive = set(state.alive_broker_ids()) - set(leaving)
    load = Counter(b for p in state.partitions.values() for b in p.replicas)
    steps: list[tuple[Partition, str]] = []
    in_flight = sum(
        1 for p in state.partitions.values() if len(p.replicas) > replication_factor[p.topic]
    )
    for partition in sorted(state.partitions.values(), key=lambda p: p.key):
        rf = replication_factor[partition.topic]
        going = set(leaving) | set(partition.removing)
        staying = [b for b in partition.replicas if b not in going]
        if len(staying) == len(partition.replicas):
            continue
        if len(staying) >= rf:
            finished = _finish_move(partition, staying)
            if finished is not None:
                steps.append(finished)
            continue
        if len(partition.replicas) > rf or in_flight >= moves_max:
            continue  # a replacement is already being copied, or the budget is spent
        candidates = sorted((load[b], b) for b in alive if b not in partition.replicas)
        if not candidates:
            continue  # no broker to move to: the partition stays under-replicated
        target = candidates[0][1]
        source = next(b for b in partition.replicas if b in going)
        load[target] += 1
        in_flight += 1
        steps.append((_add_replica(partition, source, target), f"replacing broker {source}"))
    if not leaving and in_flight < moves_max:
        steps.extend(plan_rebalance(state, replication_factor, moves_max - in_flight))
    return steps


def _add_replica(partition: Partition, source: BrokerId, target: BrokerId) -> Partition:
    """Start a move: ``target`` takes ``source``'s slot (so it becomes the preferred
    leader when ``source`` was) and ``source`` stays, at the end, until ``target`` is in
    sync. The ISR and the leader are unchanged: a move never lowers the in-sync count."""
    replicas = tuple(target if b == source else b for b in partition.replicas)
    return replace(
        partition,
        replicas=(*replicas, source),
        removing=tuple(dict.fromkeys((*partition.removing, source))),
        partition_epoch=Epoch(partition.partition_epoch + 1),
    )


def plan_rebalance(
    state: ClusterState, replication_factor: Mapping[str, int], moves_max: int
) -> list[tuple[Partition, str]]:
    """Moves that bring every live broker's replica count within one of the mean.

    Greedy, deterministic: while the fullest live broker holds at least two more replicas
    than the emptiest, move one replica of a fully in-sync partition (ISR == replicas,
    no move in flight) from the fullest to the emptiest, preferring a partition the fullest
    is the preferred leader of when the emptiest leads less, so leader shares even out too.
    A balanced cluster (spread <= 1) gets no move: no churn.
    """
    live = [b for b in state.alive_broker_ids() if not state.brokers[b].decommissioning]
    if len(live) < 2 or moves_max <= 0:
        return []
    load = Counter({b: 0 for b in live})
    leads = Counter({b: 0 for b in live})
    for p in state.partitions.values():
        load.update(b for b in p.replicas if b in load)
        if p.replicas[0] in leads:
            leads[p.replicas[0]] += 1
    steps: list[tuple[Partition, str]] = []
    moved: set[tuple[str, int]] = set()
    while len(steps) < moves_max:
        fullest = max(live, key=lambda b: (load[b], leads[b], -b))
        emptiest = min(live, key=lambda b: (load[b], leads[b], b))
        if load[fullest] - load[emptiest] < 2:
            break
        choice = _movable(
            state,
            replication_factor=replication_factor,
            source=fullest,
            target=emptiest,
            moved=moved,
            leads=leads,
        )
        if choice is None:
            break
        moved.add(choice.key)
        load[fullest] -= 1
        load[emptiest] += 1
        if choice.replicas[0] == fullest:
            leads[fullest] -= 1
            leads[emptiest] += 1
        reason = f"rebalance: moving a replica from broker {fullest} to broker {emptiest}"
        steps.append((_add_replica(choice, fullest, emptiest), reason))
    return steps


def _movable(
    state: ClusterState,
    *,
    replication_factor: Mapping[str, int],
    source: BrokerId,
    target: BrokerId,
    moved: Collection[tuple[str, int]],
    leads: Mapping[BrokerId, int],
) -> Partition | None:
    want_leader = leads[source] > leads[target]
    best: Partition | None = None
    for p in sorted(state.partitions.values(), key=lambda p: p.key):
        if (
            p.key in moved
            or source not in p.replicas
            or target in p.replicas
            or p.removing
            or len(p.replicas) != replication_factor[p.topic]
            or set(p.isr) != set(p.replicas)
            or p.leader is None
        ):
            continue
        if (p.replicas[0] == source) == want_leader:
            return p
        best = best or p
    return best


def _finish_move(partition: Partition, staying: Sequence[BrokerId]) -> tuple[Partition, str] | None:
    in_sync = [b for b in staying if b in partition.isr]
    if len(in_sync) < len(staying):
        return None  # a new replica is still catching up
    leader = partition.leader
    leader_epoch = partition.leader_epoch
    if leader is not None and leader not in staying:
        leader = in_sync[0]
        leader_epoch = Epoch(leader_epoch + 1)
    changed = replace(
        partition,
        replicas=tuple(staying),
        isr=tuple(in_sync),
        leader=leader,
        leader_epoch=leader_epoch,
        partition_epoch=Epoch(partition.partition_epoch + 1),
        removing=(),
    )
    return changed, f"removed replica(s) {_gone(partition, staying)}: replacement in sync"


def _gone(partition: Partition, staying: Sequence[BrokerId]) -> list[BrokerId]:
    return [b for b in partition.replicas if b not in staying]


def holds_nothing(state: ClusterState, broker_id: BrokerId) -> bool:
    return not any(broker_id in p.replicas for p in state.partitions.values())
