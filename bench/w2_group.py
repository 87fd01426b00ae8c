"""W2 with consumer groups (issue 19): 4 member processes subscribed in one group read a
16-partition topic from the start, with Conveyor's ``Consumer`` (``poll`` or
``poll_batch``) or with confluent-kafka's (librdkafka), against the same broker.

Used by ``make bench`` (``bench/run_all.py``), ``scripts/bench_group_consume.py`` (Conveyor's
group over its transports) and ``scripts/bench_kafka_groups.py`` (issue 17's W2).

How a round is timed, the same for every kind of member: the members join and pause what
they are given, each reporting the size of its settled share; once the 4 shares are
non-empty and cover every partition, the orchestrator writes ``go`` to their stdin. The
window runs from the first message any member reads (``first_message_s`` after ``go``:
librdkafka resumes fetching about 1 s after ``resume()``) to the last. So the join, the
rebalances (Conveyor's client joins with KIP-848 heartbeats, librdkafka with the classic
protocol) and the resume are not timed; reading is. Each round uses a new group, so it
reads everything from the log start (``auto.offset.reset=earliest``); auto-commit at each
client's defaults.

A member is this file run as ``python bench/w2_group.py --member KIND WHERE GROUP TOPIC``
(KIND ``conveyor``, ``conveyor-batch`` or ``confluent-kafka``; WHERE ``kafka://host:port,...``
for the brokers' Kafka listeners, or a coordinator URL for Conveyor's HTTP transport while
the client has one). Lines on stdout: ``{"assigned": n}`` whenever its settled share
changes before ``go``, then ``{"n", "first", "last", "cpu"}`` (messages, wall times of
the first and the latest, CPU seconds since ``go``) every 0.2 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARTITIONS = 16
MEMBERS = 4
# enough keys that murmur2 puts messages on every one of the 16 partitions (8 leave some
# partitions, and so some members, without any)
KEYS = 64
VALUE_BYTES = 100
KINDS = ("conveyor", "conveyor-batch", "confluent-kafka")
SETTLE_TIMEOUT_S = 120.0
READ_TIMEOUT_S = 600.0
REPORT_EVERY_S = 0.2


# --- the orchestrator's side --------------------------------------------------------------


def fill(bootstrap: str, topic: str, count: int) -> float:
    """Create ``topic`` (16 partitions, replication factor 1) and write ``count`` x 100 B
    over 64 keys with Conveyor's producer over the Kafka listeners (``send_many``);
    returns the seconds it took (create to last acknowledgement)."""
    import conveyor

    started = time.perf_counter()
    with conveyor.Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topic(topic, partitions=PARTITIONS, replication_factor=1)
    value = os.urandom(VALUE_BYTES)
    keys = [b"key-%d" % k for k in range(KEYS)]
    with conveyor.Producer(bootstrap_servers=bootstrap, linger_ms=5) as producer:
        futures = []
        for start in range(0, count, 10_000):
            size = min(10_000, count - start)
            step_keys = [keys[(start + i) % KEYS] for i in range(size)]
            futures.append(producer.send_many(topic, [value] * size, keys=step_keys))
        producer.flush()
        for future in futures:
            future.result(0)  # raises if any record failed
    return time.perf_counter() - started


class Member:
    """One member process and the latest of its reports."""

    def __init__(self, kind: str, where: str, group: str, topic: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--member", kind, where, group, topic],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.assigned = 0
        self.latest: dict[str, Any] = {"n": 0, "last": 0.0, "cpu": 0.0}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            report = json.loads(line)
            if "assigned" in report:
                self.assigned = int(report["assigned"])
            else:
                self.latest = report

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def exited(self) -> bool:
        return self.process.poll() is not None

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class GroupRound:
    """One group's read of the topic: rate, and CPU per message of the members and of each
    server process asked for (broker, coordinator), over the timed window."""

    msg_per_s: float
    messages: int
    seconds: float
    first_message_s: float  # from go to the first message any member read
    members_cpu_us_per_msg: float
    servers_cpu_us_per_msg: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "msg_per_s": self.msg_per_s,
            "messages": self.messages,
            "seconds": self.seconds,
            "first_message_s": self.first_message_s,
            "members_cpu_us_per_msg": self.members_cpu_us_per_msg,
            "servers_cpu_us_per_msg": list(self.servers_cpu_us_per_msg),
        }


def group_round(  # noqa: PLR0917 -- what a round reads, with whom, and what it watches
    kind: str, where: str, group: str, topic: str, count: int, servers: Sequence[int] = ()
) -> GroupRound:
    """4 members of ``kind`` in a new ``group`` read ``count`` messages of ``topic``."""
    members = [Member(kind, where, group, topic) for _ in range(MEMBERS)]
    try:

        def settled() -> bool:
            if any(m.exited() for m in members):
                raise RuntimeError(f"a {kind} member exited before the group settled")
            shares = [m.assigned for m in members]
            return all(shares) and sum(shares) == PARTITIONS

        wait(settled, f"4 {kind} members sharing {PARTITIONS} partitions", SETTLE_TIMEOUT_S)
        server_cpu = [cpu_s(pid) for pid in servers]
        started = time.time()
        for m in members:
            m.go()

        def consumed() -> bool:
            if any(m.exited() for m in members):
                raise RuntimeError(f"a {kind} member exited while reading")
            return sum(int(m.latest["n"]) for m in members) >= count

        wait(consumed, f"{count:,} messages read by the {kind} group", READ_TIMEOUT_S)
        server_cpu = [cpu_s(pid) - before for pid, before in zip(servers, server_cpu, strict=True)]
        time.sleep(2 * REPORT_EVERY_S)  # one more report each, for the CPU figure
        last = max(float(m.latest["last"]) for m in members)
        first = min(float(m.latest.get("first") or last) for m in members)
        members_cpu_s = sum(float(m.latest["cpu"]) for m in members)
        messages = sum(int(m.latest["n"]) for m in members)
    finally:
        for m in members:
            m.stop()
    # from the first message read, not from go: librdkafka starts fetching a resumed
    # partition ~1 s after resume() (measured: 1.0 s, Conveyor's client 0.02 s), a wait
    # that is not reading
    seconds = last - first
    return GroupRound(
        msg_per_s=messages / seconds,
        messages=messages,
        seconds=seconds,
        first_message_s=first - started,
        members_cpu_us_per_msg=members_cpu_s / messages * 1e6,
        servers_cpu_us_per_msg=tuple(c / messages * 1e6 for c in server_cpu),
    )


# --- a member -----------------------------------------------------------------------------


def _report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _await_go(go: threading.Event) -> None:
    def read() -> None:
        sys.stdin.readline()
        go.set()

    threading.Thread(target=read, daemon=True).start()


def _conveyor_member(where: str, group: str, topic: str, batch: bool) -> None:
    import conveyor

    go = threading.Event()
    kafka = where.startswith("kafka://")
    consumer = conveyor.Consumer(
        None if kafka else where,
        topic,
        group_id=group,
        bootstrap_servers=where.removeprefix("kafka://") if kafka else None,
        max_poll_records=10_000,
        fetch_max_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=100,
        on_assign=lambda parts: None if go.is_set() else consumer.pause(parts),
    )
    _await_go(go)
    said, early = -1, 0
    while not go.is_set():
        early += len(consumer.poll(timeout=0.1))  # serves the group; paused: nothing
        share = len(consumer.assignment()) if consumer.assignment_settled() else 0
        if share != said:
            _report(assigned=share)
            said = share
    consumer.resume(consumer.assignment())
    poll = consumer.poll_batch if batch else consumer.poll
    _read_loop(lambda: len(poll(timeout=REPORT_EVERY_S)), early)


def _confluent_member(where: str, group: str, topic: str) -> None:
    from confluent_kafka import Consumer

    go = threading.Event()
    consumer = Consumer(
        {
            "bootstrap.servers": where.removeprefix("kafka://"),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,  # as Conveyor's members (librdkafka's default: 500)
        }
    )

    def on_assign(client: Any, partitions: list[Any]) -> None:
        client.assign(partitions)  # now, so that the pause below applies to them
        if not go.is_set():
            client.pause(partitions)

    consumer.subscribe([topic], on_assign=on_assign)
    _await_go(go)
    said, early = -1, 0
    while not go.is_set():  # consume serves the group's callbacks; paused: nothing
        early += sum(1 for m in consumer.consume(num_messages=1, timeout=0.1) if not m.error())
        share = len(consumer.assignment())
        if share != said:
            _report(assigned=share)
            said = share
    consumer.resume(consumer.assignment())

    def take() -> int:
        # consume() returns once it has num_messages or at the timeout: small values keep
        # the last message's time within ~10 ms of its arrival
        batch = consumer.consume(num_messages=1_000, timeout=0.01)
        return sum(1 for m in batch if m.error() is None)

    _read_loop(take, early)


def _read_loop(take: Callable[[], int], early: int) -> None:
    """Read until killed; report the count, the latest message's wall time and CPU.
    ``early``: messages a paused member still received before ``go`` (counted, so that
    the round ends; none are expected)."""
    cpu_start = time.process_time()
    n, first, last, next_report = early, 0.0, 0.0, 0.0
    while True:
        got = take()
        now = time.time()
        if got:
            n, last = n + got, now
            first = first or now
        if now >= next_report:
            _report(n=n, first=first, last=last, cpu=time.process_time() - cpu_start)
            next_report = now + REPORT_EVERY_S


def member_main(argv: list[str]) -> None:
    kind, where, group, topic = argv
    if kind == "confluent-kafka":
        _confluent_member(where, group, topic)
    elif kind in ("conveyor", "conveyor-batch"):
        _conveyor_member(where, group, topic, batch=kind == "conveyor-batch")
    else:
        raise SystemExit(f"unknown member kind {kind!r}: one of {KINDS}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--member":
        member_main(sys.argv[2:])
    else:
        raise SystemExit(__doc__)
