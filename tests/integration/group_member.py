"""A consumer-group member as its own process, so tests can SIGKILL and SIGSTOP it.

``python -m tests.integration.group_member URL TOPIC GROUP [session_timeout_ms]``

URL ``kafka://HOST:PORT,...`` makes it a consumer with nothing but those Kafka listeners
(``bootstrap_servers``: membership, commits and fetches over the Kafka protocol).

Each processed message is a JSON line on stdout: ``{"k": key, "v": value, "p": partition,
"o": offset, "t": unix time}``; after each successful commit a line ``{"committed": n}``
(n = messages processed so far), after a failed one ``{"commit_failed": code, "t": time}``.
Optional arguments: session timeout (ms), processing delay per message (s). Warnings of
the client (e.g. "fenced") go to stderr. It commits manually after
each batch (at-least-once). SIGTERM: leave gracefully (commit, leave the group, exit 0).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

import conveyor
from conveyor.protocol.errors import ConveyorError
from conveyor.transport.tls import TLSConfig


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    url, topic, group = sys.argv[1:4]
    session_timeout_ms = int(sys.argv[4]) if len(sys.argv) > 4 else 3_000
    processing_delay_s = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    bootstrap = url.removeprefix("kafka://") if url.startswith("kafka://") else None
    # no https:// URL to say the listeners speak TLS: the HTTPS suite's CA says it
    tls = TLSConfig.from_env() if bootstrap and os.environ.get("CONVEYOR_CA") else None
    consumer = conveyor.Consumer(
        None if bootstrap else url,
        topic,
        bootstrap_servers=bootstrap,
        tls=tls,
        group_id=group,
        client_id="member",
        enable_auto_commit=False,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=200,
        max_poll_records=200,
    )
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    processed = 0
    out = sys.stdout
    while True:
        messages = consumer.poll(timeout=0.2)
        if not messages and consumer._core.stopping:
            break
        for m in messages:
            key = m.key.decode() if m.key is not None else None
            value = m.value.decode() if m.value is not None else None
            out.write(
                json.dumps(
                    {"k": key, "v": value, "p": m.partition, "o": m.offset, "t": time.time()}
                )
                + "\n"
            )
            processed += 1
            if processing_delay_s:
                time.sleep(processing_delay_s)
        out.flush()
        if messages:
            try:
                consumer.commit()
                out.write(json.dumps({"committed": processed}) + "\n")
            except ConveyorError as exc:
                out.write(json.dumps({"commit_failed": exc.code.name, "t": time.time()}) + "\n")
            out.flush()
    consumer.close()
    out.write(json.dumps({"closed": processed}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
