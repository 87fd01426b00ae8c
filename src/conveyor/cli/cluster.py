"""``conveyor cluster status``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_ERROR, EXIT_OK
from conveyor.cli.output import add_json_flag, add_url_flag, print_json, print_line, print_table

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    cluster = subparsers.add_parser("cluster", help="cluster-wide views")
    actions = cluster.add_subparsers(
        title="actions", dest="action", metavar="ACTION", required=True
    )
    status = actions.add_parser(
        "status", help="brokers, partitions, offline and under-replicated partitions"
    )
    add_url_flag(status)
    add_json_flag(status)
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    with Admin(args.url) as admin:
        status = admin.cluster()
    if args.json:
        print_json(status)
    else:
        rows = [
            (
                b.broker_id,
                b.url or b.kafka_address,  # over Kafka (--bootstrap-server): its listener
                "up" if b.alive else "DOWN",
                b.leader_count,
                b.replica_count,
            )
            for b in status.brokers
        ]
        version = f" (conveyor {status.version})" if status.version else ""
        print_table(
            f"cluster {status.cluster_id}{version}",
            ("broker", "url", "state", "leaders", "replicas"),
            rows,
        )
        print_line(
            f"topics {status.topics}, partitions {status.partitions}, "
            f"offline {status.offline_partitions}, "
            f"under-replicated {status.under_replicated_partitions}"
        )
    healthy = all(b.alive for b in status.brokers) and status.offline_partitions == 0
    # Non-zero when a broker is down or a partition offline, so scripts can gate on it.
    return EXIT_OK if healthy else EXIT_ERROR
