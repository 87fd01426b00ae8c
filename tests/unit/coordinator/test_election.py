from __future__ import annotations

import pytest

from conveyor.coordinator.election import (
    elect_leader,
    on_broker_alive,
    on_broker_dead,
    on_replica_failed,
)
from conveyor.coordinator.model import Partition
from conveyor.protocol.messages import BrokerId, Epoch


def b(*numbers: int) -> tuple[BrokerId, ...]:
    return tuple(BrokerId(n) for n in numbers)


def partition(
    replicas: tuple[int, ...], leader: int | None, isr: tuple[int, ...], epoch: int = 3
) -> Partition:
    return Partition(
        "t", 0, b(*replicas), None if leader is None else BrokerId(leader), Epoch(epoch), b(*isr)
    )


@pytest.mark.parametrize(
    ("replicas", "isr", "alive", "unclean", "expected"),
    [
        ((1, 2, 3), (1, 2, 3), (1, 2, 3), False, (1, False)),  # preferred leader first
        ((1, 2, 3), (2, 3), (1, 2, 3), False, (2, False)),  # 1 is out of sync
        ((1, 2, 3), (1, 3), (2, 3), False, (3, False)),  # 1 dead, 2 out of sync
        ((1, 2, 3), (1,), (2, 3), False, (None, False)),  # only the dead one is in sync
        ((1, 2, 3), (1,), (2, 3), True, (2, True)),  # ... unless unclean is allowed
        ((1,), (1,), (), True, (None, False)),  # nobody alive at all
    ],
)
def test_elect_leader(
    replicas: tuple[int, ...],
    isr: tuple[int, ...],
    alive: tuple[int, ...],
    unclean: bool,
    expected: tuple[int | None, bool],
) -> None:
    election = elect_leader(b(*replicas), b(*isr), set(b(*alive)), unclean)
    assert (election.leader, election.unclean) == expected
    assert election.reason


def test_rf1_leader_death_takes_the_partition_offline_and_bumps_the_epoch() -> None:
    change = on_broker_dead(partition((1,), 1, (1,)), BrokerId(1), set(), False)
    assert change is not None
    changed, reason = change
    assert (changed.leader, changed.leader_epoch, changed.isr) == (None, 4, b(1))
    assert "leader 1 died" in reason


def test_leader_death_fails_over_to_the_next_in_sync_replica() -> None:
    change = on_broker_dead(partition((1, 2, 3), 1, (1, 2, 3)), BrokerId(1), set(b(2, 3)), False)
    assert change is not None
    assert (change[0].leader, change[0].leader_epoch, change[0].isr) == (2, 4, b(2, 3))


def test_follower_death_shrinks_the_isr_without_a_new_epoch() -> None:
    change = on_broker_dead(partition((1, 2), 1, (1, 2)), BrokerId(2), set(b(1)), False)
    assert change is not None
    assert (change[0].leader, change[0].leader_epoch, change[0].isr) == (1, 3, b(1))


def test_unrelated_broker_death_changes_nothing() -> None:
    assert on_broker_dead(partition((1, 2), 1, (1, 2)), BrokerId(7), set(b(1, 2)), False) is None


def test_a_returning_last_isr_member_leads_again_with_a_new_epoch() -> None:
    offline = partition((1,), None, (1,), epoch=4)
    change = on_broker_alive(offline, set(b(1)), False)
    assert change is not None
    assert (change[0].leader, change[0].leader_epoch) == (1, 5)


def test_a_returning_out_of_sync_replica_waits_unless_unclean_is_allowed() -> None:
    offline = partition((1, 2), None, (1,), epoch=4)
    assert on_broker_alive(offline, set(b(2)), False) is None
    change = on_broker_alive(offline, set(b(2)), True)
    assert change is not None
    assert (change[0].leader, change[0].isr, change[0].leader_epoch) == (2, b(2), 5)


def test_a_led_partition_is_left_alone_when_a_broker_returns() -> None:
    assert on_broker_alive(partition((1, 2), 1, (1, 2)), set(b(1, 2)), False) is None


def test_a_broker_restarting_within_its_session_loses_leadership_and_isr() -> None:
    """A new incarnation may have lost an unsynced tail: it must not lead at the same epoch
    (found by the chaos harness: replica divergence, seed 11)."""
    from conveyor.coordinator import state as core
    from conveyor.protocol.messages import BrokerHeartbeat, BrokerId
    from tests.unit.coordinator.helpers import INTERVAL_MS, with_brokers, with_topic

    def beat(broker: int, incarnation: str) -> BrokerHeartbeat:
        return BrokerHeartbeat(
            broker_id=BrokerId(broker),
            url=f"http://127.0.0.1:{9000 + broker}",
            incarnation=incarnation,
        )

    state = with_topic(with_brokers([1, 2, 3]), "t", partitions=3, replication_factor=3)
    for broker in (1, 2, 3):
        state = core.handle_heartbeat(state, beat(broker, f"first-{broker}"), 1, INTERVAL_MS).state
    led = [p for p in state.partitions.values() if p.leader == 1]
    assert led
    # the same incarnation again: nothing changes
    same = core.handle_heartbeat(state, beat(1, "first-1"), 2, INTERVAL_MS).state
    assert same.partitions == state.partitions
    restarted = core.handle_heartbeat(state, beat(1, "second-1"), 3, INTERVAL_MS).state
    for key, before in state.partitions.items():
        after = restarted.partitions[key]
        assert 1 not in after.isr
        if before.leader == 1:
            assert after.leader in (2, 3)
            assert after.leader_epoch == before.leader_epoch + 1
    # the sole in-sync replica keeps its partition (it holds the only copy)
    solo = with_topic(restarted, "solo", partitions=1, replication_factor=1)
    solo = core.handle_heartbeat(solo, beat(1, "second-1"), 4, INTERVAL_MS).state
    solo_partition = next(p for p in solo.partitions.values() if p.topic == "solo")
    owner = solo_partition.leader
    assert owner is not None
    again = core.handle_heartbeat(solo, beat(owner, "third"), 5, INTERVAL_MS).state
    kept = next(p for p in again.partitions.values() if p.topic == "solo")
    assert kept.leader == owner
    # ...at a new epoch: its followers (none here) must not keep what it may have lost
    assert kept.leader_epoch == solo_partition.leader_epoch + 1


def test_a_failed_leader_log_hands_leadership_to_the_next_in_sync_replica() -> None:
    change = on_replica_failed(partition((1, 2, 3), 1, (1, 2, 3)), BrokerId(1), set(b(2, 3)))
    assert change is not None
    changed, reason = change
    assert (changed.leader, changed.leader_epoch, changed.isr) == (2, 4, b(2, 3))
    assert changed.partition_epoch == 1 and "log failed" in reason


def test_a_failed_follower_log_leaves_the_isr_without_a_new_leader_epoch() -> None:
    change = on_replica_failed(partition((1, 2, 3), 1, (1, 2, 3)), BrokerId(3), set(b(1, 2)))
    assert change is not None
    assert (change[0].leader, change[0].leader_epoch, change[0].isr) == (1, 3, b(1, 2))


@pytest.mark.parametrize(
    ("isr", "alive", "why"),
    [
        ((1,), (2, 3), "the last in-sync replica keeps the partition"),
        ((1, 2), (3,), "its only in-sync peer is dead: no leader would be worse"),
        ((2, 3), (2, 3), "not in the isr: nothing to take away"),
    ],
)
def test_a_failed_log_changes_nothing_when_no_in_sync_replica_could_take_over(
    isr: tuple[int, ...], alive: tuple[int, ...], why: str
) -> None:
    leader = 1 if 1 in isr else 2
    unchanged = partition((1, 2, 3), leader, isr)
    assert on_replica_failed(unchanged, BrokerId(1), set(b(*alive))) is None, why


def test_a_heartbeat_reporting_a_failed_log_moves_leadership_level_triggered() -> None:
    from conveyor.coordinator import state as core
    from conveyor.protocol.messages import BrokerHeartbeat, PartitionReport
    from tests.unit.coordinator.helpers import INTERVAL_MS, with_brokers, with_topic

    def beat(broker: int, failed: set[tuple[str, int]]) -> BrokerHeartbeat:
        return BrokerHeartbeat(
            broker_id=BrokerId(broker),
            url=f"http://127.0.0.1:{9000 + broker}",
            partitions=[
                PartitionReport(
                    topic=p.topic,
                    partition=p.partition,
                    leader_epoch=p.leader_epoch,
                    log_start_offset=0,
                    log_end_offset=0,
                    high_watermark=0,
                    log_failed=(p.topic, p.partition) in failed,
                )
                for p in state.partitions.values()
                if broker in p.replicas
            ],
        )

    state = with_topic(with_brokers([1, 2, 3]), "t", partitions=3, replication_factor=3)
    led = next(p for p in state.partitions.values() if p.leader == 1)
    failed = {(led.topic, led.partition)}
    after = core.handle_heartbeat(state, beat(1, failed), 1, INTERVAL_MS)
    moved = after.state.partitions[led.key]
    assert moved.leader in (2, 3) and 1 not in moved.isr
    assert moved.leader_epoch == led.leader_epoch + 1
    assert any("log failed" in d for d in after.decisions)
    others = [k for k in state.partitions if k != led.key]
    assert all(after.state.partitions[k] == state.partitions[k] for k in others)
    # the same report again: already out of the isr, nothing more changes
    again = core.handle_heartbeat(after.state, beat(1, failed), 2, INTERVAL_MS)
    assert again.state.partitions == after.state.partitions


def test_the_sole_in_sync_replica_restarted_leads_at_a_new_epoch() -> None:
    """Found by the simulation (seed 14254): every broker crashed, the sole in-sync leader
    came back with a shorter log and led at the same epoch; followers kept offsets it had
    lost. A new epoch makes them truncate."""
    from conveyor.coordinator.election import on_broker_restarted

    sole = partition((1, 2, 3), 1, (1,))
    change = on_broker_restarted(sole, BrokerId(1), set(b(2, 3)), False)
    assert change is not None
    after, reason = change
    assert (after.leader, after.isr, after.leader_epoch) == (1, b(1), sole.leader_epoch + 1)
    assert "new epoch" in reason
    # a follower that restarted leaves the ISR; a leader hands over
    follower = on_broker_restarted(
        partition((1, 2, 3), 1, (1, 2)), BrokerId(2), set(b(1, 3)), False
    )
    assert follower is not None and follower[0].isr == b(1) and follower[0].leader == 1
    leader = on_broker_restarted(partition((1, 2, 3), 1, (1, 2)), BrokerId(1), set(b(2, 3)), False)
    assert leader is not None and leader[0].leader == 2 and leader[0].leader_epoch == 4
    # the sole in-sync replica that does not lead (offline partition): nothing to do here
    assert on_broker_restarted(partition((1, 2, 3), None, (1,)), BrokerId(1), set(), False) is None
