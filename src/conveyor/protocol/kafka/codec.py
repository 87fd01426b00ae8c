"""Whole requests in, whole responses out: the pure edge between bytes and messages.

:func:`decode_request` turns one frame (without its size prefix) into the header and the
kafka-python message of its API and version (Produce: a flat ``ProduceData``, read by
hand, ``produce_request.py``), or raises a :class:`RequestError` saying what
is wrong. Third-party decoding errors are translated here, once; the listener never sees
them. :func:`encode_response` is the reverse for an answer.

The client side (``transport/kafka_client.py``) is the mirror: :func:`new_request` and
:func:`encode_request` build a framed request, :func:`decode_response` reads an answer or
raises :class:`ResponseError` (the connection is then closed: nothing after a bad frame
can be trusted).
"""

from __future__ import annotations

import struct
from typing import Any, Final, NamedTuple

from conveyor.protocol.kafka.apis import (
    ApiKey,
    ApiSpec,
    is_flexible,
    response_is_flexible,
    spec_for,
)
from conveyor.protocol.kafka.fetch_response import EncodedParts
from conveyor.protocol.kafka.framing import size_prefix
from conveyor.protocol.kafka.header import (
    HeaderError,
    RequestHeader,
    RequestIds,
    parse_request_header,
    parse_response_header,
    peek_ids,
    request_header,
    response_header,
)
from conveyor.protocol.kafka.produce_request import produce_data_of, read_produce_request

# What kafka-python raises on bytes that do not decode (found by fuzzing: struct.error for
# truncated numbers, UnicodeDecodeError for strings, IndexError/ValueError for lengths).
DECODE_ERRORS: Final = (struct.error, ValueError, IndexError, TypeError, KeyError, OverflowError)
# Field types whose length -1 means null (arrays too): the ones a schema may forbid null in.
_LENGTH_PREFIXED: Final = frozenset({"string", "bytes", "records"})


class RequestError(Exception):
    """A request that cannot be served as sent. ``ids``: its API key, version and
    correlation id when they could be read."""

    def __init__(self, message: str, ids: RequestIds | None = None) -> None:
        super().__init__(message)
        self.ids = ids


class UnknownApiError(RequestError):
    """An API key this broker does not serve: the connection is closed (Kafka's rule)."""


class UnsupportedVersionError(RequestError):
    """A version outside the served range: ApiVersions answers UNSUPPORTED_VERSION with
    the supported ranges (the client retries lower); any other API closes."""


class MalformedRequestError(RequestError):
    """Truncated or undecodable bytes: the connection is closed."""


class DecodedRequest(NamedTuple):  # one per request: see header.RequestHeader
    header: RequestHeader
    spec: ApiSpec
    # the kafka-python request message of ``header.api_version``; for Produce, a
    # ``produce_request.ProduceData`` (read by hand: the hot path)
    body: Any

    @property
    def api_key(self) -> int:
        return self.header.api_key

    @property
    def api_version(self) -> int:
        return self.header.api_version


def decode_request(frame: bytes | memoryview) -> DecodedRequest:
    try:
        ids = peek_ids(frame)
    except HeaderError as exc:
        raise MalformedRequestError(str(exc)) from None
    spec = spec_for(ids.api_key)
    if spec is None:
        raise UnknownApiError(f"unknown or unserved API key {ids.api_key}", ids)
    if not spec.supports(ids.api_version):
        raise UnsupportedVersionError(
            f"{spec.key.name} v{ids.api_version} is not served "
            f"(v{spec.min_version}-{spec.max_version})",
            ids,
        )
    try:
        header = parse_request_header(frame, spec.is_flexible(ids.api_version), ids)
    except HeaderError as exc:
        raise MalformedRequestError(f"{spec.key.name}: {exc}", ids) from None
    view = memoryview(frame)[header.body_offset :]
    if ids.api_key == ApiKey.PRODUCE:  # the hot path's request, read by hand
        body = read_produce_request(view, ids.api_version)
        if body is None:  # not in the plain form: kafka-python's verdict
            body = produce_data_of(_decode_body(spec, ids, view))
        return DecodedRequest(header, spec, body)
    return DecodedRequest(header, spec, _decode_body(spec, ids, view))


def _decode_body(spec: ApiSpec, ids: RequestIds, view: memoryview) -> Any:
    """The kafka-python message of the request's body, refused when it does not decode or
    holds a null where its schema forbids one."""
    try:
        body = spec.request[ids.api_version].decode(view, version=ids.api_version)
    except DECODE_ERRORS as exc:
        raise MalformedRequestError(
            f"{spec.key.name} v{ids.api_version}: undecodable body ({type(exc).__name__})", ids
        ) from None
    null = null_field(body._struct, body, ids.api_version)
    if null is not None:
        raise MalformedRequestError(
            f"{spec.key.name} v{ids.api_version}: null {null}, which is not nullable", ids
        )
    return body


def null_field(struct: Any, message: Any, version: int) -> str | None:
    """The path of the first field of ``message`` that is null (a length of -1) where its
    schema does not allow it at ``version``, or None. kafka-python decodes such a length as
    None whatever the schema says; Kafka's own decoders refuse it (a malformed request).
    Only length-prefixed fields count: kafka-python also reads the all-zero UUID (the
    "no topic id" every client sends) as None. Runs on every request, Produce and Fetch
    included, so it walks a per-schema plan of only the fields that can fail."""
    for name, forbids_null, inner, many in _plan(struct, version):
        value = getattr(message, name)
        if value is None:
            if forbids_null:
                return str(name)
        elif inner is not None:
            for item in value if many else (value,):
                found = null_field(inner, item, version)
                if found is not None:
                    return f"{name}.{found}"
    return None


class _Check(NamedTuple):
    name: str
    forbids_null: bool
    inner: Any  # the field itself when its struct (or each array item) has checks, or None
    many: bool  # an array of structs


# (id of a schema struct, version) -> (the struct, kept so its id stays its own; its checks)
_PLANS: dict[tuple[int, int], tuple[Any, tuple[_Check, ...]]] = {}


def _plan(struct: Any, version: int) -> tuple[_Check, ...]:
    """The fields of ``struct`` at ``version`` that can be a forbidden null or hold one;
    fields that can be neither (numbers, nullable strings, structs of those) are left out."""
    cached = _PLANS.get((id(struct), version))
    if cached is not None:
        return cached[1]
    checks = []
    for field in struct.untagged_fields(version):
        length_prefixed = field.is_array() or field.type_str in _LENGTH_PREFIXED
        forbids_null = length_prefixed and not field.nullable_for_version_q(version)
        nested = field.is_struct_array() or field.is_struct()
        inner = field if nested and _plan(field, version) else None
        if forbids_null or inner is not None:
            checks.append(_Check(field.name, forbids_null, inner, field.is_struct_array()))
    plan = tuple(checks)
    _PLANS[(id(struct), version)] = (struct, plan)
    return plan


def encode_response(
    api_key: int, api_version: int, correlation_id: int, body: Any
) -> bytes | bytearray | EncodedParts:
    """Response header and body, without the size prefix. A body already encoded as
    parts (a Fetch answer: ``fetch_response.py``) stays in parts, its record sets
    uncopied: the listener writes them one after another."""
    head = response_header(correlation_id, response_is_flexible(api_key, api_version))
    if isinstance(body, EncodedParts):
        return EncodedParts((head + body[0], *body[1:]))
    encoded: bytes | bytearray = body.encode(version=api_version)
    return head + encoded


def api_versions_error(correlation_id: int, ranges: list[tuple[int, int, int]]) -> bytes:
    """ApiVersions answer to a version this broker does not serve: UNSUPPORTED_VERSION
    (35) with the supported ranges, in a v0 body, which every client can read (KIP-511)."""
    spec = spec_for(ApiKey.API_VERSIONS)
    assert spec is not None
    v0 = spec.response[0]
    body = v0(
        error_code=35,
        api_keys=[v0.ApiVersion(api_key=k, min_version=lo, max_version=hi) for k, lo, hi in ranges],
    )
    return bytes(response_header(correlation_id, flexible=False) + body.encode(version=0))


# ---- the client's side ---------------------------------------------------------------------

_API_VERSIONS_UNSUPPORTED: Final = b"\x00\x23"  # error_code 35 (UNSUPPORTED_VERSION)


class ResponseError(Exception):
    """An answer that cannot be read as the response to the request it answers."""


def _spec(api_key: int) -> ApiSpec:
    spec = spec_for(api_key)
    if spec is None:
        raise ValueError(f"API key {api_key} has no message classes here")
    return spec


def new_request(api_key: int, api_version: int, **fields: Any) -> Any:
    """The kafka-python request message of ``api_key`` at ``api_version``."""
    return _spec(api_key).request[api_version](**fields)


def encode_request(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, body: Any
) -> bytes:
    """A whole request frame: size prefix, header (v1, or v2 for flexible versions) and
    ``body`` (a message from :func:`new_request`)."""
    head = request_header(
        api_key, api_version, correlation_id, client_id, is_flexible(api_key, api_version)
    )
    encoded: bytes | bytearray = body.encode(version=api_version)
    return b"".join((size_prefix(len(head) + len(encoded)), head, encoded))


def response_correlation_id(frame: bytes | memoryview) -> int:
    """The correlation id a response frame (without its size prefix) starts with."""
    try:
        correlation_id, _ = parse_response_header(frame, flexible=False)
    except HeaderError as exc:
        raise ResponseError(str(exc)) from None
    return correlation_id


def decode_response(api_key: int, api_version: int, frame: bytes | memoryview) -> Any:
    """The kafka-python response message in ``frame`` (without its size prefix), the
    answer to a request of ``api_key`` at ``api_version``.

    ApiVersions answers UNSUPPORTED_VERSION in a v0 body whatever version was asked
    (KIP-511): that body is read as v0, so the caller sees error 35 and the ranges.
    """
    spec = _spec(api_key)
    if not spec.supports(api_version):
        raise ValueError(f"{spec.key.name} v{api_version} is not a version known here")
    try:
        _, position = parse_response_header(frame, response_is_flexible(api_key, api_version))
    except HeaderError as exc:
        raise ResponseError(f"{spec.key.name} v{api_version}: {exc}") from None
    view = memoryview(frame)[position:]
    version = api_version
    if api_key == ApiKey.API_VERSIONS and bytes(view[:2]) == _API_VERSIONS_UNSUPPORTED:
        version = 0
    try:
        return spec.response[version].decode(view, version=version)
    except DECODE_ERRORS as exc:
        raise ResponseError(
            f"{spec.key.name} v{api_version}: undecodable response ({type(exc).__name__})"
        ) from None
