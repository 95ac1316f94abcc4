"""JSON log lines and request ids: standard library only.

Shared by the app (api.observability) and the gunicorn side (api.server). gunicorn's master
process imports api.server, so nothing here may import Flask or the app's modules: a master
that had imported them would hand stale code to workers that reload.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
# Accept a caller's id only if it is short and printable, so it is safe in logs and headers.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

#: The requests the app is running in this process, put there by api.observability's middleware:
#: key -> (request id, method, path, start time.time(), client address). When a worker gives up
#: on them (api.server.report_in_flight) each still gets a log line.
IN_FLIGHT: dict[int, tuple[str, str | None, str | None, float, str | None]] = {}


def timestamp(seconds: float) -> str:
    """RFC 3339 UTC with microseconds: 2026-01-31T12:00:00.123456Z.

    Microseconds, so that lines from several workers (each flushing its own batches) can be put
    back in the order things happened: ``inv logs`` merges on this time, not on when Docker read
    the line.
    """
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1e6):06d}Z"


def request_id_from(value: str | None) -> str:
    """The caller's id when it is safe to echo, else a new one."""
    if value and _VALID_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


def dumps(entry: dict[str, Any]) -> str:
    """One line of JSON whatever the values: json.dumps escapes quotes, backslashes and newlines."""
    return json.dumps(entry, default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return dumps(entry)
