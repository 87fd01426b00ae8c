"""The heartbeat round: a broker whose hosting changed on applying an answer reports again
at once, and only once per round (so a new topic's leaders reach every broker's Kafka
Metadata within a round trip, not a heartbeat interval later)."""

from __future__ import annotations

import asyncio

from conveyor.broker.heartbeat import Heartbeat, HeartbeatLink
from conveyor.protocol.messages import (
    BrokerHeartbeat,
    BrokerId,
    Epoch,
    HeartbeatResponse,
    PartitionReport,
)


class _Broker:
    """Hosts one more replica for each answer it applies, while ``opens`` lasts."""

    def __init__(self, opens: int) -> None:
        self.opens = opens
        self.hosted: list[PartitionReport] = []
        self.sent: list[int] = []  # how many replicas each heartbeat reported

    def report(self) -> BrokerHeartbeat:
        return BrokerHeartbeat(broker_id=BrokerId(1), url="http://b1", partitions=self.hosted)

    async def send(self, beat: BrokerHeartbeat) -> HeartbeatResponse:
        self.sent.append(len(beat.partitions))
        return HeartbeatResponse(cluster_id="c", assignments=[], topic_configs={}, brokers=[])

    async def apply(self, response: HeartbeatResponse) -> bool:
        if self.opens:
            self.opens -= 1
            report = PartitionReport(
                topic="t",
                partition=len(self.hosted),
                leader_epoch=Epoch(0),
                log_start_offset=0,
                log_end_offset=0,
                high_watermark=0,
            )
            self.hosted = [*self.hosted, report]
        return True


def _heartbeat(broker: _Broker) -> Heartbeat:
    async def nothing() -> None:
        return None

    link = HeartbeatLink(
        report=broker.report,
        send=broker.send,
        apply=broker.apply,
        refresh=nothing,
        interval_ms=lambda: 1000,
        stopping=lambda: False,
        broker_id=1,
        coordinator="http://c",
        max_backoff_ms=1000,
    )
    return Heartbeat(link, on_ready=nothing, start=nothing)


def test_a_round_that_opened_a_replica_reports_it_at_once() -> None:
    broker = _Broker(opens=1)
    assert asyncio.run(_heartbeat(broker).beat_once())
    assert broker.sent == [0, 1]


def test_a_round_that_changed_nothing_sends_one_heartbeat() -> None:
    broker = _Broker(opens=0)
    assert asyncio.run(_heartbeat(broker).beat_once())
    assert broker.sent == [0]


def test_answers_that_keep_changing_cost_two_heartbeats_a_round_not_a_busy_loop() -> None:
    broker = _Broker(opens=10)
    heartbeat = _heartbeat(broker)

    async def rounds() -> None:
        for _ in range(3):
            await heartbeat.beat_once()

    asyncio.run(rounds())
    assert broker.sent == [0, 1, 2, 3, 4, 5]
