"""Replication control transitions: ``(state, event, now_ms) -> Result``. Pure.

The decisions of issue #4 that change partitions outside topic creation and broker expiry
(those stay in ``state.py``): the leader's ISR changes (AlterIsr), producer ids, draining a
broker, and the coordinator's periodic ``maintain`` tick, which is level-triggered: it
looks at the whole state and returns the next steps (preferred leader elections, replica
restoration and drains, see ``reassignment.plan_reassignments``), so a tick that is lost,
or a coordinator that restarts mid-move, just picks the moves up where the state says.
"""

from __future__ import annotations

from dataclasses import replace

from conveyor.coordinator import views
from conveyor.coordinator.election import isr_change, preferred_leader
from conveyor.coordinator.model import (
    BrokerRecord,
    ClusterState,
    Partition,
    PartitionRecord,
    ProducerRecord,
    Record,
    apply,
)
from conveyor.coordinator.reassignment import (
    holds_nothing,
    leaving_brokers,
    plan_reassignments,
)
from conveyor.coordinator.state import Result, make_result, partition_decision
from conveyor.coordinator.validation import validate_broker_id
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import (
    AlterIsrRequest,
    AlterIsrResponse,
    BrokerId,
    DecommissionResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
)

PRODUCER_EPOCH_MAX = 2**15 - 1  # Kafka's: a short on the wire; past it a new id is handed out


def alter_isr(state: ClusterState, request: AlterIsrRequest) -> Result[AlterIsrResponse]:
    """The leader's ISR change, fenced on both epochs (see ``election.isr_change``)."""
    topic = views.require_topic(state, request.topic)
    views.require_partition(topic, request.partition)
    partition = state.partitions[(request.topic, request.partition)]
    change = isr_change(partition, request)
    records: list[Record] = []
    decisions: list[str] = []
    if change is not None:
        records.append(PartitionRecord(change[0]))
        decisions.append(partition_decision(change[0], change[1]))
    new_state = apply(state, records)
    current = new_state.partitions[partition.key]
    reply = AlterIsrResponse(assignment=views.replica_assignment(new_state, current))
    return make_result(new_state, records, reply, decisions)


def init_producer_id(
    state: ClusterState, request: InitProducerIdRequest
) -> Result[InitProducerIdResponse]:
    """A new id (one more than any handed out, so ids are never reused, even after a
    restart) at epoch 0; or, with a known id and its current epoch, the same id with the
    epoch bumped, which fences the previous incarnation of that producer."""
    producer_id, epoch = request.producer_id, request.producer_epoch
    if producer_id == -1:
        new_id, new_epoch = max(state.producers, default=-1) + 1, 0
    else:
        current = state.producers.get(producer_id)
        if current is None:
            raise InvalidRequestError(
                f"unknown producer id {producer_id}", code=ErrorCode.INVALID_REQUEST
            )
        if epoch != current:
            raise InvalidRequestError(
                f"producer {producer_id} epoch {epoch} is not the current epoch {current}",
                code=ErrorCode.STALE_EPOCH,
            )
        new_id, new_epoch = producer_id, current + 1
        if new_epoch > PRODUCER_EPOCH_MAX:
            new_id, new_epoch = max(state.producers) + 1, 0
    records: list[Record] = [ProducerRecord(new_id, new_epoch)]
    reply = InitProducerIdResponse(producer_id=new_id, producer_epoch=new_epoch)
    decision = f"producer id {new_id} at epoch {new_epoch} (asked: {producer_id}/{epoch})"
    return make_result(apply(state, records), records, reply, [decision])


def decommission_broker(state: ClusterState, broker_id: BrokerId) -> Result[DecommissionResponse]:
    """Mark a broker as draining: it takes no new replicas and ``maintain`` moves its
    replicas away the safe way. Idempotent."""
    validate_broker_id(broker_id)
    broker = state.brokers.get(broker_id)
    if broker is None:
        raise InvalidRequestError(
            f"unknown broker {broker_id}", code=ErrorCode.INVALID_REQUEST, broker_id=broker_id
        )
    records: list[Record] = []
    decisions: list[str] = []
    if not broker.decommissioning:
        records.append(BrokerRecord(replace(broker, decommissioning=True)))
        decisions.append(f"broker {broker_id} decommissioning: moving its replicas away")
    new_state = apply(state, records)
    return make_result(new_state, records, decommission_status(new_state, broker_id), decisions)


def decommission_status(state: ClusterState, broker_id: BrokerId) -> DecommissionResponse:
    held = sum(1 for p in state.partitions.values() if broker_id in p.replicas)
    led = sum(1 for p in state.partitions.values() if p.leader == broker_id)
    broker = state.brokers.get(broker_id)
    return DecommissionResponse(
        broker_id=broker_id,
        decommissioning=broker is not None and broker.decommissioning,
        replica_count=held,
        leader_count=led,
        done=holds_nothing(state, broker_id),
    )


def maintain(
    state: ClusterState, now_ms: int, restore_delay_ms: int, moves_max: int
) -> Result[None]:
    """One tick: replica moves (restoration after ``restore_delay_ms`` of death, drains),
    then preferred leader elections on what the moves left."""
    draining = [b.broker_id for b in state.brokers.values() if b.decommissioning]
    leaving = leaving_brokers(state.brokers, draining, now_ms, restore_delay_ms)
    rf = {name: topic.replication_factor for name, topic in state.topics.items()}
    changed: dict[tuple[str, int], tuple[Partition, list[str]]] = {}
    for partition, reason in plan_reassignments(state, rf, leaving, moves_max):
        changed[partition.key] = (partition, [reason])
    alive = set(state.alive_broker_ids())
    for key, original in state.partitions.items():
        current, reasons = changed.get(key, (original, []))
        if current.replicas[0] in leaving:
            continue  # its preferred replica is going away: leadership stays where it is
        election = preferred_leader(current, alive)
        if election is not None:
            changed[key] = (election[0], [*reasons, election[1]])
    records: list[Record] = []
    decisions: list[str] = []
    for key in sorted(changed):
        partition, reasons = changed[key]
        records.append(PartitionRecord(partition))
        decisions.append(partition_decision(partition, "; ".join(reasons)))
    return make_result(apply(state, records), records, None, decisions)
