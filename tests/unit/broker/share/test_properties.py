"""Property tests of the share-partition state machine over random schedules.

Each schedule mixes new records, receives by several members, accepts, releases (with
and without delays), rejects, lock expiries, dead-letter completions and leader changes
(a new state rebuilt from a snapshot plus the operations since, reading the log again).
After every step the invariants hold; at the end every record was accepted exactly once or
dead-lettered exactly once (never both), and in key-ordered mode each key's accepted
offsets came in offset order, and no record was delivered again after its accept.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.broker.share import decide
from conveyor.broker.share.keyindex import key_id
from conveyor.broker.share.state import ShareState, Span, invariant_problems
from conveyor.protocol.share import AckRange, Op, ShareGroupConfig, ShareMode

MEMBERS = ("m1", "m2", "m3", "m4")


class Model:
    """The state under test, its log of records, and what a consumer saw."""

    def __init__(self, mode: ShareMode, rng: random.Random) -> None:
        self.config = ShareGroupConfig(
            mode=mode, lock_duration_ms=1_000, max_delivery_attempts=3, window_records_max=100
        )
        self.rng = rng
        self.state = ShareState(mode, 0)
        self.keys: list[bytes | None] = []  # the "log"
        self.not_before: dict[int, int] = {}
        self.snapshot = self.state.snapshot(epoch=0)
        self.ops: list[Op] = []
        self.held: dict[str, list[tuple[int, int]]] = {m: [] for m in MEMBERS}  # (offset, acq)
        self.accepted: dict[int, int] = {}  # offset -> times
        self.accepted_order: dict[bytes, list[int]] = {}
        self.dead: dict[int, int] = {}
        self.now = 0

    def record(self, ops: list[Op]) -> None:
        self.ops += ops
        problems = invariant_problems(self.state)
        assert not problems, problems

    def span(self, first: int, last: int) -> Span:
        keyed = self.config.mode == "key_ordered"
        keys = [key_id(self.keys[o], o) for o in range(first, last + 1)] if keyed else None
        delays = tuple((o, t) for o, t in self.not_before.items() if first <= o <= last)
        return Span(first, last, keys=keys, not_before=delays)

    def produce(self) -> None:
        first = len(self.keys)
        for _ in range(self.rng.randint(1, 6)):
            key = self.rng.choice([b"a", b"b", b"c", b"d", None])
            if self.rng.random() < 0.05:
                self.not_before[len(self.keys)] = self.now + self.rng.randint(0, 3_000)
            self.keys.append(key)
        self.read_log(first)

    def read_log(self, _first: int) -> None:
        room = decide.window_room(self.state, self.config)
        last = min(len(self.keys), self.state.end + room) - 1
        if last >= self.state.end:
            self.state.extend(self.span(self.state.end, last))

    def receive(self, member: str, most: int = 8) -> None:
        count = self.rng.randint(1, most)
        ops, got = decide.acquire(self.state, self.config, member, count, self.now)
        self.record(ops)
        if got is None:
            return
        for r in got.ranges:
            for offset in range(r.first_offset, r.last_offset + 1):
                assert offset not in self.accepted, f"{offset} delivered after its accept"
                assert offset not in self.dead
                self.held[member].append((offset, got.acquisition))

    def settle(self, member: str) -> None:
        held = self.held[member]
        if not held:
            return
        # a consumer works through its records in delivery order (key order inside)
        count = self.rng.randint(1, len(held))
        chosen, self.held[member] = held[:count], held[count:]
        for offset, acquisition in chosen:
            kind = self.rng.choices(["accept", "release", "reject"], [8, 2, 1])[0]
            delay = self.rng.choice([None, 0, 500]) if kind == "release" else None
            acks = [
                AckRange(
                    partition=0,
                    first_offset=offset,
                    last_offset=offset,
                    type=kind,  # type: ignore[arg-type]
                    acquisition=acquisition,
                    delay_ms=delay,
                )
            ]
            ops, results = decide.acknowledge(self.state, self.config, member, acks, self.now)
            self.record(ops)
            if results[0].error is None and kind == "accept":
                self.accepted[offset] = self.accepted.get(offset, 0) + 1
                key = self.keys[offset]
                if key is not None:
                    self.accepted_order.setdefault(key, []).append(offset)

    def tick(self) -> None:
        self.now += self.rng.choice([10, 300, 1_100])
        self.record(decide.expire(self.state, self.config, self.now))
        for sequence in sorted(self.state.dead_letters):  # written oldest first (manager.py)
            if self.rng.random() >= 0.7:
                break
            for entry in self.state.dead_letters[sequence]:
                self.dead[entry.offset] = self.dead.get(entry.offset, 0) + 1
            self.record(decide.dead_lettered(self.state, sequence))
        self.read_log(self.state.end)

    def fail_over(self) -> None:
        """A new leader: the last snapshot, the operations since, the log read again."""
        rebuilt = ShareState.from_snapshot(self.config.mode, self.snapshot)
        for op in self.ops:
            rebuilt.apply(op)
        if self.state.end > rebuilt.end:
            rebuilt.extend(self.span(rebuilt.end, self.state.end - 1))
        assert rebuilt.snapshot(0) == self.state.snapshot(0)
        self.state = rebuilt
        self.snapshot = self.state.snapshot(0)
        self.ops = []
        # members do not notice: their locks survive the change of leader

    def drain(self) -> None:
        """Let everything finish: expire every lock, accept what comes, dead-letter all."""
        for _ in range(1_000):
            self.now += 5_000
            self.record(decide.expire(self.state, self.config, self.now))
            for sequence in list(self.state.dead_letters):
                for entry in self.state.dead_letters[sequence]:
                    self.dead[entry.offset] = self.dead.get(entry.offset, 0) + 1
                self.record(decide.dead_lettered(self.state, sequence))
            self.read_log(self.state.end)
            self.held = {m: [] for m in MEMBERS}
            self.receive("m1", most=100)
            for offset, acquisition in self.held["m1"]:
                ack = AckRange(
                    partition=0, first_offset=offset, last_offset=offset, acquisition=acquisition
                )
                ops, results = decide.acknowledge(self.state, self.config, "m1", [ack], self.now)
                self.record(ops)
                assert results[0].error is None, results[0]
                self.accepted[offset] = self.accepted.get(offset, 0) + 1
                key = self.keys[offset]
                if key is not None:
                    self.accepted_order.setdefault(key, []).append(offset)
            if self.state.start >= len(self.keys):
                return
        raise AssertionError(f"did not drain: start {self.state.start} of {len(self.keys)}")


def run(mode: ShareMode, seed: int, steps: int) -> Model:
    rng = random.Random(seed)
    model = Model(mode, rng)
    for _ in range(steps):
        action = rng.choices(
            ["produce", "receive", "settle", "tick", "fail_over"], [3, 4, 4, 2, 0.3]
        )[0]
        if action in ("receive", "settle"):
            getattr(model, action)(rng.choice(MEMBERS))
        else:
            getattr(model, action)()
    model.drain()
    return model


def check_outcome(model: Model) -> None:
    total = len(model.keys)
    for offset in range(total):
        accepted, dead = model.accepted.get(offset, 0), model.dead.get(offset, 0)
        assert accepted + dead == 1, f"offset {offset}: accepted {accepted}, dead {dead}"
    if model.config.mode == "key_ordered":
        for key, offsets in model.accepted_order.items():
            assert offsets == sorted(offsets), f"key {key!r} accepted out of order: {offsets}"


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), mode=st.sampled_from(["unordered", "key_ordered"]))
def test_every_record_settled_once_and_keys_in_order(seed: int, mode: ShareMode) -> None:
    check_outcome(run(mode, seed, steps=120))


def test_a_long_seeded_key_ordered_schedule() -> None:
    check_outcome(run("key_ordered", seed=20231, steps=3_000))
