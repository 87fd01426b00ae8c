"""Finding the active coordinator among several (issue 20), for every client of it:
brokers (heartbeats, AlterIsr, security, metadata, and the Kafka listener's forwarded group
and admin requests), the Python clients and the CLI.

A :class:`CoordinatorSet` holds the URLs a process was given (``--coordinator
URL,URL,URL``, ``CONVEYOR_URL`` with commas) and the one it believes active. The HTTP
clients (``client.py``) route every request whose URL starts with one of those URLs to the
believed-active one, and on the way:

* a ``NOT_COORDINATOR`` answer (a standby, or a coordinator that lost its lease; nothing
  was done) names the active one in ``details.active_url``: the request goes there;
* a connection that could not be opened (nothing was sent) moves on to the next URL;
* when no coordinator is active (an election, etcd without quorum), after one round over
  the URLs the request waits a little and tries another round, within
  :data:`FAILOVER_WAIT_S`, then raises the last retriable error;
* a coordinator that accepts the request but does not answer (paused, or stuck): every
  :data:`TAKEOVER_PROBE_S` of silence the client asks the other coordinators who is
  active (``GET /v1/coordinator``); once another one says it is active with a later
  epoch than the silent one reports (or the silent one does not answer that either),
  the silent one can no longer commit anything (its etcd writes are fenced by its lost
  lease), so the request goes to the new active one as after a ``NOT_COORDINATOR``
  (:func:`takeover_by`); an answer that arrives while the others are asked is the
  outcome. A request the old one committed just before it stopped
  answering may then be refused as a duplicate (``TOPIC_ALREADY_EXISTS``), as Kafka's
  admin client retrying after a timeout may be;
* any other failure (a timeout after sending, with nobody else active) may have had an
  effect: it is raised as before, and the next request starts with the next URL.

Callers keep building URLs on :attr:`CoordinatorSet.primary` (the first URL given);
with a single URL nothing changes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.messages import CoordinatorStatus
from conveyor.transport.waits import gather_all

FAILOVER_WAIT_S: Final = 6.0  # an election on a 2-5 s lease finishes within this
ROUND_PAUSE_S: Final = (0.1, 0.25, 0.5, 1.0)  # between rounds over every URL
# A request unanswered this long: ask the other coordinators whether one took over (and
# again after each such period). Short against an election (lease 2-5 s), long against an
# answer on a loaded host; a slow active coordinator is never left (see takeover_by).
TAKEOVER_PROBE_S: Final = 1.0
STATUS_TIMEOUT_S: Final = 1.0  # for each GET /v1/coordinator of those probes
T = TypeVar("T")
# GET /v1/coordinator of one URL: its status, or None when it did not answer
StatusProbe = Callable[[str], Awaitable[CoordinatorStatus | None]]


def takeover_by(
    silent: CoordinatorStatus | None, others: Mapping[str, CoordinatorStatus | None]
) -> str | None:
    """A request to a coordinator is unanswered; ``silent`` is that coordinator's own
    status (None: it did not answer that either) and ``others`` the statuses of the other
    URLs (None: no answer). The URL of the coordinator that took over, or None to keep
    waiting.

    Another coordinator saying ``active`` holds the lease in etcd, so the silent one's
    writes are fenced, unless the silent one says it is active at the same or a later
    epoch (the other's view is stale). Worked examples: silent None, others {b: active
    epoch 8} -> b (a paused active one, or a paused standby); silent active epoch 7,
    others {b: active epoch 8} -> b (the silent one has not noticed its lost lease); silent
    active epoch 8, others {b: active epoch 7} -> None (b is the stale one: the silent one
    is merely slow); others all standby or silent -> None (an election: keep waiting).
    """
    claims = [(status.epoch, url) for url, status in others.items()
              if status is not None and status.role == "active"]  # fmt: skip
    if not claims:
        return None
    epoch, url = max(claims)
    if silent is not None and silent.role == "active" and silent.epoch >= epoch:
        return None
    return url


def claims_active(statuses: Mapping[str, CoordinatorStatus | None]) -> bool:
    """Whether any says it is active (else the silent one's own status is not needed)."""
    return any(s is not None and s.role == "active" for s in statuses.values())


def takeover_error(
    silent: str, others: Mapping[str, CoordinatorStatus | None], status: CoordinatorStatus | None
) -> RetriableError | None:
    """The NOT_COORDINATOR that gives up a request to ``silent`` (``status``: its own
    answer) naming the coordinator that took over, or None to keep waiting."""
    new = takeover_by(status, others)
    if new is None:
        return None
    message = f"{silent} has not answered for {TAKEOVER_PROBE_S} s and {new} is active"
    return RetriableError(message, code=ErrorCode.NOT_COORDINATOR, active_url=new)


def parse_coordinator_urls(text: str) -> tuple[str, ...]:
    """``URL[,URL...]`` -> the distinct URLs, without trailing slashes, in order. Raises
    ValueError naming the bad one (each must be ``http(s)://host[:port]``, no path)."""
    urls: list[str] = []
    for raw in text.split(","):
        url = raw.strip().rstrip("/")
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise ValueError(f"coordinator URL {url!r} is not http(s)://HOST:PORT")
        if url not in urls:
            urls.append(url)
    if not urls:
        raise ValueError("no coordinator URL given")
    return tuple(urls)


class CoordinatorSet:
    """Thread-safe: the sync client is shared between threads."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("a coordinator set needs at least one URL")
        self.urls = tuple(urls)
        self._active = self.urls[0]
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str) -> CoordinatorSet:
        return cls(parse_coordinator_urls(text))

    @property
    def primary(self) -> str:
        """What callers build request URLs on."""
        return self.urls[0]

    @property
    def active(self) -> str:
        with self._lock:
            return self._active

    def origin_of(self, url: str) -> str | None:
        """The listed URL ``url`` starts with (a request to a coordinator), or None."""
        for known in self.urls:
            if url == known or url.startswith(known + "/") or url.startswith(known + "?"):
                return known
        with self._lock:
            active = self._active
        if url.startswith(active + "/"):
            return active
        return None

    def target(self, url: str, origin: str) -> str:
        """``url`` sent to the believed-active coordinator instead of ``origin``."""
        return self.active + url[len(origin) :]

    def redirected(self, active_url: object) -> bool:
        """A coordinator named the active one; whether it was usable."""
        if not isinstance(active_url, str):
            return False
        try:
            (url,) = parse_coordinator_urls(active_url)
        except ValueError:
            return False
        with self._lock:
            self._active = url
        return True

    def failed(self, url: str) -> None:
        """``url`` did not answer: believe the next listed one active (if ``url`` was it)."""
        with self._lock:
            if self._active != url:
                return
            index = self.urls.index(url) if url in self.urls else -1
            self._active = self.urls[(index + 1) % len(self.urls)]

    def __repr__(self) -> str:
        return f"CoordinatorSet({','.join(self.urls)}, active={self.active})"


class NotSentError(Exception):
    """The connection could not be opened: the request never left, any URL may take it."""

    def __init__(self, error: RetriableError) -> None:
        super().__init__(str(error))
        self.error = error


class Failover:
    """One request's way to the active coordinator (``coordinators.py``): which URL to
    try next, and when to give up."""

    def __init__(self, coordinators: CoordinatorSet, url: str, origin: str) -> None:
        self.coordinators = coordinators
        self.url = url
        self.origin = origin
        self.tried = 0
        self.rounds = 0
        self.last: ConveyorError | None = None
        self.started = time.monotonic()

    def after(self, active: str, exc: NotSentError | ConveyorError) -> float:
        """An attempt at ``active`` failed with ``exc``: the pause before the next one, or
        ``exc`` (or the last refusal) raised when the request must fail. The one rule of
        the sync and async clients' loops."""
        if isinstance(exc, NotSentError):
            self.failed(active, exc.error)
        elif exc.code is ErrorCode.NOT_COORDINATOR:
            self.failed(active, exc)
        else:
            if exc.code is ErrorCode.NETWORK_ERROR:
                self.coordinators.failed(active)  # the next request tries another
            raise exc
        pause = self.pause_s(time.monotonic() - self.started)
        if pause is None:
            assert self.last is not None
            raise self.last
        return pause

    def next_url(self) -> tuple[str, str]:
        self.tried += 1
        active = self.coordinators.active
        return active, self.coordinators.target(self.url, self.origin)

    def failed(self, target: str, error: ConveyorError) -> None:
        """Nothing happened at ``target``: note where to go next."""
        self.last = error
        if error.code is ErrorCode.NOT_COORDINATOR:
            named = error.details.get("active_url")
            if named != target and self.coordinators.redirected(named):
                return
        self.coordinators.failed(target)

    def pause_s(self, elapsed_s: float) -> float | None:
        """After a round over every URL: how long to wait before the next, or None to
        give up (raise ``last``)."""
        if self.tried <= len(self.coordinators.urls):
            return 0.0
        pause = ROUND_PAUSE_S[min(self.rounds, len(ROUND_PAUSE_S) - 1)]
        if elapsed_s + pause > FAILOVER_WAIT_S:
            return None
        self.rounds += 1
        self.tried = 0
        return pause


async def with_failover(
    coordinators: CoordinatorSet | None,
    url: str,
    send: Callable[[str], Awaitable[T]],
    status: StatusProbe | None = None,
) -> T:
    """``send(target)`` to the believed-active coordinator, following the rules above,
    when ``url`` is a coordinator's; else ``send(url)`` once. ``send`` raises
    :class:`NotSentError` when the connection could not be opened (for a URL that is no
    coordinator's, its retriable error is raised); with ``status``, an attempt unanswered
    while another coordinator took over is given up."""
    origin = None if coordinators is None else coordinators.origin_of(url)
    if coordinators is None or origin is None:
        try:
            return await send(url)
        except NotSentError as exc:
            raise exc.error from exc.__cause__
    failover = Failover(coordinators, url, origin)
    while True:
        active, target = failover.next_url()
        try:
            if status is None or len(coordinators.urls) == 1:
                return await send(target)
            return await _watched(coordinators, active, send(target), status)
        except (NotSentError, ConveyorError) as exc:
            pause = failover.after(active, exc)
        await asyncio.sleep(pause)


async def _watched(
    coordinators: CoordinatorSet, silent: str, request: Awaitable[T], status: StatusProbe
) -> T:
    """``request`` to the coordinator ``silent``, given up (NOT_COORDINATOR) when it has
    not answered and another coordinator took over."""
    task = asyncio.ensure_future(request)
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=TAKEOVER_PROBE_S)
            if done:
                return task.result()
            urls = [u for u in coordinators.urls if u != silent]
            others = dict(zip(urls, await gather_all(*map(status, urls)), strict=True))
            own = await status(silent) if claims_active(others) else None
            error = takeover_error(silent, others, own)
            if task.done():  # it answered while the others were asked: its outcome counts
                return task.result()
            if error is not None:
                raise error
    finally:
        if not task.done():
            task.add_done_callback(_retrieve)
            task.cancel()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """An abandoned request's outcome, read so that asyncio does not report it."""
    if not task.cancelled():
        task.exception()
