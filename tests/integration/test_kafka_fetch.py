"""The consumer's Kafka fetch path against real brokers: one Fetch per broker naming every
partition it leads (client/kafka_fetcher.py), long polls that answer as soon as a
record lands, and every record once and in order across a leader move."""

from __future__ import annotations

import time

import conveyor
from conveyor.client.kafka_fetcher import FETCH_LANE
from tests.integration.cluster import Cluster, wait_for
from tests.integration.test_client import check_exactly_once_in_order, consume, keyed, make_topic
from tests.integration.test_kafka_transport import kafka_tls

PARTITIONS = 6


def _leaders(cluster: Cluster, topic: str) -> list[int | None]:
    with conveyor.Admin(cluster.url) as admin:
        return [p.leader for p in admin.describe_topic(topic).partitions]


def _fetch_lanes(consumer: conveyor.Consumer) -> set[str]:
    """The brokers the consumer's fetcher holds a fetch connection to."""
    connections = consumer._core.fetcher._connections  # type: ignore[attr-defined]
    return {address for address, lane in connections._open if lane == FETCH_LANE}


def test_partitions_on_several_brokers_survive_a_leader_move(cluster3: Cluster) -> None:
    """Six partitions led by three brokers: one fetch connection per broker (not per
    partition); a long poll wakes when a record lands, well before its max wait; then a
    leader dies mid-read and every record still arrives once, each key in order."""
    topic = "spread"
    make_topic(cluster3, topic, partitions=PARTITIONS, rf=3)
    leaders = _leaders(cluster3, topic)
    assert len(set(leaders)) > 1, f"leaders not spread: {leaders}"
    records = list(keyed(3_000, PARTITIONS * 2))
    tls = kafka_tls(cluster3)
    with (
        conveyor.Producer(bootstrap_servers=cluster3.bootstrap, tls=tls) as producer,
        conveyor.Consumer(
            topics=topic,
            bootstrap_servers=cluster3.bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10_000,
            enable_auto_commit=False,
            tls=tls,
        ) as consumer,
    ):
        # an empty topic: once every partition has its position, each broker's loop
        # sits in a 10 s long poll naming all the partitions it leads
        assert consumer.poll(timeout=0.5) == []
        wait_for(
            lambda: all(consumer.position(topic, p) is not None for p in range(PARTITIONS)),
            30,
            "every partition positioned",
        )
        assert consumer.poll(timeout=0.5) == []
        started = time.monotonic()
        producer.send(topic, "first", key="alone").result(timeout=10)
        first = consume(consumer, 1, timeout_s=8)
        assert [m.value for m in first] == [b"first"]
        assert time.monotonic() - started < 8  # answered on arrival, not at the 10 s wait
        assert len(_fetch_lanes(consumer)) == len({x for x in leaders if x is not None})

        for key, value in records[:1_500]:
            producer.send(topic, value, key=key)
        producer.flush()
        messages = consume(consumer, 1_000)
        gone = leaders[0]
        assert gone is not None
        cluster3.brokers[gone].stop()
        wait_for(
            lambda: _leaders(cluster3, topic)[0] not in (None, gone), 30, "a new leader for [0]"
        )
        for key, value in records[1_500:]:
            producer.send(topic, value, key=key)
        producer.flush()
        messages += consume(consumer, len(records) - len(messages), timeout_s=60)
    check_exactly_once_in_order(messages, len(records))
