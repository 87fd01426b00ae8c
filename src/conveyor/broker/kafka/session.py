"""One Kafka connection's protocol session: decode, check authentication, dispatch, encode.

Rules, in order, for each frame (see ``protocol/kafka/codec.py`` for the decoding):

1. Unknown API key, truncated or undecodable request: the connection is closed (no
   answer is possible without trusting the header; Kafka does the same).
2. A version outside the served range: ApiVersions answers UNSUPPORTED_VERSION with the
   supported ranges in a v0 body; any other API closes the connection.
3. With authentication on, a connection that has not authenticated may send ApiVersions,
   SaslHandshake and SaslAuthenticate only; anything else closes it (Kafka's rule).
4. The handler answers; its answer is encoded in the request's version.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from conveyor.broker.kafka.registry import ConnectionState, Registry, RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.codec import (
    DecodedRequest,
    RequestError,
    UnsupportedVersionError,
    api_versions_error,
    decode_request,
    encode_response,
)
from conveyor.protocol.security import ANY_PRINCIPAL
from conveyor.transport.kafka_server import CloseConnection, ConnectionInfo, Reply

log = logging.getLogger(__name__)

ANONYMOUS: Final = "user:ANONYMOUS"  # the principal of every connection when auth is off
_CN_PREFIX: Final = "user:"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    auth_enabled: bool
    on_request: Callable[[str], None] = lambda _api: None  # metrics: one call per request


class KafkaSession:
    def __init__(self, info: ConnectionInfo, registry: Registry, settings: SessionSettings) -> None:
        self.state = ConnectionState(info)
        self._registry = registry
        self._settings = settings
        if not settings.auth_enabled:
            self.state.principal = ANONYMOUS
        elif info.peer_certificate is not None:
            # A client certificate the CA verified (mTLS) is an identity, as in Kafka's
            # SSL principal: user:<common name>, then the same ACLs as everyone.
            common_name = certificate_common_name(info.peer_certificate)
            if common_name:
                self.state.principal = _CN_PREFIX + common_name

    def handle(self, frame: bytes) -> Awaitable[Reply | None]:
        try:
            request = decode_request(frame)
        except UnsupportedVersionError as exc:
            if exc.ids is not None and exc.ids.api_key == ApiKey.API_VERSIONS:
                data = api_versions_error(exc.ids.correlation_id, self._registry.version_ranges())
                return _ready(Reply(data))
            raise CloseConnection(str(exc)) from None
        except RequestError as exc:
            raise CloseConnection(str(exc)) from None
        self._settings.on_request(request.spec.key.name)
        handler = self._registry.get(request.api_key)
        if handler is None:
            raise CloseConnection(f"{request.spec.key.name} has no handler")
        if self.state.principal is None and not request.spec.before_auth:
            raise CloseConnection(
                f"{request.spec.key.name} before authentication (SASL is required)"
            )
        return self._run(request)

    async def _run(self, request: DecodedRequest) -> Reply | None:
        handler = self._registry.get(request.api_key)
        assert handler is not None
        ctx = RequestContext(self.state, request.header)
        try:
            response = await handler(ctx, request.body)
        except ConveyorError as exc:
            ctx.finish()
            raise CloseConnection(f"{request.spec.key.name}: {exc}") from None
        except Exception as exc:
            # A bug in a handler (found by fuzzing once): loud in the log, and only this
            # connection pays for it, never the listener or other clients.
            ctx.finish()
            log.error(
                "kafka %s v%d handler failed; closing the connection from %s",
                request.spec.key.name,
                request.api_version,
                self.state.info.peer,
                exc_info=exc,
            )
            raise CloseConnection(f"{request.spec.key.name}: internal error") from None
        except BaseException:
            ctx.finish()
            raise
        if response is None:
            ctx.finish()
            return None
        try:
            data = encode_response(
                request.api_key, request.api_version, request.header.correlation_id, response
            )
        except BaseException:
            ctx.finish()
            raise
        return Reply(data, on_done=ctx.finish, close_after=ctx.close_after_reply)

    def closed(self) -> None:
        self.state.sasl_exchange = None


async def _ready(reply: Reply) -> Reply:
    return reply


def certificate_common_name(certificate: dict[str, object]) -> str | None:
    """The subject's CN of a certificate as ``ssl.getpeercert()`` returns it."""
    subject = certificate.get("subject")
    if not isinstance(subject, tuple):
        return None
    for rdn in subject:
        for pair in rdn if isinstance(rdn, tuple) else ():
            if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == "commonName":
                name = str(pair[1])
                return name if name and name != ANY_PRINCIPAL else None
    return None
