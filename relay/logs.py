"""Log output for every Switchboard process: plain text by default, one JSON object a line with
SWITCHBOARD_LOG_FORMAT=json, and the id of the request being answered on every record logged while
it is (`REQUEST_ID`, a context variable: each greenlet has its own).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("switchboard_request_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What a LogRecord always has: anything else on a record came from `extra=` and is kept in JSON.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on the record (None outside a request), unless `extra` did."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request_id, the
    exception's traceback when there is one, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        entry["pid"] = record.process
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        return orjson.dumps(entry, default=repr).decode()


class TextFormatter(logging.Formatter):
    """The plain format, with ` [req_…]` after the level while a request is being answered."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            return text
        return text.replace(f" {record.levelname} ", f" {record.levelname} [{request_id}] ", 1)


def formatter(environ: Mapping[str, str] | None = None) -> logging.Formatter:
    kind = (environ if environ is not None else os.environ).get("SWITCHBOARD_LOG_FORMAT", "text").strip().lower()
    if kind == "json":
        return JsonFormatter()
    if kind in ("", "text"):
        return TextFormatter(TEXT_FORMAT)
    raise ValueError(f"SWITCHBOARD_LOG_FORMAT must be text or json, got {kind!r}")


def configure(default_level: str = "INFO", environ: Mapping[str, str] | None = None) -> None:
    """The root logger's one handler (stderr) with the chosen format and the request id filter."""
    env = environ if environ is not None else os.environ
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(env))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(env.get("SWITCHBOARD_LOG_LEVEL", default_level))
