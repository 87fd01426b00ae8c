"""The broker's metadata cache keeps a broker's Kafka address through a coordinator
restart (broker/metadata.py, KAFKA_ADDRESS_GRACE_MS)."""

from __future__ import annotations

from conveyor.broker.kafka.metadata import kafka_nodes
from conveyor.broker.metadata import KAFKA_ADDRESS_GRACE_MS, MetadataCache
from conveyor.protocol.messages import BrokerId, BrokerInfo


def _broker(broker_id: int, kafka_address: str | None, url: str = "") -> BrokerInfo:
    return BrokerInfo(
        broker_id=BrokerId(broker_id),
        url=url or f"http://127.0.0.1:{7000 + broker_id}",
        kafka_address=kafka_address,
    )


def test_a_coordinator_that_forgot_the_addresses_does_not_empty_kafka_metadata() -> None:
    now = [0]
    cache = MetadataCache(None, "http://coordinator", clock_ms=lambda: now[0])  # type: ignore[arg-type]
    cache.update_brokers([_broker(1, "127.0.0.1:9001"), _broker(2, "127.0.0.1:9002")])
    now[0] = 5_000  # the coordinator restarted: no broker has sent its address yet
    merged = cache.update_brokers([_broker(1, None), _broker(2, None)])
    assert [n.port for n in kafka_nodes(merged)] == [9001, 9002]
    assert [n.port for n in kafka_nodes(list(cache.brokers.values()))] == [9001, 9002]
    now[0] = 5_000 + KAFKA_ADDRESS_GRACE_MS + 1  # still none: broker 2 has no listener now
    merged = cache.update_brokers([_broker(1, "127.0.0.1:9001"), _broker(2, None)])
    assert [n.node_id for n in kafka_nodes(merged)] == [1]


def test_a_broker_at_a_new_url_does_not_inherit_the_old_address() -> None:
    cache = MetadataCache(None, "http://coordinator", clock_ms=lambda: 0)  # type: ignore[arg-type]
    cache.update_brokers([_broker(1, "127.0.0.1:9001")])
    merged = cache.update_brokers([_broker(1, None, url="http://127.0.0.1:8123")])
    assert kafka_nodes(merged) == []
