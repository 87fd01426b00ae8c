"""The checker on hand-written histories: each anomaly is detected, a clean history passes."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from conveyor.chaos import checker
from conveyor.chaos.history import Op, OpType
from conveyor.chaos.schedule import FAULTS, make_schedule
from tests.chaos.histories import HistoryBuilder


class H(HistoryBuilder):
    """The stream workload's ops."""

    def send(self, process: str, value: str, outcome: OpType = "ok", at: int | None = None) -> H:
        key = value.rpartition(":")[0]
        self.add(process, "invoke", "send", {"key": key, "value": value})
        done: dict[str, Any] = {"key": key, "value": value}
        if outcome == "ok" and at is not None:
            done |= {"partition": 0, "offset": at}
        return self.add(process, outcome, "send", done)

    def poll(self, process: str, *records: tuple[int, str]) -> H:
        self.add(process, "invoke", "poll")
        rows = [[0, offset, value.rpartition(":")[0], value] for offset, value in records]
        return self.add(process, "ok", "poll", {"records": rows})


def log(*values: str) -> dict[int, list[tuple[int, str | None, str | None]]]:
    return {0: [(i, v.rpartition(":")[0], v) for i, v in enumerate(values)]}


def at(*pairs: tuple[int, str]) -> dict[int, list[tuple[int, str | None, str | None]]]:
    """A final log with explicit offsets."""
    return {0: [(o, v.rpartition(":")[0], v) for o, v in pairs]}


def sends(*values: str, offsets: bool = True) -> H:
    h = H()
    for i, value in enumerate(values):
        h.send("producer-0", value, at=i if offsets else None)
    return h


def clean() -> tuple[H, dict[int, list[tuple[int, str | None, str | None]]]]:
    h = H().send("producer-0", "k:0", at=0).send("producer-0", "k:1", at=1)
    h.send("producer-0", "k:2", at=2)
    h.poll("consumer-0.0", (0, "k:0"), (1, "k:1")).poll("consumer-0.0", (2, "k:2"))
    return h, log("k:0", "k:1", "k:2")


def only(result: checker.Result, anomaly: str) -> None:
    """``anomaly`` is counted, every other safety count is 0, and an example is kept."""
    others = {n: c for n, c in result.counts.items() if n != anomaly and n in checker.SAFETY}
    assert result.counts[anomaly] >= 1, result.counts
    assert not any(others.values()), others
    assert any(e.anomaly == anomaly and e.op_indexes for e in result.examples)
    assert not result.valid


def test_a_clean_history_is_valid() -> None:
    h, final = clean()
    result = checker.check(h.ops, final)
    assert result.valid, result.counts
    assert result.counts == dict.fromkeys(checker.SAFETY + checker.REPORTED, 0)
    assert result.sends == {"ok": 3, "fail": 0, "info": 0}
    assert result.availability == 1.0


def test_lost_an_acknowledged_write_missing_from_the_final_read() -> None:
    h = sends("k:0", "k:1", "k:2")
    only(checker.check(h.ops, at((0, "k:0"), (1, "k:1"))), "lost")


def test_an_indefinite_write_may_be_missing_or_present() -> None:
    h, final = clean()
    h.send("producer-0", "k:3", outcome="info")
    assert checker.check(h.ops, final).valid
    assert checker.check(h.ops, log("k:0", "k:1", "k:2", "k:3")).valid


def test_aborted_read_g1a_a_definitely_failed_write_becomes_visible() -> None:
    h, _ = clean()
    h.send("producer-0", "k:3", outcome="fail")
    only(checker.check(h.ops, log("k:0", "k:1", "k:2", "k:3")), "aborted-read")


def test_aborted_read_g1a_seen_only_by_a_poll() -> None:
    h, final = clean()
    h.send("producer-0", "k:3", outcome="fail").poll("consumer-0.0", (3, "k:3"))
    result = checker.check(h.ops, final)
    assert result.counts["aborted-read"] == 1
    assert result.counts["stale-read"] == 1  # offset 3 is not in the final log either


def test_inconsistent_offsets_ack_and_log_disagree() -> None:
    h = H().send("producer-0", "k:0", at=0).send("producer-0", "k:1", at=0)
    only(checker.check(h.ops, log("k:0", "k:1")), "inconsistent-offsets")


def test_inconsistent_offsets_poll_and_log_disagree() -> None:
    h = H().send("producer-0", "k:0", at=0).send("producer-0", "k:1", at=1)
    h.poll("consumer-0.0", (0, "k:1"))
    only(checker.check(h.ops, log("k:0", "k:1")), "inconsistent-offsets")


def test_poll_skip_a_consumer_jumps_over_offsets_in_the_log() -> None:
    h = H().send("producer-0", "k:0", at=0).send("producer-0", "k:1", at=1)
    h.send("producer-0", "k:2", at=2).poll("consumer-0.0", (0, "k:0")).poll(
        "consumer-0.0", (2, "k:2")
    )
    only(checker.check(h.ops, log("k:0", "k:1", "k:2")), "poll-skip")


def test_nonmonotonic_poll_a_consumer_goes_back() -> None:
    h, final = clean()
    h.poll("consumer-0.0", (1, "k:1"))
    only(checker.check(h.ops, final), "nonmonotonic-poll")


def test_a_rebalance_or_a_new_incarnation_may_go_back() -> None:
    h, final = clean()
    h.add("consumer-0.0", "ok", "rebalance").poll("consumer-0.0", (1, "k:1"), (2, "k:2"))
    h.poll("consumer-0.1", (0, "k:0"))  # restarted member resumes from an older commit
    result = checker.check(h.ops, final)
    assert result.valid, result.counts
    assert result.counts["redelivered"] == 1  # k:0 again, to the member's next incarnation


def test_duplicated_the_same_value_stored_twice() -> None:
    h = sends("k:0", "k:1", "k:2", offsets=False)
    final = at((0, "k:0"), (1, "k:1"), (2, "k:1"), (3, "k:2"))
    only(checker.check(h.ops, final), "duplicated")


def test_reordered_per_key_log_order_differs_from_ack_order() -> None:
    h = sends("k:0", "k:1", "k:2", offsets=False)
    only(checker.check(h.ops, log("k:0", "k:2", "k:1")), "reordered")


def test_different_keys_may_interleave() -> None:
    h = H().send("producer-0", "a:0", at=0).send("producer-1", "b:0", at=1)
    assert checker.check(h.ops, log("b:0", "a:0")).counts["reordered"] == 0


def test_stale_read_a_poll_of_data_later_truncated() -> None:
    h, final = clean()
    h.send("producer-0", "k:3", outcome="info").poll("consumer-0.0", (3, "k:3"))
    only(checker.check(h.ops, final), "stale-read")


def test_double_delivery_after_the_group_committed_past_it() -> None:
    h, final = clean()
    h.add("consumer-0.0", "ok", "commit", {"offsets": {"0": 3}})
    h.poll("consumer-1.0", (0, "k:0"))
    result = checker.check(h.ops, final)
    assert result.counts["double-delivery"] == 1 and result.counts["redelivered"] == 0
    assert any(e.anomaly == "double-delivery" for e in result.examples)
    assert result.failed == ["double-delivery"]  # no consumer was crashed: must be 0


def test_double_delivery_is_only_reported_when_a_consumer_was_crashed() -> None:
    h, final = clean()
    fault = {"id": "0:kill-consumer", "fault": "kill-consumer", "target": 0}
    h.add("nemesis", "ok", "fault", fault)
    h.add("consumer-0.0", "ok", "commit", {"offsets": {"0": 3}})
    h.poll("consumer-1.0", (0, "k:0"))
    result = checker.check(h.ops, final)
    assert result.counts["double-delivery"] == 1 and result.valid


def test_redelivery_before_any_commit_covered_it_is_explained() -> None:
    h, final = clean()
    h.add("consumer-0.0", "ok", "commit", {"offsets": {"0": 0}})  # commits nothing read
    h.poll("consumer-0.1", (0, "k:0"))  # the restarted member reads it again
    result = checker.check(h.ops, final)
    assert result.counts["double-delivery"] == 0 and result.counts["redelivered"] == 1


def test_a_commit_during_the_poll_does_not_count_against_it() -> None:
    h, final = clean()
    h.add("consumer-1.0", "invoke", "poll")
    h.add("consumer-0.0", "ok", "commit", {"offsets": {"0": 3}})
    h.add("consumer-1.0", "ok", "poll", {"records": [[0, 0, "k", "k:0"]]})
    assert checker.check(h.ops, final).counts["double-delivery"] == 0


def test_replica_divergence_two_replicas_differ_at_an_offset() -> None:
    h, final = clean()
    good = checker.Replica(0, 1, final[0])
    bad = checker.Replica(0, 2, [(0, "k", "k:0"), (1, "k", "k:9")])
    result = checker.check(h.ops, final, [good, bad])
    assert result.counts["replica-divergence"] == 1 and not result.valid


def test_a_shorter_replica_is_only_behind() -> None:
    h, final = clean()
    replicas = [checker.Replica(0, 1, final[0]), checker.Replica(0, 2, final[0][:1])]
    assert checker.check(h.ops, final, replicas).valid


def test_corrupt_replica_a_batch_still_failing_its_crc() -> None:
    h, final = clean()
    bad = checker.Replica(0, 2, final[0][:1], ["00000000000000000000.log position 80: crc"])
    result = checker.check(h.ops, final, [checker.Replica(0, 1, final[0]), bad])
    assert result.counts["corrupt-replica"] == 1 and not result.valid


def test_unseen_is_reported_when_no_consumer_polled_an_acknowledged_write() -> None:
    h = H().send("producer-0", "k:0", at=0)
    result = checker.check(h.ops, log("k:0"))
    assert result.valid and result.counts["unseen"] == 1


def test_availability_and_recovery_after_heal() -> None:
    fault = {"id": "0:kill", "fault": "kill", "target": 1}
    h = H().send("producer-0", "k:0", at=0)
    h.add("nemesis", "invoke", "fault", fault).add("nemesis", "ok", "fault", fault)
    h.send("producer-0", "k:1", outcome="info")
    h.add("nemesis", "invoke", "heal", fault).add("nemesis", "ok", "heal", fault)
    h.send("producer-0", "k:2", at=1)
    result = checker.check(h.ops, log("k:0", "k:2"))
    assert result.valid
    assert result.availability == pytest.approx(2 / 3)
    assert result.availability_during_faults == 0.0
    assert result.recovery_ms == [2.0]  # heal ok at op 8, the next ack at op 10
    assert result.stall_ms == {"0:kill": 4.0}  # no ack from the fault (op 3) to the heal (7)


def test_context_shows_the_anomaly_and_the_fault_before_it() -> None:
    fault = {"id": "0:kill", "fault": "kill", "target": 1}
    h = H().add("nemesis", "ok", "fault", fault)
    for i in range(20):
        h.send("producer-0", f"k:{i}", at=i)
    result = checker.check(h.ops, at(*((i, f"k:{i}") for i in range(20) if i != 10)))
    (example,) = result.examples
    shown = checker.context(h.ops, example)
    assert h.ops[0] in shown and len(shown) < 12
    assert any(op.value.get("value") == "k:10" for op in shown)


def test_the_schedule_is_a_pure_function_of_the_seed() -> None:
    args = {"brokers": 3, "partitions": 4, "consumers": 2}
    first = make_schedule(42, 200, FAULTS, **args)
    assert first == make_schedule(42, 200, FAULTS, **args)
    assert first != make_schedule(43, 200, FAULTS, **args)
    assert {e.kind for e in first} == set(FAULTS)  # each fault at least once
    assert all(e.start_s + e.hold_s <= 200 for e in first)
    assert all(a.start_s + a.hold_s < b.start_s for a, b in itertools.pairwise(first))


def test_the_summary_names_each_anomaly_and_shows_its_history() -> None:
    from conveyor.chaos.runner import RunReport, render

    h = H().send("producer-0", "k:0", at=0)
    result = checker.check(h.ops, log())
    text = render(RunReport(7, 10.0, ("kill",), [], result, h.ops))
    assert "[lost] k:0 acknowledged but not in the final read" in text
    assert "producer-0" in text and "seed 7: INVALID" in text


def csends(*items: tuple[str, OpType, int | None]) -> H:
    """Sends to the compacted topic (ops ``csend``): (value, outcome, acknowledged offset)."""
    h = H()
    for value, outcome, offset in items:
        key = value.rpartition(":")[0]
        h.add("compactor-0", "invoke", "csend", {"key": key, "value": value})
        done: dict[str, Any] = {"key": key, "value": value}
        if offset is not None:
            done |= {"partition": 0, "offset": offset}
        h.add("compactor-0", outcome, "csend", done)
    return h


def test_compaction_may_remove_all_but_the_latest_value_per_key() -> None:
    h, final = clean()
    h.ops += csends(("c:0", "ok", 0), ("d:1", "ok", 1), ("c:2", "ok", 2), ("c:3", "info", None)).ops
    for i, op in enumerate(h.ops):
        h.ops[i] = Op(i, op.process, op.type, op.f, op.value, time_ns=i * 1_000_000)
    assert checker.check(h.ops, final, compacted=at((1, "d:1"), (2, "c:2"))).valid
    # an unacknowledged later send that landed counts as newer
    assert checker.check(h.ops, final, compacted=at((1, "d:1"), (5, "c:3"))).valid


@pytest.mark.parametrize(
    "compacted",
    [
        at((1, "d:1")),  # c's latest acknowledged value is gone
        at((0, "c:0"), (1, "d:1")),  # only an older value of c is left
        at((1, "d:1"), (2, "c:0")),  # a value at another offset than acknowledged
    ],
)
def test_compaction_lost_the_latest_acknowledged_value(compacted: checker.FinalReads) -> None:
    h = csends(("c:0", "ok", 0), ("d:1", "ok", 1), ("c:2", "ok", 2))
    only(checker.check(h.ops, {0: []}, compacted=compacted), "compaction-lost")
