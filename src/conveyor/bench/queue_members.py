"""The consumers of ``conveyor bench queue`` (logic in ``bench/queue.py``).

* scaling members are threads of the benchmark's process (32 of them cost little: a
  member sleeps its simulated work with the GIL released); each is a ``Queue`` (share
  group) or a ``Consumer`` with ``group_id`` (partition-based group), acknowledging each
  record after its work, as an application would;
* plain-throughput members are processes (spawned), each a ``Queue`` taking 2,000 records
  a receive and acknowledging them in one call, no work;
* the redelivery probe measures how soon another member gets a record back after a
  release or a lock expiry.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any, Final

PLAIN_BATCH: Final = 2_000
POLL_S: Final = 0.2


@dataclass
class Tally:
    """Records processed by the scaling members of one run (shared by their threads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    processed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, count: int) -> None:
        with self.lock:
            self.processed += count


def scaling_member(
    kind: str, url: str, topic: str, group: str, *, work_s: float, batch: int, tally: Tally,
    stop: threading.Event, joined: threading.Barrier,
) -> None:  # fmt: skip
    """One member until ``stop``: receive ``batch``, work ``work_s`` per record, ack each."""
    import conveyor

    try:
        if kind == "group":
            with conveyor.Consumer(
                url, topic, group_id=group, max_poll_records=batch, fetch_max_wait_ms=100
            ) as consumer:
                joined.wait(60)
                while not stop.is_set():
                    for _ in consumer.poll(timeout=POLL_S):
                        time.sleep(work_s)
                        tally.add(1)
                        if stop.is_set():
                            break
            return
        with conveyor.Queue(topic, group, url=url, mode=kind) as queue:  # type: ignore[arg-type]
            joined.wait(60)
            while not stop.is_set():
                for message in queue.receive(max_records=batch, timeout=POLL_S):
                    time.sleep(work_s)
                    message.ack()
                    tally.add(1)
    except Exception as exc:
        with tally.lock:
            tally.errors.append(f"{kind} member: {exc!r}")
        joined.abort()


def plain_member(
    url: str, topic: str, group: str, mode: str, *, total: int, counter: Synchronized[int],
    go: ProcessEvent, out: ProcessQueue[Any],
) -> None:  # fmt: skip
    """A spawned process: receive and acknowledge as fast as it can until ``total`` records
    are done by all members; reports (start, finish, CPU, count, error)."""
    import conveyor

    error = ""
    count = 0
    started = finished = 0.0
    cpu = 0.0
    try:
        with conveyor.Queue(topic, group, url=url, mode=mode) as queue:  # type: ignore[arg-type]
            out.put(("ready", None))
            go.wait(300)
            cpu_start = time.process_time()
            started = time.time()
            while counter.value < total:
                messages = queue.receive(max_records=PLAIN_BATCH, timeout=POLL_S)
                queue.ack(messages)
                count += len(messages)
                with counter.get_lock():
                    counter.value += len(messages)
            finished = time.time()
            cpu = time.process_time() - cpu_start
    except Exception as exc:
        error = repr(exc)
        out.put(("ready", None))
    out.put(("done", (started, finished, cpu, count, error)))


@dataclass
class Probe:
    """Redelivery latencies, milliseconds."""

    after_release_ms: list[float] = field(default_factory=list)
    after_expiry_ms: list[float] = field(default_factory=list)


def redelivery_probe(url: str, topic: str, group: str, rounds: int, per_round: int) -> Probe:
    """Member A takes ``per_round`` records and releases them (or lets their lock expire);
    member B, long-polling, gets them back: the time from A's release (or the lock's
    deadline) to B's receipt, per record. The topic has one partition and the group a
    1 s lock; records are produced round by round so that B only ever sees redeliveries."""
    import conveyor
    from conveyor.protocol.share import ShareGroupConfig

    config = ShareGroupConfig(lock_duration_ms=1_000)
    probe = Probe()
    with (
        conveyor.Producer(url) as producer,
        conveyor.Queue(topic, group, url=url, config=config, prefetch=False) as first,
        conveyor.Queue(topic, group, url=url, config=config, prefetch=False) as second,
    ):
        for round_index in range(rounds):
            expiry = round_index % 2 == 1
            for i in range(per_round):
                producer.send(topic, f"probe-{round_index}-{i}".encode())
            producer.flush()
            taken: list[conveyor.QueueMessage] = []
            deadline = time.monotonic() + 30
            while len(taken) < per_round and time.monotonic() < deadline:
                taken += first.receive(max_records=per_round - len(taken), timeout=1.0)
            got_at = time.monotonic()
            if expiry:
                since = got_at + config.lock_duration_ms / 1000  # the locks' deadline
            else:
                for message in taken:
                    message.release(delay=0)
                since = time.monotonic()
                first.commit()
            back = 0
            while back < len(taken) and time.monotonic() < deadline + 10:
                for message in second.receive(max_records=per_round, timeout=2.0):
                    arrived = time.monotonic()
                    (probe.after_expiry_ms if expiry else probe.after_release_ms).append(
                        (arrived - since) * 1000
                    )
                    message.ack()
                    back += 1
            second.commit()
    return probe
