"""Console sign-in sessions: server-side, in the coordinator's memory, with expiry.

A session is created by a successful sign-in (user and password, or an API token, checked
by the coordinator's ``whoami`` with exactly those credentials) or, with auth off, on the
first visit. The browser holds only a random 256-bit id in an ``HttpOnly; SameSite=Strict``
cookie (``Secure`` over HTTPS); the table is keyed by the id's SHA-256, so a memory dump
shows no usable cookie. The session keeps the ``Authorization`` header the user signed in
with, because every API call the console makes on the user's behalf carries it: the
console has no credentials of its own.

Each session has a CSRF token (synchronizer pattern): every state-changing request must
send it back (``X-CSRF-Token`` header from htmx, or a ``csrf_token`` form field), compared
in constant time. Sessions end on sign-out, after ``idle_ms`` without a request, after
``lifetime_ms`` in any case, and when the table is full (the least recently used goes).
A coordinator restart signs everybody out. Pure: the clock and the randomness are passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

SignIn = Literal["password", "token", "anonymous"]


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    principal: str
    authorization: str | None  # the header sent to the APIs; None with auth off
    csrf_token: str
    sign_in: SignIn
    created_ms: int
    last_seen_ms: int


class SessionTable:
    def __init__(
        self,
        idle_ms: int,
        lifetime_ms: int,
        sessions_max: int,
        new_token: Callable[[], str] = new_secret,
    ) -> None:
        self.idle_ms = idle_ms
        self.lifetime_ms = lifetime_ms
        self.sessions_max = sessions_max
        self._new_token = new_token
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recent first

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self, principal: str, authorization: str | None, sign_in: SignIn, now_ms: int
    ) -> tuple[str, Session]:
        """A new session; returns the id for the cookie (never stored) and the session."""
        session_id = self._new_token()
        session = Session(principal, authorization, self._new_token(), sign_in, now_ms, now_ms)
        self._sessions[_digest(session_id)] = session
        while len(self._sessions) > self.sessions_max:
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None, now_ms: int) -> Session | None:
        """The live session of this cookie value (its last use set to now), else None
        (unknown, signed out, idle too long or too old: an expired one is dropped)."""
        if not session_id:
            return None
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if self.expired(session, now_ms):
            del self._sessions[key]
            return None
        session = replace(session, last_seen_ms=now_ms)
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        return session

    def expired(self, session: Session, now_ms: int) -> bool:
        return (
            now_ms - session.last_seen_ms >= self.idle_ms
            or now_ms - session.created_ms >= self.lifetime_ms
        )

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)


def csrf_ok(session: Session, submitted: str | None) -> bool:
    """Does the request carry this session's CSRF token?"""
    if not submitted:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), submitted.encode())
