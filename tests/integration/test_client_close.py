"""Closing a client while its requests are in flight, over TLS, leaves nothing open.

The regression behind the intermittent failures of the suite's HTTPS pass: a request
cancelled by ``close()`` closed its TLS connection gracefully (a close_notify exchange the
connector no longer tracked), so with a peer that did not answer in time (paused, or
simply slower than the client's loop shutdown) the transport outlived the client: a
ResourceWarning when it was garbage-collected during a later test, or uvloop refusing to
close the loop (EBUSY). The broker is paused (SIGSTOP) here so that requests are surely in
flight at ``close()``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

import conveyor
from conveyor.client.loop import new_event_loop
from conveyor.transport.certs import init_certs
from conveyor.transport.tls import TLSConfig
from tests.integration.cluster import Cluster, Service, wait_for

TOPIC = "closing"
CLOSE_S_MAX = 10.0  # close() must not wait for a paused peer


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("close-tls")
    init_certs(root / "certs")
    cluster = Cluster(root, broker_count=1, tls_dir=root / "certs", internal_mtls=False)
    cluster.start()
    try:
        with conveyor.Producer(url=cluster.url, tls=_tls(cluster)) as producer:
            for i in range(200):
                producer.send(TOPIC, b"v" * 100, key=f"k{i}")
        yield cluster
    finally:
        cluster.stop()


def _tls(cluster: Cluster) -> TLSConfig:
    assert cluster.ca is not None
    return TLSConfig(cafile=str(cluster.ca))


def _broker(cluster: Cluster) -> Service:
    return cluster.brokers[1]


@contextmanager
def paused(service: Service) -> Iterator[None]:
    assert service.process is not None
    os.kill(service.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(service.process.pid, signal.SIGCONT)


@contextmanager
def no_leaks() -> Iterator[None]:
    """Fail when a transport or socket of this block is left for the garbage collector."""
    leaked: list[str] = []
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        leaked.append(f"{unraisable.exc_value!r} in {unraisable.object!r}")

    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            yield
            gc.collect()
    finally:
        sys.unraisablehook = previous
    assert not leaked, "left open after close():\n" + "\n".join(leaked)


def _timed(close: Callable[[], None]) -> float:
    started = time.monotonic()
    close()
    return time.monotonic() - started


def test_sync_producer_closed_with_requests_in_flight(tls_cluster: Cluster) -> None:
    with no_leaks():
        producer = conveyor.Producer(url=tls_cluster.url, tls=_tls(tls_cluster), linger_ms=0)
        producer.send(TOPIC, b"first", key="a").result(30)  # connections are open
        with paused(_broker(tls_cluster)):
            futures = [producer.send(TOPIC, b"x", key=f"k{i}") for i in range(20)]
            sender = producer._core.sender
            wait_for(lambda: len(sender._in_flight) > 0, 10, "produce requests in flight")
            assert _timed(lambda: producer.close(timeout=0.5)) < CLOSE_S_MAX
        assert all(f.done() for f in futures)


def test_sync_consumer_closed_with_fetches_in_flight(tls_cluster: Cluster) -> None:
    with no_leaks():
        consumer = conveyor.Consumer(
            url=tls_cluster.url, topics=[TOPIC], tls=_tls(tls_cluster), fetch_max_wait_ms=500
        )
        deadline = time.monotonic() + 30
        while not consumer.poll(timeout=1.0):  # long-poll fetches now run
            assert time.monotonic() < deadline, "nothing consumed"
        with paused(_broker(tls_cluster)):
            fetcher = consumer._core.fetcher
            wait_for(lambda: len(fetcher._tasks) > 0, 10, "fetches in flight")
            assert _timed(lambda: consumer.close(timeout=2.0)) < CLOSE_S_MAX


def test_async_clients_closed_with_requests_in_flight(tls_cluster: Cluster) -> None:
    """The async twins on the caller's own loop (uvloop, as services and users run it):
    the loop closes cleanly right after ``close()`` (no EBUSY, no stray transport)."""
    tls = _tls(tls_cluster)

    async def main() -> None:
        producer = conveyor.AsyncProducer(url=tls_cluster.url, tls=tls, linger_ms=0)
        consumer = conveyor.AsyncConsumer(url=tls_cluster.url, topics=[TOPIC], tls=tls)
        await producer.send(TOPIC, b"first", key="a")
        deadline = time.monotonic() + 30
        while not await consumer.poll(timeout=1.0):
            assert time.monotonic() < deadline, "nothing consumed"
        with paused(_broker(tls_cluster)):
            for i in range(20):
                await producer.enqueue(TOPIC, b"x", key=f"k{i}")
            started = time.monotonic()
            await producer.close(timeout=0.5)
            await consumer.close()
            assert time.monotonic() - started < CLOSE_S_MAX

    with no_leaks():
        loop = new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()  # uvloop: OSError EBUSY if a transport were still open
        asyncio.set_event_loop(None)
