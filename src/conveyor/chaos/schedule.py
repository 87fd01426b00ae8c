"""The nemesis schedule: a pure function of (seed, duration, faults, brokers).

One fault at a time (single faults: the guarantees are stated for them), each held for a
few seconds and healed before the next, and all healed before the final read. The same
seed gives the same schedule on any machine; only targets named by role ("the leader of
partition 2") are resolved at run time, from the cluster's metadata at that moment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

FAULTS: Final = (
    "kill",  # SIGKILL a random broker, restart it on heal
    "kill-leader",  # SIGKILL the leader of a chosen partition
    "kill-coordinator",  # SIGKILL the coordinator
    "kill-consumer",  # crash a consumer group member (no commit, no clean leave)
    "pause",  # SIGSTOP a broker beyond the session timeout, SIGCONT on heal
    "pause-coordinator",  # SIGSTOP the coordinator
    "partition",  # isolate one broker from everyone (nftables)
    "partition-coordinator",  # isolate the coordinator from everyone
    "partition-split",  # brokers cannot reach the coordinator nor it them; clients reach all
    "partition-asym",  # one broker's packets to the coordinator and brokers are dropped
    "torn-write",  # SIGKILL a broker and append a partial batch to its active segment
    "power-loss",  # SIGKILL a broker and drop from its files what it had not fsynced
    "corrupt",  # SIGKILL a broker and flip a byte or garble an index of one follower replica
    "disk-full",  # fill the broker's small tmpfs data dir, free it on heal
    # several coordinators on etcd (conveyor chaos --ha, issue 20)
    "kill-active-coordinator",  # SIGKILL whichever coordinator is active; restart on heal
    "pause-active-coordinator",  # SIGSTOP the active one past its lease; SIGCONT on heal
    "partition-coordinator-etcd",  # cut the active coordinator from every etcd member
    "kill-etcd",  # SIGKILL one etcd member; restart on heal
    "etcd-quorum-loss",  # SIGKILL two of the three etcd members; restart on heal
)
HA_FAULTS: Final = FAULTS[-5:]  # need --ha: skipped (with the reason) without it
DEFAULT_FAULTS: Final = ("kill", "kill-leader", "kill-coordinator", "kill-consumer", "pause")
HOLD_S_MIN: Final = 2.0
HOLD_S_MAX: Final = 6.0
# A pause must outlast the cluster's 3 s session timeout (chaos.cluster) to be noticed.
PAUSE_HOLD_S_MIN: Final = 4.0
GAP_S_MIN: Final = 1.0
GAP_S_MAX: Final = 3.0
WARMUP_S: Final = 2.0
COOLDOWN_S: Final = 2.0


@dataclass(frozen=True)
class FaultEvent:
    """Start ``kind`` at ``start_s`` on ``target`` (a broker id, partition or member index,
    per kind) and heal it ``hold_s`` later."""

    index: int
    start_s: float
    kind: str
    target: int
    hold_s: float

    @property
    def id(self) -> str:
        return f"{self.index}:{self.kind}"


def make_schedule(
    seed: int, duration_s: float, faults: tuple[str, ...], *, brokers: int, partitions: int,
    consumers: int,
) -> list[FaultEvent]:  # fmt: skip
    """Faults in order; the last one heals at least ``COOLDOWN_S`` before ``duration_s``."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    if not faults:
        return []
    rng = random.Random(seed)
    events: list[FaultEvent] = []
    now = WARMUP_S
    while True:
        kind = faults[len(events) % len(faults)] if len(events) < len(faults) else None
        kind = kind or rng.choice(faults)  # every fault once first, then at random
        low = PAUSE_HOLD_S_MIN if kind.startswith("pause") else HOLD_S_MIN
        hold = round(rng.uniform(low, HOLD_S_MAX), 2)
        if now + hold + COOLDOWN_S > duration_s:
            return events
        target = _target(rng, kind, brokers, partitions, consumers)
        events.append(FaultEvent(len(events), round(now, 2), kind, target, hold))
        now += hold + rng.uniform(GAP_S_MIN, GAP_S_MAX)


# Faults without a target drawn here: the coordinator (or, with --ha, the active one,
# resolved when the fault starts), every broker at once, both killed etcd members.
_NO_TARGET: Final = frozenset(
    {"kill-coordinator", "pause-coordinator", "partition-coordinator", "partition-split"}
) | (frozenset(HA_FAULTS) - {"kill-etcd"})


def _target(rng: random.Random, kind: str, brokers: int, partitions: int, consumers: int) -> int:
    if kind in _NO_TARGET:
        return 0
    ranges = {"kill-leader": partitions, "kill-consumer": consumers, "kill-etcd": 3}
    if kind in ranges:
        return rng.randrange(ranges[kind])
    if kind == "disk-full":
        return 1  # the broker whose data dir is the small tmpfs
    return rng.randrange(1, brokers + 1)
