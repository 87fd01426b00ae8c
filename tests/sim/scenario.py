"""What one seed simulates: the cluster's shape, the load, and the faults, all drawn from
the seed before the run starts (so dropping a fault while shrinking a failure leaves the
rest of the run's choices as they were)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Literal

from tests.sim.network import NetworkFaults

FaultKind = Literal[
    "crash", "crash-leader", "isolate", "cut-coordinator", "split", "slow-disk", "crash-coordinator"
]
COORDINATOR_CRASH_RATE = 0.3  # of the seeds


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    at_ms: int
    duration_ms: int
    target: int  # a broker id ("split": the brokers below or at it on one side)

    def __str__(self) -> str:
        who = {"crash-leader": "the leader of t-0", "crash-coordinator": "the coordinator"}.get(
            self.kind, f"b{self.target}"
        )
        return f"{self.kind} {who} at {self.at_ms} ms for {self.duration_ms} ms"


@dataclass(frozen=True)
class Scenario:
    brokers: int
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    load_ms: int  # produce and inject faults this long, then heal and settle
    settle_ms: int  # after healing, how long replicas have to converge
    produce_interval_ms: int
    producers: int
    faults: tuple[Fault, ...]
    network: NetworkFaults = field(default_factory=NetworkFaults)

    def without(self, index: int) -> Scenario:
        faults = self.faults[:index] + self.faults[index + 1 :]
        return replace(self, faults=faults)

    def describe(self) -> str:
        net = self.network
        lines = [
            f"{self.brokers} brokers, {self.partitions} partition(s) RF {self.replication_factor} "
            f"min ISR {self.min_insync_replicas}, {self.producers} producer(s) every "
            f"{self.produce_interval_ms} ms for {self.load_ms} ms",
            f"network: delay {net.delay_ms_min}-{net.delay_ms_max} ms, drop {net.drop_rate:.2f}, "
            f"duplicate {net.duplicate_rate:.2f}",
        ]
        lines += [f"fault: {fault}" for fault in self.faults]
        return "\n".join(lines)


def scenario_for(seed: int) -> Scenario:
    rng = random.Random(f"scenario-{seed}")
    brokers = rng.choice((3, 3, 3, 4, 5))
    load_ms = rng.choice((2000, 3000, 4000))
    faults: list[Fault] = []
    for _ in range(rng.randint(2, 5)):
        kind: FaultKind = rng.choice(
            ("crash", "crash-leader", "isolate", "cut-coordinator", "split", "slow-disk")
        )
        at_ms = rng.randint(500, load_ms - 500)
        duration_ms = rng.randint(300, 2500)
        faults.append(Fault(kind, at_ms, duration_ms, rng.randint(1, brokers)))
    # drawn apart, so that adding it left every seed's other choices as they were
    extra = random.Random(f"coordinator-{seed}")
    if extra.random() < COORDINATOR_CRASH_RATE:
        at_ms = extra.randint(500, load_ms - 500)
        faults.append(Fault("crash-coordinator", at_ms, extra.randint(300, 2500), 0))
    faults.sort(key=lambda f: f.at_ms)
    lossy = rng.random() < 0.5
    network = NetworkFaults(
        delay_ms_min=1,
        delay_ms_max=rng.choice((3, 10, 40)),
        drop_rate=rng.choice((0.01, 0.05)) if lossy else 0.0,
        duplicate_rate=rng.choice((0.0, 0.02)) if lossy else 0.0,
    )
    return Scenario(
        brokers=brokers,
        partitions=rng.choice((1, 1, 2)),
        replication_factor=3,
        min_insync_replicas=2,
        load_ms=load_ms,
        settle_ms=20_000,
        produce_interval_ms=rng.choice((20, 50, 100)),
        producers=rng.choice((1, 2)),
        faults=tuple(faults),
        network=network,
    )
