"""``conveyor chaos``: a Jepsen-style fault-injection run against a local cluster.

Starts a coordinator and ``--brokers`` brokers on 127.0.0.10 and up, runs producers and a
consumer group while the nemesis injects ``--faults`` on a schedule drawn from ``--seed``,
heals everything, reads every partition and checks the history (see
:mod:`conveyor.chaos.checker`). Exit 0 only when every safety count is 0, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_ERROR, EXIT_OK, positive_int

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    from conveyor.chaos.schedule import DEFAULT_FAULTS, FAULTS

    chaos = subparsers.add_parser(
        "chaos",
        help="run a fault-injection campaign and check every acknowledged write",
        description="Run producers and a consumer group against a local cluster while "
        "killing, pausing and partitioning its processes; check the history for lost, "
        "duplicated, reordered and aborted writes and bad polls. Exit 0 only when every "
        f"safety count is 0. Faults: {', '.join(FAULTS)}.",
    )
    chaos.add_argument("--duration", type=positive_int, default=60, help="seconds (default 60)")
    chaos.add_argument("--seed", type=int, default=None, help="schedule seed (default random)")
    chaos.add_argument("--brokers", type=positive_int, default=3, help="(default 3)")
    chaos.add_argument(
        "--faults",
        type=_faults,
        default=DEFAULT_FAULTS,
        help=f"comma-separated (default {','.join(DEFAULT_FAULTS)}; 'all' for every one)",
    )
    chaos.add_argument(
        "--replication-factor",
        type=positive_int,
        default=None,
        help="of the workload topic (default: the cluster's default)",
    )
    chaos.add_argument("--data", type=Path, default=None, help="run directory (default a temp dir)")
    chaos.add_argument(
        "--ha",
        action="store_true",
        help="three coordinators on a 3-member etcd (needed by the faults kill-active-"
        "coordinator, pause-active-coordinator, partition-coordinator-etcd, kill-etcd, "
        "etcd-quorum-loss) and the two-active-coordinators check",
    )
    chaos.add_argument(
        "--workload",
        choices=("stream", "queue", "txn"),
        default="stream",
        help="stream: producers and a consumer group (default); queue: the same producers "
        "and two share groups (key_ordered, unordered) acknowledging, releasing and "
        "rejecting, with their dead-letter topics; txn: transactions (writers, "
        "read-then-write processors, read_committed readers; G1a/G1b/G1c checks) "
        "(docs/reliability.md)",
    )
    chaos.add_argument(
        "--results",
        type=Path,
        default=None,
        help="also record the results as a section of this Markdown file "
        "(make chaos: docs/reliability.md)",
    )
    chaos.set_defaults(handler=_run)


def _faults(text: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list of known faults (a usage error otherwise)."""
    from conveyor.chaos.schedule import FAULTS

    faults = FAULTS if text == "all" else tuple(f for f in text.split(",") if f)
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown or not faults:
        raise argparse.ArgumentTypeError(
            f"unknown faults {unknown}; known: {', '.join(FAULTS)}, or all"
        )
    return faults


def _run(args: argparse.Namespace) -> int:
    from conveyor.chaos.runner import NotRunningError

    faults: tuple[str, ...] = args.faults
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    try:
        if args.workload == "txn":
            return _run_txn(args, faults, seed)
        return _run_stream(args, faults, seed)
    except NotRunningError as e:  # the cluster or the workload does not work: no verdict
        print(f"conveyor chaos: seed {seed}: {e}", file=sys.stderr)
        return EXIT_ERROR


def _run_stream(args: argparse.Namespace, faults: tuple[str, ...], seed: int) -> int:
    from conveyor.chaos.runner import record_results, render, results_markdown, run

    report = run(
        float(args.duration),
        seed,
        faults,
        brokers=args.brokers,
        root=args.data,
        replication_factor=args.replication_factor,
        ha=args.ha,
        workload_name=args.workload,
    )
    print(render(report))
    if args.results is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        record_results(args.results, results_markdown(report, when, _revision()))
        print(f"results recorded in {args.results}")
    return EXIT_OK if report.result.valid else EXIT_ERROR


def _run_txn(args: argparse.Namespace, faults: tuple[str, ...], seed: int) -> int:
    from conveyor.chaos import txn_run
    from conveyor.chaos.runner import record_results

    report = txn_run.run(
        float(args.duration), seed, faults, brokers=args.brokers, root=args.data,
        replication_factor=args.replication_factor, ha=args.ha,
    )  # fmt: skip
    print(txn_run.render(report))
    if args.results is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        record_results(args.results, txn_run.results_markdown(report, when, _revision()))
        print(f"results recorded in {args.results}")
    return EXIT_OK if report.valid else EXIT_ERROR


def _revision() -> str:
    """The git commit of the tree under test (with ``+dirty`` when it has changes)."""
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit or "unknown"
