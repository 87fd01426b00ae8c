"""The seed's three functions, exactly: ``push``, ``pull`` and ``subscribe``.

They use the topic ``default``, the group ``default`` and the coordinator at
``CONVEYOR_URL`` (default ``http://127.0.0.1:7700``). ``push`` and ``pull`` share one
module-level producer and consumer, made on first use (and made again if
``CONVEYOR_URL`` or the transport settings change); each ``subscribe`` is a new consumer
of its own. The group starts from the earliest offset when it has no committed position,
so messages pushed before anyone listened are still delivered. Delivery is
at-least-once. Every consumer here is a member of the group, so across processes each
message goes to one of them (docs/consumer-groups.md). The clients close at interpreter
exit (``atexit``), leaving the group, so the next run gets its partitions at once; with
``CONVEYOR_GROUP_INSTANCE_ID`` set they are static members, so even a run killed without
exiting is replaced at once by the next one with the same id. All three speak the Kafka
protocol to the brokers when ``CONVEYOR_BOOTSTRAP_SERVERS`` (or
``CONVEYOR_TRANSPORT=kafka``) is set, ``pull`` and ``subscribe`` as KIP-848 members of
the group (docs/client.md, "Transports").
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

from conveyor.client.consumer import Consumer
from conveyor.client.producer import Producer
from conveyor.client.transport_choice import client_transport
from conveyor.client.types import BytesLike, Message, key_to_text
from conveyor.transport.client import default_url

log = logging.getLogger(__name__)

DEFAULT_TOPIC: Final = "default"
DEFAULT_GROUP: Final = "default"
PULL_WAIT_MAX_S: Final = 5.0  # pull() gives up looking after this long, returning None
PULL_FETCH_WAIT_MS: Final = 100  # a short long-poll, so "nothing waiting" is known fast

_lock = threading.Lock()
_subscriptions = itertools.count(1)  # numbers this process's subscriptions, for instance ids
_producer: Producer | None = None
_producer_settings: tuple[str, str | None, str | None] | None = None  # what _producer was made with
_consumer: Consumer | None = None
_consumer_settings: tuple[str, str | None, str | None] | None = None  # what _consumer was made with


def _instance_id(role: str) -> str | None:
    """``$CONVEYOR_GROUP_INSTANCE_ID-pull`` (or ``-subscribe-N``): static membership, so a
    restarted process takes its partitions back at once even if the previous run was
    killed without leaving the group. Unset: dynamic members."""
    from conveyor.settings import catalog, client_settings

    base = client_settings()[catalog.GROUP_INSTANCE_ID]
    return f"{base}-{role}" if base else None


def _shared_producer() -> Producer:
    global _producer, _producer_settings  # noqa: PLW0603 -- the seed API is module-level
    url = default_url(None)
    # CONVEYOR_BOOTSTRAP_SERVERS: push() needs nothing but the brokers' Kafka listeners
    transport, servers = client_transport(None, None)
    settings = (url, transport, servers)
    with _lock:
        if _producer is not None and _producer_settings != settings:
            _producer.close()
            _producer = None
        if _producer is None:
            # push() waits for each acknowledgement: lingering would only add latency;
            # concurrent pushes from several threads still share batches.
            _producer = Producer(url, linger_ms=0, transport=transport, bootstrap_servers=servers)
            _producer_settings = settings
        return _producer


def _where() -> tuple[str, str | None, str | None]:
    """(coordinator URL, transport, bootstrap servers) from the client settings: the
    seed functions speak Kafka to the brokers, found through the coordinator (``url``) or
    ``CONVEYOR_BOOTSTRAP_SERVERS`` (then nothing but the brokers' listeners is needed).
    ``CONVEYOR_TRANSPORT=http`` fails with ``KafkaOnlyError``."""
    transport, servers = client_transport(None, None)
    return default_url(None), transport, servers


def _shared_consumer() -> Consumer:
    global _consumer, _consumer_settings  # noqa: PLW0603 -- the seed API is module-level
    settings = _where()
    url, transport, servers = settings
    with _lock:
        if _consumer is not None and _consumer_settings != settings:
            _consumer.close()
            _consumer = None
        if _consumer is None:
            # auto_commit_interval_ms=0: each pull() first commits what the previous one
            # returned (at-least-once; a pulled message is not redelivered after a clean
            # restart). The commit is skipped when nothing moved.
            _consumer = Consumer(
                url,
                DEFAULT_TOPIC,
                group_id=DEFAULT_GROUP,
                client_id="seed-pull",
                auto_offset_reset="earliest",
                auto_commit_interval_ms=0,
                fetch_max_wait_ms=PULL_FETCH_WAIT_MS,
                group_instance_id=_instance_id("pull"),
                transport=transport,
                bootstrap_servers=servers,
            )
            _consumer_settings = settings
        return _consumer


def push(key: BytesLike, value: BytesLike) -> None:
    """Send ``value`` under ``key`` (each str, as UTF-8, or bytes) and wait until the
    cluster has acknowledged it. Messages with the same key are delivered in push order."""
    _shared_producer().send(DEFAULT_TOPIC, value, key=key).result()


def pull() -> tuple[str | bytes | None, bytes | None] | None:
    """The next waiting message as ``(key, value)``, or None when nothing is waiting.

    The key is a str (bytes only if it is not valid UTF-8); the value is bytes. None
    means: this process's share of the group's partitions is all its own (joined, none
    still held by another member) and, as of fetches made after the call, none has a
    message beyond its position; or ``PULL_WAIT_MAX_S`` passed first (its share is still
    held by a member that went silent, such as an earlier run killed without exiting,
    until that member's session times out: docs/client.md).
    """
    consumer = _shared_consumer()
    deadline = time.monotonic() + PULL_WAIT_MAX_S
    rechecked = False
    while True:
        messages = consumer.poll(timeout=0.05, max_records=1)
        if messages:
            message = messages[0]
            return key_to_text(message.key), message.value
        settled = consumer.assignment_settled() and consumer.caught_up()
        if settled and not rechecked and consumer.waiting_for_topics():
            # "missing" may be the last periodic look's word, from before a push in this
            # process created the topic: ask once more, as of this call
            rechecked = True
            consumer.recheck_topics()
            continue
        if settled or time.monotonic() >= deadline:
            return None


class Subscription:
    """What ``subscribe`` returns: a running consumer thread, until :meth:`stop`."""

    def __init__(self, callback: Callable[[str | bytes | None, bytes | None], object]) -> None:
        self._callback = callback
        self.error: BaseException | None = None
        url, transport, servers = _where()
        self._consumer = Consumer(
            url,
            DEFAULT_TOPIC,
            group_id=DEFAULT_GROUP,
            client_id="seed-subscribe",
            auto_offset_reset="earliest",
            auto_commit_interval_ms=1_000,
            group_instance_id=_instance_id(f"subscribe-{next(_subscriptions)}"),
            transport=transport,
            bootstrap_servers=servers,
        )
        # Not a daemon: a script that only subscribes stays alive to receive messages.
        self._thread = threading.Thread(target=self._run, name="conveyor-subscribe")
        self._thread.start()

    def _deliver(self, message: Message) -> None:
        self._callback(key_to_text(message.key), message.value)

    def _run(self) -> None:
        try:
            # Positions are committed only after the callback returned (at the next
            # poll, at most once a second, and on stop): at-least-once delivery.
            self._consumer.run(self._deliver)
        except Exception as exc:
            self.error = exc
            log.exception("subscribe callback failed; the subscription stops")
        finally:
            self._consumer.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the current callback returns, commit, and wait for the thread
        (unless called from the callback itself)."""
        self._consumer.stop()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    close = stop

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def subscribe(callback: Callable[[str | bytes | None, bytes | None], object]) -> Subscription:
    """Call ``callback(key, value)`` for every message, in a new consumer on a new
    (non-daemon) thread; returns at once with a handle whose ``stop()`` ends it."""
    return Subscription(callback)


def close_shared() -> None:
    """Close the module-level producer and consumer of ``push`` and ``pull``."""
    global _producer, _consumer
    with _lock:
        producer, consumer, _producer, _consumer = _producer, _consumer, None, None
    if producer is not None:
        producer.close()
    if consumer is not None:
        consumer.close()
