"""``--json`` output carries every field, defaults included."""

from __future__ import annotations

import json

import pytest

from conveyor.cli.output import every_field, print_json
from conveyor.protocol.messages import BrokerId, BrokerInfo, ClusterStatus, GroupSummary


def test_defaults_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    status = ClusterStatus(
        cluster_id="c",
        version="v",
        brokers=[BrokerInfo(broker_id=BrokerId(1), url="http://b")],
        topics=0,
        partitions=0,
    )
    print_json(status)
    body = json.loads(capsys.readouterr().out)
    assert body["offline_partitions"] == 0 and body["under_replicated_partitions"] == 0
    broker = body["brokers"][0]
    assert set(broker) == set(BrokerInfo.__struct_fields__)  # every field, defaults too
    assert broker["alive"] is True and broker["leader_count"] == 0
    print_json([GroupSummary(group="g", state="empty", generation=0, members=0)])
    assert json.loads(capsys.readouterr().out)[0]["lag"] == 0


def test_plain_values_pass_through() -> None:
    assert every_field({"a": [1, ("x", None)]}) == {"a": [1, ["x", None]]}
