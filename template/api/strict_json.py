"""Standard JSON only, both ways, and request bodies bounded however they arrive.

Python's json module reads ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON) and writes them
back, which a JavaScript client cannot parse; it reads numbers too large for a float (``1e999``)
as infinity, which it cannot write back; it refuses integers over 4300 digits; nesting
thousands deep ends in RecursionError. All become a 400 here, and nothing non-standard is
ever written.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from flask import Flask, abort, current_app, request
from flask.json.provider import DefaultJSONProvider


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # 1e999 is valid JSON syntax, but Python reads it as inf, which it could not write back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _bounded_int(text: str) -> int:
    # Python refuses to read (and to write) integers over 4300 digits (sys.int_info); say so
    # as a ValueError like any other bad body, whatever the interpreter's limit is.
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError("number has too many digits")
    return int(text)


MAX_INT_DIGITS = 4300


class StrictJSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return json.loads(
                s, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int, **kwargs
            )
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


def bound_chunked_bodies() -> None:
    """A body without Content-Length (chunked) gets the same 413 as one with it.

    Werkzeug cuts such a body at MAX_CONTENT_LENGTH without a word; read one byte past the
    limit here, refuse what is over it, and hand the view the body with its length. Before a
    413 the rest of the body is read and dropped (up to DRAIN_FACTOR times the limit): a
    server that answers and closes with a body still arriving resets the connection, and a
    proxy in front (the edge, Caddy, Netlify) then reports a 502 instead of the 413.
    """
    environ = request.environ
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    declared = environ.get("CONTENT_LENGTH")
    if declared:
        if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            _drain(environ["wsgi.input"], min(int(declared), DRAIN_FACTOR * limit))
            abort(413, description=f"the request body is over {limit} bytes")
        return
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    body = environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        _drain(environ["wsgi.input"], DRAIN_FACTOR * limit)
        abort(413, description=f"the request body is over {limit} bytes")
    # Now a buffered body of known length, no longer a chunked stream; drop what the request
    # object may have worked out from the old environ (Werkzeug caches these).
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    for cached in ("stream", "content_length"):
        request.__dict__.pop(cached, None)


DRAIN_FACTOR = 8


def _drain(stream: Any, most: int) -> None:
    while most > 0 and (piece := stream.read(min(65536, most))):
        most -= len(piece)


def register_strict_json(app: Flask) -> None:
    app.json = StrictJSONProvider(app)
    app.before_request(bound_chunked_bodies)
