"""The queue checker on hand-built histories: one clean run passes, each anomaly is found.

Partition 0 of the workload topic holds key ``k``'s records ``k:0`` .. ``k:4`` at offsets
0..4 (sequence numbers chosen by hand; the checker reads acknowledgements from the
history, not from the workload's policy). Times are the history's ticks: op ``n`` at
``n`` ms, so an op's ``t0``/``t`` are its invoke/answer ticks.
"""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.chaos import queue_checker
from conveyor.chaos.history import OpType
from conveyor.chaos.queue_workload import MAX_DELIVERY_ATTEMPTS, REJECT_PREFIX, RELEASE_PREFIX
from conveyor.chaos.workload import TOPIC
from conveyor.protocol.share import (
    DLQ_HEADER_DELIVERY_COUNT,
    DLQ_HEADER_ERROR,
    DLQ_HEADER_GROUP,
    DLQ_HEADER_OFFSET,
    DLQ_HEADER_PARTITION,
    DLQ_HEADER_TOPIC,
)
from tests.chaos.histories import HistoryBuilder

ORDERED = "chaos-q-ordered"
UNORDERED = "chaos-q-unordered"
VALUES = [f"k:{i}" for i in range(5)]
FINAL = {0: [(i, "k", v) for i, v in enumerate(VALUES)]}

Row = tuple[int, int, int]  # offset, delivery count, acquisition


class H(HistoryBuilder):
    """A history builder with the workload's op shapes (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        for offset, value in enumerate(VALUES):
            self.add("producer-0", "invoke", "send", {"key": "k", "value": value})
            done = {"key": "k", "value": value, "partition": 0, "offset": offset}
            self.add("producer-0", "ok", "send", done)

    def receive(self, member: str, group: str, *rows: Row) -> H:
        records = [[0, o, "k", VALUES[o], count, f"{TOPIC}:0:{o}:{acq}"] for o, count, acq in rows]
        value = {"group": group, "member_id": member, "records": records}
        return self.add(member, "ok", "receive", {**value, "t0": self.now - 500, "t": self.now})

    def commit(
        self, member: str, group: str, *acks: tuple[int, str, int], outcome: OpType = "ok",
        refused: tuple[int, ...] = (),
    ) -> H:  # fmt: skip
        """``acks``: (offset, type, acquisition); ``refused``: offsets the broker refused."""
        rows = [[0, o, kind, f"{TOPIC}:0:{o}:{acq}", _reason(o, kind)] for o, kind, acq in acks]
        value: dict[str, Any] = {"group": group, "acks": rows, "t0": self.now}
        self.add(member, "invoke", "commit", value)
        if outcome == "ok":
            kinds = {o: kind for o, kind, _ in acks}
            value = {
                **value,
                "refused": [[0, o, o, kinds[o], "INVALID_RECORD_STATE"] for o in refused],
            }
            value["t"] = self.now
        return self.add(member, outcome, "commit", value)

    def dead_letter(self, group: str, offset: int, count: int, error: str, **over: Any) -> H:
        headers = {
            DLQ_HEADER_GROUP: group, DLQ_HEADER_TOPIC: TOPIC, DLQ_HEADER_PARTITION: "0",
            DLQ_HEADER_OFFSET: str(offset), DLQ_HEADER_DELIVERY_COUNT: str(count),
            DLQ_HEADER_ERROR: error,
        }  # fmt: skip
        headers.update(over)
        row = [0, len(self.ops), "k", VALUES[offset], headers]
        return self.add("dlq-reader", "ok", "dlq", {"group": group, "records": [row], "t": 0})

    def end(self, ordered_start: int = 5, unordered_start: int = 5) -> H:
        self.add("dlq-reader", "ok", "dlq-end", {"caught_up": True})
        start = {ORDERED: {0: ordered_start}, UNORDERED: {0: unordered_start}}
        return self.add("harness", "ok", "drain", {"drained": True, "start": start, "end": {0: 5}})


def _reason(offset: int, kind: str) -> str | None:
    if kind == "reject":
        return REJECT_PREFIX + VALUES[offset]
    return RELEASE_PREFIX + VALUES[offset] if kind == "release" else None


def clean() -> H:
    """Both groups: k:0 accepted; k:1 released once then accepted by another member; k:2
    rejected (dead-lettered); k:3 and k:4 delivered together and accepted in order (the
    key-ordered group), or to two members (the other); k:4's first accept refused in the
    unordered group and accepted again after a redelivery."""
    h = H()
    for group, m in ((ORDERED, "queue-0.0/o0"), (UNORDERED, "queue-0.0/u0")):
        other = m[:-1] + "1"
        h.receive(m, group, (0, 1, 1), (1, 1, 1)).commit(
            m, group, (0, "accept", 1), (1, "release", 1)
        )
        h.receive(other, group, (1, 2, 2), (2, 1, 2))
        h.commit(other, group, (1, "accept", 2), (2, "reject", 2))
        h.dead_letter(group, 2, 1, REJECT_PREFIX + "k:2")
    h.receive("queue-0.0/o0", ORDERED, (3, 1, 3), (4, 1, 3))
    h.commit("queue-0.0/o0", ORDERED, (3, "accept", 3), (4, "accept", 3))
    h.receive("queue-0.0/u0", UNORDERED, (3, 1, 3)).receive("queue-0.0/u1", UNORDERED, (4, 1, 4))
    h.commit("queue-0.0/u0", UNORDERED, (3, "accept", 3))
    h.commit("queue-0.0/u1", UNORDERED, (4, "accept", 4), refused=(4,))
    h.receive("queue-0.0/u1", UNORDERED, (4, 2, 5)).commit(
        "queue-0.0/u1", UNORDERED, (4, "accept", 5)
    )
    return h.end()


def check(h: H) -> queue_checker.Result:
    return queue_checker.check(h.ops, FINAL)


def test_a_clean_history_is_valid() -> None:
    result = check(clean())
    assert result.valid, result.examples
    assert result.counts["dead-lettered"] == 2
    assert result.counts["ack-refused"] == 1
    assert result.counts["redelivered"] == 3
    assert result.counts["unsettled"] == 0


def found(h: H, anomaly: str) -> list[str]:
    result = check(h)
    assert not result.valid
    assert result.failed == [anomaly], result.examples
    return [e.description for e in result.examples if e.anomaly == anomaly]


def ordered_prefix() -> H:
    """The key-ordered group: k:0 accepted, k:1 and k:2 delivered (lock 2)."""
    h = (
        H()
        .receive("queue-0.0/o0", ORDERED, (0, 1, 1))
        .commit("queue-0.0/o0", ORDERED, (0, "accept", 1))
    )
    return h.receive("queue-0.0/o0", ORDERED, (1, 1, 2), (2, 1, 2))


def test_redelivered_after_a_confirmed_accept() -> None:
    h = (
        H()
        .receive("queue-0.0/u0", UNORDERED, (0, 1, 1))
        .commit("queue-0.0/u0", UNORDERED, (0, "accept", 1))
    )
    h.receive("queue-0.0/u1", UNORDERED, (0, 2, 2))
    assert "delivered again" in found(h, "redelivered-after-ack")[0]


def test_an_unconfirmed_accept_may_be_redelivered() -> None:
    h = H().receive("queue-0.0/u0", UNORDERED, (0, 1, 1))
    h.commit("queue-0.0/u0", UNORDERED, (0, "accept", 1), outcome="info")
    h.receive("queue-0.0/u1", UNORDERED, (0, 2, 2)).commit(
        "queue-0.0/u1", UNORDERED, (0, "accept", 2)
    )
    result = check(h)
    assert result.counts["redelivered-after-ack"] == 0
    assert result.counts["double-settle"] == 0
    assert result.counts["ack-unknown"] == 1


def test_two_confirmed_settlements_of_one_record() -> None:
    h = (
        H()
        .receive("queue-0.0/u0", UNORDERED, (0, 1, 1))
        .receive("queue-0.0/u1", UNORDERED, (0, 2, 2))
    )
    h.commit("queue-0.0/u1", UNORDERED, (0, "accept", 2)).commit(
        "queue-0.0/u0", UNORDERED, (0, "accept", 1)
    )
    result = check(h)
    assert result.counts["double-settle"] == 1
    assert result.counts["redelivered-after-ack"] == 1  # lock 1's accept, then lock 2 had it


def test_key_order_a_later_record_acquired_without_an_earlier_unsettled_one() -> None:
    h = ordered_prefix()
    h.receive("queue-0.0/o1", ORDERED, (3, 1, 3))  # k:1 and k:2 still held by lock 2
    h.receive("queue-0.0/o0", ORDERED, (1, 2, 4))  # and k:1 acquired again after lock 3
    assert "acquired by lock 4" in found(h, "key-order")[0]


def test_key_order_an_earlier_record_settled_after_a_later_one_was_delivered() -> None:
    h = ordered_prefix().receive("queue-0.0/o1", ORDERED, (3, 1, 3))
    h.commit("queue-0.0/o0", ORDERED, (1, "accept", 2), (2, "accept", 2))
    assert any("settled by" in d for d in found(h, "key-order"))


def test_key_order_settlements_out_of_offset_order() -> None:
    h = ordered_prefix()
    h.commit("queue-0.0/o0", ORDERED, (2, "accept", 2)).commit(
        "queue-0.0/o0", ORDERED, (1, "accept", 2)
    )
    assert "after 2's settlement was confirmed" in found(h, "key-order")[0]


def test_key_order_a_release_gives_back_the_keys_later_records() -> None:
    """Lock 2 held k:1 and k:2; k:1 released: both go to lock 3 (not a violation)."""
    h = ordered_prefix().commit("queue-0.0/o0", ORDERED, (1, "release", 2))
    h.receive("queue-0.0/o1", ORDERED, (1, 2, 3), (2, 1, 3))
    h.commit("queue-0.0/o1", ORDERED, (1, "accept", 3), (2, "accept", 3))
    assert check(h).counts["key-order"] == 0


def test_key_order_is_not_asked_of_the_unordered_group() -> None:
    def out_of_order(group: str) -> H:  # k:1 and k:3 before k:0: a key-order violation
        h = H().receive("queue-0.0/m0", group, (1, 1, 1)).receive("queue-0.0/m1", group, (3, 1, 2))
        return h.receive("queue-0.0/m0", group, (0, 1, 3))

    assert check(out_of_order(UNORDERED)).counts["key-order"] == 0
    assert check(out_of_order(ORDERED)).counts["key-order"] > 0  # the same, key-ordered


def test_a_settled_record_neither_accepted_nor_dead_lettered_is_lost() -> None:
    h = H().receive("queue-0.0/u0", UNORDERED, (0, 1, 1))
    h.commit("queue-0.0/u0", UNORDERED, (0, "accept", 1), refused=(0,))
    h.end(ordered_start=0, unordered_start=1)
    assert "neither accepted nor dead-lettered" in found(h, "queue-lost")[0]
    assert check(h).counts["unsettled"] == 9  # 5 of the ordered group, 4 of the other


def test_a_confirmed_reject_without_a_dead_letter() -> None:
    h = (
        H()
        .receive("queue-0.0/u0", UNORDERED, (2, 1, 1))
        .commit("queue-0.0/u0", UNORDERED, (2, "reject", 1))
    )
    assert "reject of delivery 1 confirmed" in found(h.end(0, 0), "dlq-missing")[0]


def test_a_confirmed_release_at_the_limit_without_a_dead_letter() -> None:
    limit = MAX_DELIVERY_ATTEMPTS
    h = H().receive("queue-0.0/u0", UNORDERED, (1, limit, 1))
    h.commit("queue-0.0/u0", UNORDERED, (1, "release", 1))
    assert f"release of delivery {limit}" in found(h.end(0, 0), "dlq-missing")[0]


def test_a_record_dead_lettered_twice() -> None:
    h = (
        H()
        .receive("queue-0.0/u0", UNORDERED, (2, 1, 1))
        .commit("queue-0.0/u0", UNORDERED, (2, "reject", 1))
    )
    h.dead_letter(UNORDERED, 2, 1, REJECT_PREFIX + "k:2").dead_letter(
        UNORDERED, 2, 1, REJECT_PREFIX + "k:2"
    )
    assert "twice" in found(h.end(0, 0), "dlq-duplicate")[0]


@pytest.mark.parametrize(
    ("count", "error", "over", "says"),
    [
        (2, REJECT_PREFIX + "k:2", {}, "rejected at delivery 2"),
        (1, REJECT_PREFIX + "k:3", {}, "names another record"),
        (1, "lock expired (3000 ms)", {}, "the limit is"),
        (1, REJECT_PREFIX + "k:2", {DLQ_HEADER_GROUP: "someone-else"}, "group/topic"),
        (1, REJECT_PREFIX + "k:2", {DLQ_HEADER_OFFSET: "1"}, "the log has"),
    ],
    ids=("count", "reason", "limit", "group", "source"),
)
def test_dead_letter_headers(count: int, error: str, over: dict[str, str], says: str) -> None:
    h = (
        H()
        .receive("queue-0.0/u0", UNORDERED, (2, 1, 1))
        .commit("queue-0.0/u0", UNORDERED, (2, "reject", 1))
    )
    h.dead_letter(UNORDERED, 2, count, error, **over)
    result = check(h.end(0, 0))
    assert result.counts["dlq-header"] == 1
    assert says in next(e.description for e in result.examples if e.anomaly == "dlq-header")


def test_an_accepted_record_dead_lettered() -> None:
    h = H().receive("queue-0.0/u0", UNORDERED, (0, MAX_DELIVERY_ATTEMPTS, 1))
    h.commit("queue-0.0/u0", UNORDERED, (0, "accept", 1))
    h.dead_letter(UNORDERED, 0, MAX_DELIVERY_ATTEMPTS, "lock expired (3000 ms)")
    assert "accept confirmed" in found(h.end(0, 0), "accepted-and-dead-lettered")[0]


def test_delivered_after_its_dead_letter() -> None:
    h = (
        H()
        .receive("queue-0.0/u0", UNORDERED, (2, 1, 1))
        .commit("queue-0.0/u0", UNORDERED, (2, "reject", 1))
    )
    h.dead_letter(UNORDERED, 2, 1, REJECT_PREFIX + "k:2").receive(
        "queue-0.0/u1", UNORDERED, (2, 2, 2)
    )
    result = check(h.end(0, 0))
    assert result.counts["delivered-after-dead-letter"] == 1
    assert result.counts["redelivered-after-ack"] == 1  # the reject was confirmed too


def test_a_delivered_value_that_is_not_the_logs() -> None:
    h = H().receive("queue-0.0/u0", UNORDERED, (0, 1, 1))
    h.ops[-1].value["records"][0][3] = "k:9"
    assert "the log has 'k:0'" in found(h, "inconsistent-delivery")[0]


def test_an_unread_dead_letter_topic_skips_the_missing_check() -> None:
    h = (
        H()
        .receive("queue-0.0/u0", UNORDERED, (2, 1, 1))
        .commit("queue-0.0/u0", UNORDERED, (2, "reject", 1))
    )
    result = check(h)  # no dlq-end: the reader never caught up
    assert result.counts["dlq-missing"] == 0
    assert result.counts["dlq-unread"] == 2


def test_a_reader_behind_a_high_watermark_names_the_partition() -> None:
    """Issue 15: a reader stuck on a dead-letter partition once called itself caught up
    and its unread dead letters looked missing; the harness now compares its positions
    with the high watermarks, and the report names the partition it had not read."""
    h = H().receive("queue-0.0/u0", UNORDERED, (2, 1, 1))
    behind = [f"{UNORDERED}.dead-letters[1] at 4/34"]
    h.add("dlq-reader", "ok", "dlq-end", {"caught_up": False, "behind": behind})
    result = check(h)
    assert result.counts["dlq-unread"] == 2
    unread = [e.description for e in result.examples if e.anomaly == "dlq-unread"]
    assert unread == [
        f"{ORDERED}: the dead-letter reader did not catch up []",
        f"{UNORDERED}: the dead-letter reader did not catch up {behind}",
    ]
