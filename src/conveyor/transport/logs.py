"""Structured logs: one line per event, in logfmt (the default off a terminal), JSON or
plain text (the default on a terminal), chosen by ``--log-format`` / ``CONVEYOR_LOG_FORMAT``.

Every line carries ``time`` (UTC, milliseconds), ``level``, ``service``, ``broker`` (on a
broker), ``logger`` and ``msg``; a line logged while an HTTP request is handled also carries
its ``request_id`` (the client's ``X-Request-Id``, or one made up: see
``transport/server.py``), through a context variable that tasks started by the handler
inherit. Fields passed with ``extra=`` follow, and a traceback comes last as ``exc`` (one
line in logfmt and JSON, so a log shipper never splits an event).

No secret belongs in a log line. Callers never log credentials; as a second fence, an
``extra`` field whose name says it holds one (``password``, ``token``, ``secret``,
``authorization``) is written as ``(redacted)``. tests/integration/test_log_secrets.py
greps the logs of an auth-enabled run for every secret it used.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import IO, Any, Final

REQUEST_ID: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "conveyor_request_id", default=None
)
FORMATS: Final = ("auto", "logfmt", "json", "text")
REDACTED: Final = "(redacted)"
_SECRET_FIELD = re.compile(r"password|secret|token|authorization", re.IGNORECASE)
_STANDARD_FIELDS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_BARE = re.compile(r"[^\s\"=\\\x00-\x1f\x7f]+")


def logfmt_value(value: object) -> str:
    """``value`` as a logfmt value: bare when it can be, else double-quoted with ``\\``,
    ``"`` and control characters escaped (so one event is always one line)."""
    text = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class _Formatter(logging.Formatter):
    """The fields of a record in a fixed order; subclasses only lay them out."""

    def __init__(self, service: str, broker_id: int | None) -> None:
        super().__init__()
        self.service = service
        self.broker_id = broker_id

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "service": self.service,
        }
        if self.broker_id is not None:
            fields["broker"] = self.broker_id
        fields["logger"] = record.name
        request_id = REQUEST_ID.get()
        if request_id is not None:
            fields["request_id"] = request_id
        fields["msg"] = record.getMessage()
        for key, value in record.__dict__.items():
            if key not in _STANDARD_FIELDS and not key.startswith("_"):
                fields[key] = REDACTED if _SECRET_FIELD.search(key) else value
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return fields


class LogfmtFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in self.fields(record).items())


class JsonFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=str, separators=(",", ":"))


class TextFormatter(_Formatter):
    """For people at a terminal: time, level, who, message, then the other fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        who = fields.pop("service") + (f"-{fields.pop('broker')}" if "broker" in fields else "")
        head = f"{fields.pop('time')} {fields.pop('level').upper():7} {who} "
        head += f"{fields.pop('logger')}: {fields.pop('msg')}"
        exc = fields.pop("exc", None)
        rest = " ".join(f"{k}={logfmt_value(v)}" for k, v in fields.items())
        return head + (f" [{rest}]" if rest else "") + (f"\n{exc}" if exc else "")


def formatter(
    log_format: str, service: str, broker_id: int | None, stream: IO[str]
) -> logging.Formatter:
    """The formatter for ``log_format`` (``auto``: text on a terminal, else logfmt)."""
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "logfmt"
    kinds: dict[str, type[_Formatter]] = {
        "logfmt": LogfmtFormatter,
        "json": JsonFormatter,
        "text": TextFormatter,
    }
    return kinds[log_format](service, broker_id)


def setup_logging(
    service: str,
    level: str = "INFO",
    log_format: str = "auto",
    *,
    broker_id: int | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Send every log record of this process to ``stream`` (stderr) in ``log_format``."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format, service, broker_id, stream))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
