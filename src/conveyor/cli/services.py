"""``conveyor coordinator`` and ``conveyor broker``: run one service in the foreground.

``conveyor broker decommission ID [--wait]`` drains a broker through the coordinator;
without that action ``conveyor broker --id N ...`` runs a broker (``--id`` is checked when
the broker starts, so the action does not need it).

The options live with each service (``conveyor.coordinator.cli``, ``conveyor.broker.cli``)
so that ``python -m conveyor.coordinator`` and ``conveyor coordinator`` are the same.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_ERROR, EXIT_OK
from conveyor.cli.output import add_json_flag, add_url_flag, print_json, print_line

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    from conveyor.broker import cli as broker_cli
    from conveyor.coordinator import cli as coordinator_cli

    coordinator = subparsers.add_parser(
        "coordinator",
        help="run the coordinator (cluster metadata, placement, offsets)",
        description="Run the coordinator: broker membership, partition placement, topic "
        "admin and committed offsets, durable in SQLite under --data.",
    )
    coordinator_cli.add_arguments(coordinator)
    coordinator.set_defaults(handler=coordinator_cli.run)
    coordinator_actions = coordinator.add_subparsers(
        title="actions", dest="coordinator_action", metavar="ACTION"
    )
    migrate = coordinator_actions.add_parser(
        "migrate",
        help="copy the cluster's metadata between stores (SQLite <-> etcd)",
        description="Copy brokers, topics, partitions, producer ids and committed offsets, "
        "with the cluster id, from one store to the other: sqlite:DIR -> etcd://HOST:PORT,... "
        "(an empty prefix; no coordinator active on it) or back (a new DIR). Stop the "
        "coordinators first. docs/deployment.md",
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="STORE")
    migrate.add_argument("--to", dest="target", required=True, metavar="STORE")
    from conveyor.settings import catalog
    from conveyor.settings.flags import add_flags

    add_flags(migrate, [catalog.ETCD_PREFIX, catalog.ETCD_CA, catalog.ETCD_CERT, catalog.ETCD_KEY,
                        catalog.ETCD_USER, catalog.CONFIG])  # fmt: skip
    migrate.set_defaults(handler=coordinator_cli.run_migrate)

    broker = subparsers.add_parser(
        "broker",
        help="run a broker (stores partitions, serves produce and fetch)",
        description="Run a broker: registers with the coordinator, hosts the partitions it "
        "is assigned, and serves produce and fetch over HTTP.",
    )
    broker_cli.add_arguments(broker)
    for action in broker._actions:
        if "--id" in action.option_strings:
            action.required = False  # an action needs no id; running a broker does
    broker.set_defaults(handler=broker_cli.run)
    actions = broker.add_subparsers(title="actions", dest="broker_action", metavar="ACTION")
    decommission = actions.add_parser(
        "decommission",
        help="drain a broker: move its replicas to others before it is stopped",
        description="Ask the coordinator to move every replica off broker ID, the safe way "
        "(new replica first, in sync, then the old one removed). With --wait, return once it "
        "holds nothing.",
    )
    decommission.add_argument("broker_id", metavar="ID", type=int)
    decommission.add_argument("--wait", action="store_true", help="wait until it is drained")
    decommission.add_argument(
        "--timeout-s", type=float, default=600.0, help="give up waiting after this long (600)"
    )
    add_url_flag(decommission)
    add_json_flag(decommission)
    decommission.set_defaults(handler=_decommission)


_POLL_INTERVAL_S = 0.5


def _decommission(args: argparse.Namespace) -> int:
    from conveyor.client import Admin

    with Admin(args.url) as admin:
        status = admin.decommission_broker(args.broker_id)
        deadline = time.monotonic() + args.timeout_s
        while args.wait and not status.done and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL_S)
            status = admin.decommission_status(args.broker_id)
    if args.json:
        print_json(status)
    else:
        state = "drained" if status.done else "draining"
        print_line(
            f"broker {status.broker_id} {state}: {status.replica_count} replica(s), "
            f"{status.leader_count} leadership(s) left"
        )
    return EXIT_OK if status.done or not args.wait else EXIT_ERROR
