"""One consumer-group member of the chaos workload, as its own process, so that the nemesis
can SIGKILL it like a crashed application (no commit, no clean leave, no more heartbeats).

    python -m conveyor.chaos.consumer_proc URL

It polls the workload topic as a member of the workload group (``group_id``: the
coordinator assigns it a share of the partitions), commits every few polls, and writes each
operation to stdout as one JSON line ``{"type", "f", "value", "error"}`` (flushed at once),
which :class:`conveyor.chaos.workload.Workload` records in the history. SIGTERM asks it to
stop: it commits what it polled, closes, and exits 0.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Final

import conveyor
from conveyor.chaos.children import stop_on_sigterm, write_line
from conveyor.chaos.workload import COMMIT_EVERY_POLLS, GROUP, TOPIC, classify
from conveyor.client.errors import ConveyorError

POLL_TIMEOUT_S: Final = 0.5
# A SIGKILLed member is noticed after its session timeout; as short as the brokers' one.
SESSION_TIMEOUT_MS: Final = 3_000
HEARTBEAT_INTERVAL_MS: Final = 500


def emit(type_: str, f: str, value: dict[str, Any] | None = None, error: str | None = None) -> None:
    write_line({"type": type_, "f": f, "value": value or {}, "error": error})


def commit(consumer: conveyor.Consumer) -> None:
    positions = {}
    for tp in consumer.assignment():
        position = consumer.position(tp.topic, tp.partition)
        if position is not None:
            positions[str(tp.partition)] = position
    emit("invoke", "commit", {"offsets": positions})
    try:
        consumer.commit()
    except ConveyorError as e:
        emit(classify(e), "commit", {"offsets": positions}, repr(e))
        return
    emit("ok", "commit", {"offsets": positions})


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode(errors="replace")


def run(url: str, stop: threading.Event) -> None:
    lost: list[object] = []  # on_lost calls since the last poll (poll runs the callbacks)
    consumer = conveyor.Consumer(
        url, TOPIC, group_id=GROUP, enable_auto_commit=False,
        fetch_max_wait_ms=200, request_timeout_ms=3_000, max_poll_records=200,
        session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        on_lost=lost.append,
    )  # fmt: skip
    polls = 0
    assigned: list[int] = []
    member: str | None = None
    try:
        while not stop.is_set():
            emit("invoke", "poll")
            try:
                messages = consumer.poll(timeout=POLL_TIMEOUT_S)
            except ConveyorError as e:
                emit(classify(e), "poll", error=repr(e))
                continue
            now_assigned = sorted(tp.partition for tp in consumer.assignment())
            # positions may legitimately jump after either: a new assignment, or the same
            # one after the member lost its partitions (its session: Kafka's "partitions
            # lost") and joined again between two polls. KIP-848 keeps the member id over
            # the rejoin, so only the on_lost callback tells (seed 23, 240 s: the same four
            # partitions came back and were read again from the committed offsets).
            if now_assigned != assigned or consumer.member_id != member or lost:
                emit("ok", "rebalance", {"partitions": now_assigned})
                assigned, member = now_assigned, consumer.member_id
                lost.clear()
            records = [[m.partition, m.offset, _text(m.key), _text(m.value)] for m in messages]
            emit("ok", "poll", {"records": records})
            polls += 1
            if polls % COMMIT_EVERY_POLLS == 0:
                commit(consumer)
        commit(consumer)
    finally:
        consumer.close(timeout=10)


def main() -> None:
    stop = stop_on_sigterm()
    run(sys.argv[1], stop)


if __name__ == "__main__":
    main()
