"""A consume-transform-produce processor that becomes a zombie, as its own process so a
test can SIGSTOP it (a long GC pause, a frozen VM) while the group moves on.

``python -m tests.integration.txn_zombie URL SOURCE SINK GROUP TRANSACTIONAL_ID``

It joins GROUP (session timeout 1.5 s: the coordinator's, KIP-848),
polls every record of SOURCE it is given, opens
a transaction writing one record to SINK per record read, flushes, and takes its
``group_metadata()``; then it prints ``{"ready": [generation, member_id]}`` and waits for
a line on stdin. Given one, it sends its offsets with that metadata and commits; it
prints ``{"committed": true}``, or ``{"refused": CODE}`` and aborts (``{"aborted": true}``).
"""

from __future__ import annotations

import json
import sys
import time

import conveyor
from conveyor.protocol.errors import ConveyorError

SESSION_TIMEOUT_MS = 1_500


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main() -> int:
    url, source, sink, group, tid = sys.argv[1:6]
    consumer = conveyor.Consumer(
        url,
        source,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=200,
        isolation="read_committed",
    )
    producer = conveyor.Producer(url, transactional_id=tid)
    try:
        messages: list[conveyor.Message] = []
        deadline = time.monotonic() + 60
        while not messages and time.monotonic() < deadline:
            messages = consumer.poll(timeout=0.5)
        producer.begin_transaction()
        for m in messages:
            producer.send(sink, (m.value or b"").upper(), key=m.key)
        producer.flush()
        metadata = consumer.group_metadata()
        offsets = {(m.topic, m.partition): m.offset + 1 for m in messages}
        say(ready=[metadata.generation_id, metadata.member_id], records=len(messages))
        sys.stdin.readline()  # the test paused this process meanwhile, then resumed it
        try:
            producer.send_offsets_to_transaction(offsets, metadata)
            producer.commit_transaction()
            say(committed=True)
        except ConveyorError as exc:
            say(refused=exc.code.name)
            producer.abort_transaction()
            say(aborted=True)
    finally:
        producer.close(timeout=10)
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
