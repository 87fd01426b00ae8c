"""One process of the chaos queue workload: several share-group members, so that the
nemesis's ``kill-consumer`` SIGKILLs them together like a crashed worker (locks held, no
acknowledgement sent, no clean leave).

    python -m conveyor.chaos.queue_proc URL

It runs ``MEMBERS_PER_GROUP`` members of each workload group (one ``key_ordered``, one
``unordered``, both reading the workload topic), each in its own thread with its own
:class:`conveyor.Queue`. A member receives, decides each record's fate from its value and
delivery count (:func:`decide`), then sends the acknowledgements with ``commit()`` and
reports which the broker confirmed, before receiving again (``prefetch`` off and no timed
flush: ``commit`` is the only carrier of acknowledgements, so what it answers is exactly
their outcome). Each operation is written to stdout as one JSON line ``{"type", "f",
"value", "error", "member"}``; ``value["t"]`` (and ``value["t0"]``: when it was invoked)
are ``time.monotonic_ns()``, one clock for every process of the machine, so the checker
orders events of different processes by when they happened, not by when the harness read
their lines. SIGTERM stops it: each member commits and closes (releasing what it holds).
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from typing import Any, Final

import conveyor
from conveyor.chaos.children import stop_on_sigterm, write_line
from conveyor.chaos.queue_workload import (
    FORGET_PROBABILITY,
    GROUPS,
    MEMBERS_PER_GROUP,
    decide,
    short,
)
from conveyor.chaos.workload import TOPIC, classify
from conveyor.client.errors import ConveyorError
from conveyor.client.queue import AckFailure, QueueMessage
from conveyor.protocol.share import ShareMode

RECEIVE_MAX_RECORDS: Final = 20
RECEIVE_TIMEOUT_S: Final = 0.5
COMMIT_TIMEOUT_S: Final = 10.0
SESSION_TIMEOUT_MS: Final = 3_000
REQUEST_TIMEOUT_MS: Final = 3_000
JOIN_RETRY_S: Final = 0.5
PROBE_PROBABILITY: Final = 0.1  # key-ordered: acknowledge a record the broker must refuse
NEVER_MS: Final = 3_600_000  # no timed flush of acknowledgements: commit() carries them


def emit(member: str, type_: str, f: str, value: dict[str, Any], error: str | None = None) -> None:
    write_line({"type": type_, "f": f, "value": value, "error": error, "member": member})


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode(errors="replace")


def run_member(url: str, group: str, index: int, stop: threading.Event, seed: int) -> None:
    mode = GROUPS[group]
    member = f"{short(group)}{index}"
    rng = random.Random(seed)
    queue = _join(url, group, mode, member, stop)
    if queue is None:
        return
    queue.on_ack_error(_ignore)  # the history has them (commit's answer), not the log
    try:
        while not stop.is_set():
            t0 = time.monotonic_ns()
            try:
                messages = queue.receive(RECEIVE_MAX_RECORDS, RECEIVE_TIMEOUT_S)
            except ConveyorError as e:
                emit(member, classify(e), "receive", {"group": group, "t0": t0}, repr(e))
                continue
            if not messages:
                continue
            emit(member, "ok", "receive", _received(queue, group, messages, t0))
            acks = _settle(messages, rng, mode == "key_ordered")
            if acks:
                _commit(queue, member, group, acks)
    finally:
        queue.close()


def _ignore(_failure: AckFailure) -> None:
    return None


def _join(
    url: str, group: str, mode: ShareMode, member: str, stop: threading.Event
) -> conveyor.Queue | None:
    """A new member of ``group``, retried while the coordinator is down (a fault)."""
    while not stop.is_set():
        try:
            return conveyor.Queue(
                TOPIC, group, mode=mode, url=url, client_id=member, prefetch=False,
                ack_flush_ms=NEVER_MS, session_timeout_ms=SESSION_TIMEOUT_MS,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
            )  # fmt: skip
        except ConveyorError as e:
            emit(member, classify(e), "join", {"group": group, "t": time.monotonic_ns()}, repr(e))
            stop.wait(JOIN_RETRY_S)
    return None


def _received(
    queue: conveyor.Queue, group: str, messages: list[QueueMessage], t0: int
) -> dict[str, Any]:
    records = [
        [m.partition, m.offset, _text(m.key), _text(m.value), m.delivery_count, m.lock_token]
        for m in messages
    ]
    return {
        "group": group, "member_id": queue.member_id, "records": records, "t0": t0,
        "t": time.monotonic_ns(),
    }  # fmt: skip


def _settle(messages: list[QueueMessage], rng: random.Random, key_ordered: bool) -> list[list[Any]]:
    """Decide and record each message's acknowledgement; ``[partition, offset, type,
    lock_token, reason]`` of each one made (a forgotten record has none: its lock
    expires). In key-ordered mode the later records of a key released or forgotten in this
    batch are left alone as ``subscribe`` does (the broker takes them back with it), but
    for a few, acknowledged anyway: the broker must refuse those."""
    acks: list[list[Any]] = []
    blocked: set[tuple[int, bytes | None]] = set()
    for message in messages:
        key = (message.partition, message.key)
        if key_ordered and key in blocked and rng.random() >= PROBE_PROBABILITY:
            continue
        value = _text(message.value) or ""
        kind, reason = decide(value, message.delivery_count)
        if kind == "accept" and rng.random() < FORGET_PROBABILITY:
            blocked.add(key)
            continue
        if kind == "accept":
            message.ack()
        elif kind == "release":
            message.release(delay=0, reason=reason)
            blocked.add(key)
        else:
            message.reject(reason or "rejected")
        acks.append([message.partition, message.offset, kind, message.lock_token, reason])
    return acks


def _commit(queue: conveyor.Queue, member: str, group: str, acks: list[list[Any]]) -> None:
    t0 = time.monotonic_ns()
    value: dict[str, Any] = {"group": group, "acks": acks, "t0": t0}
    emit(member, "invoke", "commit", value)
    try:
        failures = queue.commit(timeout=COMMIT_TIMEOUT_S)
    except (ConveyorError, TimeoutError, OSError) as e:
        emit(member, "info", "commit", {**value, "t": time.monotonic_ns()}, repr(e))
        return
    refused = [[f.partition, f.first_offset, f.last_offset, f.type, f.error] for f in failures]
    emit(member, "ok", "commit", {**value, "refused": refused, "t": time.monotonic_ns()})


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stop = stop_on_sigterm()
    url = sys.argv[1]
    seed = random.SystemRandom().randrange(2**31)
    threads = [
        threading.Thread(
            target=run_member,
            args=(url, group, i, stop, seed + n),
            name=f"{group}-{i}",
            daemon=True,
        )
        for n, (group, i) in enumerate((g, i) for g in GROUPS for i in range(MEMBERS_PER_GROUP))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
