"""``conveyor coordinator`` and ``conveyor broker``: run one service in the foreground.

The options live with each service (``conveyor.coordinator.cli``, ``conveyor.broker.cli``)
so that ``python -m conveyor.coordinator`` and ``conveyor coordinator`` are the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

    broker = subparsers.add_parser(
        "broker",
        help="run a broker (stores partitions, serves produce and fetch)",
        description="Run a broker: registers with the coordinator, hosts the partitions it "
        "is assigned, and serves produce and fetch over HTTP.",
    )
    broker_cli.add_arguments(broker)
    broker.set_defaults(handler=broker_cli.run)
