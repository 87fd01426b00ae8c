"""W3's path (one broker, RF 1, acks=all, linger 0, the sync ``Producer`` over the Kafka
listener, the topic's default fsync before the acknowledgement): every send acknowledged
before the broker is SIGKILLed is read back, at its acknowledged offset, once it restarts.
The acknowledgement is written by the answer's own task when it is next in line
(``transport/kafka_server.py``), never before the produce path's durability wait."""

from __future__ import annotations

from pathlib import Path

import conveyor
from tests.integration.cluster import Cluster
from tests.integration.load import read_partition
from tests.integration.test_replication import create

COUNT = 200


def test_acknowledged_single_sends_survive_sigkill_of_the_only_broker(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, broker_count=1).start()
    try:
        create(cluster, "w3-durable", partitions=1, rf=1, min_isr=1)
        with conveyor.Producer(cluster.url, acks="all", linger_ms=0) as producer:
            acked = {
                producer.send("w3-durable", f"v{n}".encode()).result(timeout=30).offset: n
                for n in range(COUNT)
            }
            cluster.brokers[1].kill()  # SIGKILL at once after the last acknowledgement
        cluster.add_broker(1)  # same id and data, restarted
        stored = dict(read_partition(cluster, "w3-durable", 0))
    finally:
        cluster.stop()
    assert len(acked) == COUNT
    for offset, n in acked.items():
        assert stored.get(offset) == f"v{n}".encode(), f"acknowledged offset {offset} lost"
