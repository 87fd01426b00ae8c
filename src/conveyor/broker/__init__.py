"""The broker: hosts partition replicas and serves produce and fetch for those it leads.

Layout: a pure core (``(state, event, now_ms) -> (state, effects)``, no I/O, no clock)
inside a thin shell that performs its effects (docs/architecture.md)::

    core.py         the core: dispatch, assignments, ticks, queries          pure
    replica.py      one replica: role, high watermark, ISR, acks, disk      pure
    leader.py       followers' fetches: fencing, progress, long-polls       pure
    follower.py     fetch sessions per leader, truncation (KIP-101)         pure
    corestate.py    the core's state values                                 pure
    reconcile.py    hosted replicas + the coordinator's assignments         pure
    rules.py        leaf rules: HW, ISR change, truncation point, dedup     pure
    producers.py    idempotent producers' state from batch headers          pure
    routing.py      which partition each record of the topic endpoint       pure
    jsonrecords.py  JSON records <-> record batches                         pure
    driver.py       performs the core's effects, steps what they report     shell
    replicas.py     the data dir and the logs (storage effects)             shell
    peers.py        replication messages over HTTP                          shell
    replica_server.py the leader's answers to followers (reads, framing)    shell
    service.py      BrokerService: produce, fetch, offsets; no transport    shell
    router.py       the topic-level routing endpoint (forwards)             shell
    metadata.py     cache of the coordinator's metadata                     shell
    heartbeat.py    the heartbeat loop (narrow: a HeartbeatLink)            shell
    http.py         the HTTP adapter (routes); kafka/ the Kafka adapter
    cli.py          command line; ``python -m conveyor.broker``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.broker.config import BrokerConfig
    from conveyor.broker.service import BrokerService, FetchResult

__all__ = ["BrokerConfig", "BrokerService", "FetchResult"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``conveyor --help`` (which imports conveyor.broker.cli) stays fast.
    if name == "BrokerConfig":
        from conveyor.broker.config import BrokerConfig

        return BrokerConfig
    if name in ("BrokerService", "FetchResult"):
        from conveyor.broker import service

        return getattr(service, name)
    raise AttributeError(name)
