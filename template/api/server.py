"""gunicorn's side of the API: JSON log lines, JSON errors and a deadline for request heads.

gunicorn.conf.py names these classes (``worker_class``, ``logger_class``). They cover what
happens before the app sees a request:

- Requests gunicorn refuses itself (a request line over ``limit_request_line``, too many or too
  large headers, conflicting ``Content-Length``/``Transfer-Encoding``, malformed lines) get the
  app's JSON error body, an ``X-Request-ID`` and one ``api.request`` log line, not HTML.
- Every line gunicorn logs is one JSON object (``json.dumps``), its access log included, so a
  quote, backslash or newline in a ``User-Agent`` cannot break a line or add fields.
- A request head must arrive within ``header_timeout`` seconds (``GUNICORN_HEADER_TIMEOUT``),
  and its body within ``body_timeout`` seconds more (``GUNICORN_BODY_TIMEOUT``), else 408.
- The threaded worker reads whole requests (head and body, up to the app's
  ``APP_MAX_REQUEST_BYTES``) in its event loop and hands only complete ones to a thread, so
  clients that send slowly and stall hold no thread: health checks keep being answered. A body
  declared or found to be over the limit gets 413 from the loop, without waiting for it.
- Requests still running when the worker gives up (the end of the grace period after SIGTERM,
  SIGQUIT/SIGINT, the worker timeout) leave an ``api.request`` line with ``"msg": "aborted"``.

Standard library and gunicorn only: the master process imports this module (see api/__init__).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from gunicorn import glogging, util
from gunicorn.http import errors as http_errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers import gthread, sync

from api.jsonlines import IN_FLIGHT, JsonFormatter, dumps, request_id_from, timestamp

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_BODY_LIMIT = 1024 * 1024  # APP_MAX_REQUEST_BYTES's default (api/config.py)
# The event loop buffers what each connection sends: its first HEAD_BUFFER_BYTES always (a
# worker holds at most worker_connections of them). To read more (a large head, a body) a
# connection reserves what it will need (its Content-Length; four times the limit for chunked bodies)
# out of BUFFER_BUDGET_BYTES per worker, and keeps its reservation until it is answered, so a
# request that was let in always finishes: connections that cannot reserve wait, unread and in
# arrival order, until others finish or their own deadline passes.
HEAD_BUFFER_BYTES = 32 * 1024
BUFFER_BUDGET_BYTES = 32 * 1024 * 1024
READ_BYTES = 64 * 1024
# The piece of an already-read request the parser gets per read, as from a socket (gunicorn's 8 KiB).
PREFIX_PIECE = 8 * 1024
# A chunked body may carry this many times the body limit in framing and data: 1-byte chunks take
# 6 bytes each; past this the framing itself is refused (400), never a body under the limit (413).
FRAMING_FACTOR = 4
# After a 413 or 400 from the loop the rest of the body is read and dropped for up to this long
# (and up to DRAIN_FACTOR x the limit, as the app does): answering and closing while a body is
# still arriving resets the connection, and a proxy in front then reports 502 instead.
DRAIN_SECONDS = 2.0
# A connection closed after its answer reads what the client still sends for this long (as
# gunicorn's close_graceful does, but without blocking), so unread data does not turn into a RST
# that could cut the answer short.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
DRAIN_FACTOR = 8
_HEAD_ENDS = (b"\n\r\n", b"\n\n")  # CRLF CRLF, or bare LFs, which the parser then refuses with 400

_request_log = logging.getLogger("api.request")


class RequestTimeout(Exception):
    """The request head or body did not arrive in time (``part`` says which)."""

    def __init__(self, part: str = "head", seconds: float = DEFAULT_HEADER_TIMEOUT) -> None:
        super().__init__(f"request {part} incomplete at the deadline")
        self.part = part
        self.seconds = seconds


class BodyRefused(Exception):
    """The event loop refused a body: over the limit (413) or malformed chunks (400)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class ShuttingDown(Exception):
    """The worker stopped before the request had fully arrived."""


# --------------------------------------------------------------------------------- logging


class _GunicornFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        record.pid = record.process
        return super().format(record)


class JsonLogger(glogging.Logger):
    """gunicorn's logger with one JSON object per line, for its error and access logs.

    ``access_log_format`` is not used: the access line has fixed fields (see ``access``).
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(_GunicornFormatter() if log is self.error_log else logging.Formatter())
        # Libraries that log through the root logger, and Python warnings, come out as JSON too
        # (otherwise logging's last-resort handler prints them as plain text).
        root = logging.getLogger()
        if not any(getattr(h, "_api_json", False) for h in root.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(JsonFormatter())
            handler._api_json = True  # type: ignore[attr-defined]
            root.addHandler(handler)
            if root.level == logging.NOTSET or root.level > logging.WARNING:
                root.setLevel(logging.WARNING)
        logging.captureWarnings(True)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        request_id = None
        for name, value in resp.headers:
            if name.lower() == "x-request-id":
                request_id = value
        entry = {
            "ts": timestamp(time.time()),
            "level": "info",
            "logger": "gunicorn.access",
            "remote_addr": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING"),
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_us": request_time.seconds * 1_000_000 + request_time.microseconds,
            "request_id": request_id,
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        try:
            self.access_log.info(dumps(entry))
        except Exception:
            self.exception("could not write an access log line")


# --------------------------------------------------------------------------------- errors


def describe(exc: BaseException, cfg: Any, body_limit: int = DEFAULT_BODY_LIMIT) -> tuple[int, str, str, str]:
    """(status, reason phrase, code, message) for an error gunicorn raised before the app ran.

    Messages are fixed texts: nothing the client sent is reflected (the detail goes to the log).
    """
    e = http_errors
    if isinstance(exc, RequestTimeout):
        message = f"the request {exc.part} did not arrive within {exc.seconds:g} s"
        return 408, "Request Timeout", "request_timeout", message
    if isinstance(exc, BodyRefused):
        if exc.status == 413:
            message = f"the request body is over {body_limit} bytes"
            return 413, "Request Entity Too Large", "request_entity_too_large", message
        return 400, "Bad Request", "bad_request", "the chunked body is malformed"
    if isinstance(exc, ShuttingDown):
        return 503, "Service Unavailable", "service_unavailable", "the server is shutting down; retry"
    if isinstance(exc, e.LimitRequestLine):
        return 414, "URI Too Long", "uri_too_long", f"the request line is over {cfg.limit_request_line} bytes"
    if isinstance(exc, e.LimitRequestHeaders):
        message = (
            f"over {cfg.limit_request_fields} header fields, or a header line over {cfg.limit_request_field_size} bytes"
        )
        return 431, "Request Header Fields Too Large", "request_header_fields_too_large", message
    if isinstance(exc, (e.InvalidResponseHeader, e.InvalidResponseHeaderName, e.ConfigurationProblem)):
        return 500, "Internal Server Error", "internal_server_error", "the server could not answer this request"
    if isinstance(exc, e.UnsupportedTransferCoding):
        return 501, "Not Implemented", "not_implemented", "the Transfer-Encoding is not supported"
    if isinstance(exc, e.ExpectationFailed):
        return 417, "Expectation Failed", "expectation_failed", "only 'Expect: 100-continue' is supported"
    if isinstance(exc, (e.ForbiddenProxyRequest, ssl.SSLError)):
        return 403, "Forbidden", "forbidden", "request forbidden"
    messages: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
        (e.InvalidRequestLine, "the request line is malformed"),
        (e.InvalidRequestMethod, "the request method is invalid"),
        (e.InvalidHTTPVersion, "the HTTP version is not supported"),
        (e.InvalidHeaderName, "a header name is invalid"),
        (e.ObsoleteFolding, "a header uses obsolete line folding"),
        (e.InvalidSchemeHeaders, "the forwarded scheme headers contradict each other"),
        (e.InvalidHeader, "a header is invalid, duplicated or conflicts with another"),
        ((e.InvalidChunkSize, e.ChunkMissingTerminator, e.InvalidChunkExtension), "the chunked body is malformed"),
    ]
    for kind, message in messages:
        if isinstance(exc, kind):
            return 400, "Bad Request", "bad_request", message
    if isinstance(exc, e.ParseException):
        return 400, "Bad Request", "bad_request", "the request is malformed"
    return 500, "Internal Server Error", "internal_server_error", "the server could not answer this request"


def _header(req: Any, name: str) -> str | None:
    for key, value in getattr(req, "headers", None) or ():
        if key.upper() == name:
            return str(value)
    return None


# Like the app's X-App-Version header (api.config reads APP_VERSION too), kept header-safe.
_APP_VERSION = "".join(ch for ch in os.environ.get("APP_VERSION", "0.0.0-dev") if 32 < ord(ch) < 127) or "-"


def error_response(status: int, reason: str, code: str, message: str, request_id: str) -> bytes:
    """A complete HTTP/1.1 response in the app's error shape (see api/errors.py); closes the connection."""
    body = dumps({"error": {"status": status, "code": code, "message": message, "request_id": request_id}})
    payload = body.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"X-Request-ID: {request_id}\r\n"
        f"X-App-Version: {_APP_VERSION}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + payload


class _ApiWorker:
    """What both worker classes add: JSON errors (``handle_error``), deadlines, and no request
    that vanishes from the logs when the worker stops (logs flushed on SIGTERM, aborted requests
    reported)."""

    cfg: Any
    log: Any
    alive: bool
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    body_limit: int = DEFAULT_BODY_LIMIT
    _abort_timer = False

    def load_wsgi(self) -> None:
        super().load_wsgi()  # type: ignore[misc]
        # The app's own limit (it refuses larger bodies with 413): the loop buffers up to it.
        from api.config import load_config

        with contextlib.suppress(Exception):  # serve.py has checked it; an app under test may differ
            self.body_limit = int(load_config()["MAX_REQUEST_BYTES"])

    def handle_exit(self, sig: int, frame: Any) -> None:
        # SIGTERM (docker stop): write out the batched request lines now, not only at exit. A
        # request still running when the grace period ends gets the worker SIGKILLed, and lines
        # still buffered then would be lost. Not from this handler itself: it may have
        # interrupted a write holding the log handler's lock.
        super().handle_exit(sig, frame)  # type: ignore[misc]
        self.flush_logs_soon()
        self.call_soon(self.start_abort_timer)

    def call_soon(self, callback: Any) -> None:
        callback()

    def flush_logs_soon(self) -> None:
        threading.Thread(target=flush_logs, name="log-flush-on-exit", daemon=True).start()

    def start_abort_timer(self) -> None:
        """Report requests still running shortly before the master kills this worker.

        The master SIGKILLs a worker ``graceful_timeout`` seconds after it sent SIGTERM, and a
        killed process writes nothing: the lines go out ``abort_margin`` seconds before that.
        """
        if self._abort_timer:
            return
        self._abort_timer = True
        grace = float(self.cfg.graceful_timeout)
        at = time.monotonic() + grace - abort_margin(grace)

        def report_when_due() -> None:
            while (left := at - time.monotonic()) > 0:
                time.sleep(left)
            report_in_flight(f"still running {grace:g} s after SIGTERM (GUNICORN_GRACEFUL_TIMEOUT)")

        threading.Thread(target=report_when_due, name="abort-report", daemon=True).start()

    def handle_quit(self, sig: int, frame: Any) -> None:
        report_in_flight(f"{signal.Signals(sig).name}: the worker stops at once")
        super().handle_quit(sig, frame)  # type: ignore[misc]

    def handle_abort(self, sig: int, frame: Any) -> None:
        report_in_flight("the worker timed out (GUNICORN_TIMEOUT) and was stopped")
        super().handle_abort(sig, frame)  # type: ignore[misc]

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        started = datetime.now()
        addr = addr or ("", -1)  # unix socket
        if req is None and isinstance(exc, (http_errors.InvalidHeader, http_errors.InvalidHeaderName)):
            req = getattr(exc, "req", None)
        status, reason, code, message = describe(exc, self.cfg, self.body_limit)
        request_id = request_id_from(_header(req, "X-REQUEST-ID"))
        if status == 500:
            self.log.exception("error handling request", extra={"request_id": request_id})
        log_rejection(status, code, exc, addr[0], request_id, req)
        if req is not None and getattr(req, "method", None):
            try:
                environ = default_environ(req, client, self.cfg)
                environ["REMOTE_ADDR"] = addr[0]
                environ["REMOTE_PORT"] = str(addr[1])
                resp = Response(req, client, self.cfg)
                resp.status = f"{status} {reason}"
                resp.headers.append(("X-Request-ID", request_id))
                self.log.access(resp, req, environ, datetime.now() - started)
            except Exception:  # a half-parsed request may lack what the access line needs
                pass
        with contextlib.suppress(OSError):
            util.write_nonblock(client, error_response(status, reason, code, message, request_id))
        if isinstance(exc, RequestTimeout):
            # The client stalled: do not wait for it to close (gunicorn lingers up to 2 s).
            _shutdown(client)


def abort_margin(grace: float) -> float:
    """How long before the master's SIGKILL the aborted requests are reported."""
    return min(1.0, grace / 4)


_reported: set[int] = set()


def report_in_flight(reason: str) -> int:
    """One ``api.request`` line with ``"msg": "aborted"`` per request the app is still running
    (api.jsonlines.IN_FLIGHT), each reported once, written out at once. Returns how many."""
    now = time.time()
    count = 0
    for key, (request_id, method, path, started, remote_addr) in list(IN_FLIGHT.items()):
        if key in _reported:
            continue
        _reported.add(key)
        count += 1
        with contextlib.suppress(Exception):  # never fail a worker's exit over a log line
            _request_log.warning(
                "aborted",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "status": None,
                    "reason": reason,
                    "duration_ms": round((now - started) * 1000, 2),
                    "remote_addr": remote_addr,
                },
            )
    flush_logs()
    return count


def log_rejection(status: int, code: str, exc: BaseException, remote_addr: str, request_id: str, req: Any) -> None:
    detail = str(exc)[:200]
    with contextlib.suppress(Exception):  # never fail an answer over a count
        from api import metrics  # the worker's (it has loaded the app); the master never gets here

        metrics.observe(metrics.method_label(getattr(req, "method", None)), metrics.REJECTED, str(status), 0.0)
    _request_log.info(
        "rejected",
        extra={
            "request_id": request_id,
            "method": getattr(req, "method", None),
            "path": getattr(req, "path", None),
            "status": status,
            "code": code,
            "detail": f"{type(exc).__name__}: {detail}",
            "remote_addr": remote_addr,
        },
    )


def _shutdown(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------- deadlines


class Deadline:
    """A socket whose reads fail with RequestTimeout once ``deadline`` passes.

    Unlike a socket timeout, which bounds each read, the deadline bounds the whole head or body:
    a client sending one byte every few seconds is cut off too. After it fired once, reads
    return EOF, so nothing reads on from a client that was already answered.
    """

    def __init__(self, sock: Any, deadline: float, part: str, seconds: float, prefix: bytes = b"") -> None:
        self.sock = sock
        self.deadline = deadline
        self.part = part
        self.seconds = seconds
        self.fired = False
        # What the event loop already read, served first, a socket-sized piece at a time. Handing
        # it all to gunicorn's unreader at once made a body of many tiny chunks quadratic: its
        # chunked reader takes the whole buffer and puts back the rest, once per chunk.
        self.prefix = memoryview(prefix)

    def arm(self, deadline: float, part: str, seconds: float) -> None:
        self.deadline, self.part, self.seconds = deadline, part, seconds

    def recv(self, size: int, *flags: int) -> bytes:
        if self.prefix:
            piece = self.prefix[: max(1, min(size, PREFIX_PIECE))]
            self.prefix = self.prefix[len(piece) :]
            return bytes(piece)
        if self.fired:
            return b""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.fired = True
            raise RequestTimeout(self.part, self.seconds)
        previous = self.sock.gettimeout()  # the send timeout the worker set, kept for the answer
        self.sock.settimeout(remaining)
        try:
            return bytes(self.sock.recv(size, *flags))
        except TimeoutError:
            self.fired = True
            raise RequestTimeout(self.part, self.seconds) from None
        finally:
            self.sock.settimeout(previous)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class SyncWorker(_ApiWorker, sync.SyncWorker):
    """gunicorn's sync worker (GUNICORN_THREADS=1) with JSON errors and head and body deadlines.

    A sync worker serves one connection at a time, so a slow client still holds the whole
    worker, but for at most ``header_timeout`` seconds for its head and ``body_timeout`` more for
    its body (the app's read then fails with a 408), not until the worker timeout.
    """

    def init_signals(self) -> None:
        super().init_signals()
        # gunicorn asks the kernel to restart system calls after SIGTERM, so a worker blocked
        # reading a slow request would not run its handler (and flush the logs) until the read
        # ends. Python retries an interrupted read itself (PEP 475): the request is not disturbed.
        signal.siginterrupt(signal.SIGTERM, True)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if self.cfg.is_ssl:
            super().handle(listener, client, addr)
            return
        deadline = Deadline(client, time.monotonic() + self.header_timeout, "head", self.header_timeout)
        super().handle(listener, deadline, addr)

    def handle_request(self, listener: Any, req: Any, client: Any, addr: Any) -> None:
        if isinstance(client, Deadline):  # the head is in: now the body's deadline
            client.arm(time.monotonic() + self.body_timeout, "body", self.body_timeout)
        super().handle_request(listener, req, client, addr)


# ------------------------------------------------------------------- requests read in the loop

_MORE, _DONE, _TOO_LARGE, _MALFORMED = range(4)
_HEX = frozenset(b"0123456789abcdefABCDEF")


class _Pending:
    """What the event loop knows of a request it is collecting on one connection."""

    __slots__ = (
        "buf", "chunk_at", "chunk_total", "deadline", "head_end", "need", "part", "reserved", "seconds", "trailer",
    )  # fmt: skip

    def __init__(self, buf: bytearray, deadline: float, seconds: float) -> None:
        self.buf = buf
        self.deadline = deadline
        self.part = "head"  # then "body", or "drain" after a refusal
        self.seconds = seconds
        self.head_end = -1
        self.need = -1  # bytes the whole request takes (Content-Length), -1 for chunked or unknown
        self.chunk_at = 0
        self.chunk_total = 0
        self.trailer = False
        self.reserved = 0  # budget held past HEAD_BUFFER_BYTES (ThreadWorker._reserve)


def head_end(buf: bytearray, start: int) -> int:
    """Offset just past the blank line that ends the head, or -1."""
    start = max(0, start - 3)
    ends = [at + len(end) for end in _HEAD_ENDS if (at := buf.find(end, start)) >= 0]
    return min(ends) if ends else -1


def body_framing(head: bytes) -> tuple[str, int]:
    """("none" | "length" | "chunked" | "parser", length) as far as the loop needs to know.

    "parser" means anything unusual (both headers, two lengths, another coding, a bad value):
    the loop hands the request over as it is and gunicorn's parser refuses or reads it, in a
    thread but still under the deadline. Header names must match exactly, as the parser wants.
    """
    lower = head.lower()
    if b"content-length" not in lower and b"transfer-encoding" not in lower:
        return "none", 0  # most requests: one scan of a few hundred bytes
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for line in lower.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name == b"content-length":
            lengths.append(value.strip(b" \t\r"))
        elif colon and name == b"transfer-encoding":
            codings.append(value.strip(b" \t\r"))
    if codings:
        if codings == [b"chunked"] and not lengths:
            return "chunked", 0
        tokens = [token.strip(b" \t") for token in codings[0].split(b",")] if len(codings) == 1 else []
        if not lengths and len(tokens) > 1 and tokens[-1] == b"chunked" and all(tokens):
            # gzip, chunked and the like: gunicorn would read the body in a thread and hand the app
            # still-encoded bytes. The app reads only plain chunked bodies: 501, as RFC 9112 asks.
            return "unsupported", 0
        return "parser", 0
    if len(lengths) == 1 and lengths[0].isdigit():
        return "length", int(lengths[0])
    return "parser", 0


def _header_value(head: bytes, name: bytes) -> str | None:
    """The value of header ``name`` (lowercase) in a raw head, if it occurs exactly once."""
    values = []
    for line in head.split(b"\n")[1:]:
        key, colon, value = line.partition(b":")
        if colon and key.lower() == name:
            values.append(value.strip(b" \t\r").decode("latin-1"))
    return values[0] if len(values) == 1 else None


def _request_facts(head: bytes) -> tuple[str | None, str | None, str | None]:
    """(method, path, X-Request-ID) from a head, for the log line of a refusal."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    method = parts[0].decode("latin-1")[:32] if parts and parts[0] else None
    path = parts[1].split(b"?", 1)[0].decode("latin-1")[:200] if len(parts) > 1 else None
    request_id = None
    for header in rest.split(b"\r\n"):
        name, colon, value = header.partition(b":")
        if colon and name.lower() == b"x-request-id":
            request_id = value.strip().decode("latin-1")
    return method, path, request_id


def scan_chunks(pending: _Pending, limit: int, max_line: int) -> int:
    """How far a chunked body has arrived: _MORE, _DONE, _TOO_LARGE or _MALFORMED.

    Resumes where the last call stopped. A size over ``limit`` is refused as soon as its digits
    say so, before the chunk (or even its line end) arrives. The parser checks the body again
    in the thread (extensions, trailers): this only needs to find its end.
    """
    buf = pending.buf
    at = pending.chunk_at
    while True:
        if pending.trailer:  # after the last chunk: CRLF, or trailer fields and a blank line
            if len(buf) - at < 2:
                return _MORE
            if buf[at : at + 2] == b"\r\n" or buf.find(b"\r\n\r\n", at) >= 0 or len(buf) - at > 32 * max_line:
                return _DONE  # (too long a trailer section: the parser refuses it at once)
            return _MORE
        eol = buf.find(b"\r\n", at)
        line = bytes(buf[at : eol if eol >= 0 else len(buf)])
        size = line.split(b";", 1)[0]
        if eol < 0 and size.endswith(b"\r"):
            size = size[:-1]  # half of the CRLF
        size = size.rstrip(b" \t") if b";" in line else size
        if any(byte not in _HEX for byte in size):
            return _MALFORMED
        digits = size.lstrip(b"0")
        if len(digits) > 15 or (digits and pending.chunk_total + int(digits, 16) > limit):
            return _TOO_LARGE  # more hex digits can only make it larger
        if eol < 0:
            return _MALFORMED if len(line) > max_line else _MORE
        if not size:
            return _MALFORMED
        chunk = int(size, 16)
        if chunk == 0:
            pending.trailer = True
            at = pending.chunk_at = eol + 2
            continue
        end = eol + 2 + chunk
        if len(buf) < end + 2:
            return _MORE
        if buf[end : end + 2] != b"\r\n":
            return _MALFORMED
        pending.chunk_total += chunk
        at = pending.chunk_at = end + 2


class ThreadWorker(_ApiWorker, gthread.ThreadWorker):
    """gunicorn's gthread worker, reading whole requests in its event loop.

    gunicorn hands a connection to a thread as soon as it is readable, and the thread then blocks
    until the whole head, and later the body, has arrived: clients that send slowly and stall
    hold every thread. Here the event loop collects the head and the body (Content-Length or
    chunked, up to the app's limit) without blocking, and only a complete request reaches a
    thread. Heads not complete within ``header_timeout`` and bodies not complete within
    ``body_timeout`` after their head get 408; a body over the limit gets 413 at once.
    """

    def init_process(self) -> None:
        self._pending: dict[Any, _Pending] = {}  # connections the loop is reading
        self._watched: set[Any] = set()  # ... of which registered with the poller
        self._parked: list[Any] = []  # ... waiting for buffer budget
        self._lingering: set[Any] = set()  # closed for gunicorn, draining before the socket closes
        self._charged = 0  # bytes buffered beyond HEAD_BUFFER_BYTES per connection, in all
        self._reserved = 0  # what the connections let past HEAD_BUFFER_BYTES reserved, in all
        self._next_expiry = float("inf")
        self._stopping_at: float | None = None
        # TLS and HTTP/2 prior knowledge read the connection themselves before the parser does.
        self._buffer_requests = not self.cfg.is_ssl and self.cfg.http2_cleartext not in ("prior-knowledge", "both")
        line = self.cfg.limit_request_line if self.cfg.limit_request_line > 0 else 8190
        field = self.cfg.limit_request_field_size if self.cfg.limit_request_field_size > 0 else 8190
        # Past this many bytes with no end the parser refuses a head without reading more.
        self._max_head = line + 4 + self.cfg.limit_request_fields * (field + 2) + 4
        self._max_line = field
        super().init_process()

    def call_soon(self, callback: Any) -> None:
        self.method_queue.defer(callback)  # run by the event loop, outside the signal handler

    def flush_logs_soon(self) -> None:
        self.method_queue.defer(flush_logs)

    # -- collecting

    def enqueue_req(self, conn: Any) -> None:
        if not self._buffer_requests or conn.is_http2:
            super().enqueue_req(conn)
            return
        pending = b""
        if conn.parser is not None:  # a kept-alive connection: what it read past the last request
            pending = conn.parser.unreader.take_buffered()
            sock = conn.parser.unreader.sock
            if isinstance(sock, Deadline) and sock.prefix:
                pending += bytes(sock.prefix)  # after the unreader's: it was read from the prefix first
                sock.prefix = memoryview(b"")
        state = _Pending(bytearray(pending), time.monotonic() + self.header_timeout, self.header_timeout)
        self._pending[conn] = state
        self._charge(state, len(state.buf), 0)
        self._expires(state.deadline)
        conn.sock.setblocking(False)
        if not self._advance(conn, state, 0):
            self._read(conn)

    def _read(self, conn: Any, _fileobj: Any = None) -> None:
        state = self._pending.get(conn)
        if state is None:
            return
        if state.part in ("drain", "linger"):
            self._drain(conn, state)
            return
        if len(state.buf) >= HEAD_BUFFER_BYTES and not state.reserved and not self._reserve(conn, state):
            return
        try:
            data = conn.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            self._drop(conn)
            return
        if data == b"":  # the client closed
            self._drop(conn)
            return
        if data:
            before = len(state.buf)
            state.buf += data
            self._charge(state, len(state.buf), before)
            if self._advance(conn, state, before):
                return
        self._watch(conn)

    def _advance(self, conn: Any, state: _Pending, before: int) -> bool:
        """Act on what has arrived; True once the connection has left the loop's reading."""
        buf = state.buf
        if state.head_end < 0:
            end = head_end(buf, before)
            if end < 0:
                if len(buf) > HEAD_BUFFER_BYTES and self._over_head_limits(buf):
                    # What the parser would say once the head ended, said now: it would wait for the end.
                    over = http_errors.LimitRequestLine if buf.find(b"\n") < 0 else http_errors.LimitRequestHeaders
                    self._refuse(conn, state, over("over the limits before the head ended"))
                    return True
                return False
            state.head_end = end
            kind, length = body_framing(bytes(buf[:end])) if buf[end - 2 : end] == b"\r\n" else ("parser", 0)
            if kind == "none" or kind == "parser" or (kind == "length" and length == 0):
                self._dispatch(conn, state)
                return True
            if kind == "unsupported":
                coding = _header_value(bytes(buf[:end]), b"transfer-encoding") or ""
                self._refuse(conn, state, http_errors.UnsupportedTransferCoding(coding))
                return True
            if kind == "length" and length > self.body_limit:
                self._refuse(conn, state, BodyRefused(413, f"Content-Length {length} over {self.body_limit}"))
                return True
            state.need = end + length if kind == "length" else -1
            if state.reserved:
                self._grant(state, self._wanted(state))  # a large head's reservation becomes its body's
            state.chunk_at = end
            state.part = "body"
            state.deadline = time.monotonic() + self.body_timeout
            state.seconds = self.body_timeout
            self._expires(state.deadline)
            self._continue(conn, bytes(buf[:end]))
        if state.need >= 0:
            if len(buf) >= state.need:
                self._dispatch(conn, state)
                return True
            return False
        found = scan_chunks(state, self.body_limit, self._max_line)
        if found == _MORE and len(buf) - state.head_end > FRAMING_FACTOR * self.body_limit + READ_BYTES:
            # Chunk framing far bigger than the data it carries (many tiny chunks, long extensions):
            # not a body over the limit, so not a 413, but more than the loop will hold.
            self._refuse(conn, state, BodyRefused(400, f"chunk framing over {FRAMING_FACTOR}x the body limit"))
            return True
        if found == _DONE:
            self._dispatch(conn, state)
        elif found == _TOO_LARGE:
            self._refuse(conn, state, BodyRefused(413, f"chunked body over {self.body_limit}"))
        elif found == _MALFORMED:
            self._refuse(conn, state, BodyRefused(400, "malformed chunk size line"))
        return found != _MORE

    def _over_head_limits(self, buf: bytearray) -> bool:
        """Whether an unfinished head already breaks a limit, so no more of it need be read."""
        if len(buf) > self._max_head or buf.count(b"\n") > self.cfg.limit_request_fields + 1:
            return True
        return len(buf) - buf.rfind(b"\n") > max(self._max_line, self.cfg.limit_request_line) + 4

    def _continue(self, conn: Any, head: bytes) -> None:
        """Answer ``Expect: 100-continue`` here: the client waits for it before sending the body."""
        expect = _header_value(head, b"expect")
        http11 = head.split(b"\n", 1)[0].rstrip(b"\r").endswith(b" HTTP/1.1")
        if expect is not None and expect.lower() == "100-continue" and http11:
            with contextlib.suppress(OSError):
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            conn._continued = True  # the parser would ask for it again: gunicorn must not send it twice

    # -- closing without blocking the loop

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gunicorn's, but a connection it closes lingers in the poller, not in a blocking recv.

        gunicorn closes a connection that is not kept alive with ``close_graceful``: a half-close,
        then up to 2 s of blocking reads, in the event loop. A few clients that never close their
        end would freeze the whole worker (accepting, reading, answering) for 2 s each.
        """
        if self._buffer_requests and not conn.is_http2:
            conn.close = partial(self._close_lingering, conn)  # type: ignore[method-assign]
        super().finish_request(conn, fs)

    def _close_lingering(self, conn: Any, graceful: bool = False) -> None:
        conn.__dict__.pop("close", None)  # later closes are plain ones
        if not graceful:
            conn.close()
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # FIN after the answer; then read what still comes
            conn.sock.setblocking(False)
        except OSError:
            conn.close()
            return
        state = _Pending(bytearray(), time.monotonic() + LINGER_SECONDS, LINGER_SECONDS)
        state.part = "linger"
        state.need = LINGER_BYTES
        self._pending[conn] = state
        self._lingering.add(conn)  # gunicorn counted it closed already
        self._expires(state.deadline)
        self._watch(conn)

    # -- leaving the loop

    def _dispatch(self, conn: Any, state: _Pending) -> None:
        self._release(conn)
        if state.part == "head" and state.head_end < 0:
            conn._deadline = (state.deadline, "head", state.seconds)
        else:  # reads the loop did not foresee (the parser saw a body it did not) still end
            conn._deadline = (time.monotonic() + self.body_timeout, "body", self.body_timeout)
        conn._request_bytes = bytes(state.buf)
        super().enqueue_req(conn)

    def _refuse(self, conn: Any, state: _Pending, exc: BaseException) -> None:
        """Answer from the loop (413, 400, 408, 503), log it, and read the rest of the body away."""
        status, reason, code, message = describe(exc, self.cfg, self.body_limit)
        head = bytes(state.buf[: state.head_end] if state.head_end >= 0 else state.buf)
        method, path, sent_id = _request_facts(head) if head else (None, None, None)
        request_id = request_id_from(sent_id)
        request = _Facts(method, path) if method else None
        log_rejection(status, code, exc, conn.client[0] if conn.client else "", request_id, request)
        with contextlib.suppress(OSError):
            conn.sock.send(error_response(status, reason, code, message, request_id))
        self._charge(state, 0, len(state.buf))
        state.buf = bytearray()
        self._unreserve(state)  # what is drained next is dropped, not kept
        if status in (408, 503):  # the client stalled or the worker stops: no more waiting
            self._drop(conn, shutdown=True)
            return
        state.part = "drain"
        state.need = DRAIN_FACTOR * self.body_limit
        state.deadline = time.monotonic() + DRAIN_SECONDS
        self._expires(state.deadline)
        self._watch(conn)

    def _drain(self, conn: Any, state: _Pending) -> None:
        try:
            data = conn.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        state.need -= len(data)
        if not data or state.need <= 0:
            self._drop(conn, shutdown=True)

    def _wanted(self, state: _Pending) -> int:
        """Bytes past HEAD_BUFFER_BYTES this request will need, as far as its head tells."""
        if state.head_end < 0:
            return self._max_head  # the rest of a large head; the body is reserved when it ends
        if state.need >= 0:
            return max(1, state.need - HEAD_BUFFER_BYTES)
        return FRAMING_FACTOR * self.body_limit + READ_BYTES  # chunked: data plus framing, as _advance allows

    def _reserve(self, conn: Any, state: _Pending) -> bool:
        """Let ``conn`` read past HEAD_BUFFER_BYTES if the budget allows (one always may); else park it."""
        wanted = self._wanted(state)
        if self._reserved and (self._parked or self._reserved + wanted > BUFFER_BUDGET_BYTES):
            if conn not in self._parked:
                self._parked.append(conn)  # read again when others free the budget, oldest first
            self._unwatch(conn)
            return False
        self._grant(state, wanted)
        return True

    def _grant(self, state: _Pending, wanted: int) -> None:
        """Reserve ``wanted`` for ``state`` (replacing what it held), whatever the budget says."""
        self._reserved += wanted - state.reserved
        state.reserved = wanted

    def _charge(self, state: _Pending, size: int, before: int) -> None:
        self._charged += max(0, size - HEAD_BUFFER_BYTES) - max(0, before - HEAD_BUFFER_BYTES)

    def _watch(self, conn: Any) -> None:
        if conn not in self._watched:
            self._watched.add(conn)
            self.poller.register(conn.sock, gthread.selectors.EVENT_READ, partial(self._read, conn))

    def _unwatch(self, conn: Any) -> None:
        if conn in self._watched:
            self._watched.discard(conn)
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)

    def _release(self, conn: Any) -> None:
        """The loop stops reading ``conn``; connections waiting for budget may go on."""
        self._unwatch(conn)
        state = self._pending.pop(conn, None)
        if state is not None:
            self._charge(state, 0, len(state.buf))
            self._unreserve(state)

    def _unreserve(self, state: _Pending) -> None:
        """Give ``state``'s reservation back; connections waiting for budget go on, oldest first."""
        self._reserved -= state.reserved
        state.reserved = 0
        while self._parked and self._reserved < BUFFER_BUDGET_BYTES:
            parked = self._parked.pop(0)
            waiting = self._pending.get(parked)
            if waiting is not None:
                self._grant(waiting, self._wanted(waiting))
                self._watch(parked)

    def _drop(self, conn: Any, shutdown: bool = False) -> None:
        self._release(conn)
        with contextlib.suppress(ValueError):
            self._parked.remove(conn)
        if conn in self._lingering:
            self._lingering.discard(conn)
        else:
            self.nr_conns -= 1
        if shutdown:
            _shutdown(conn.sock)
        conn.close()

    # -- deadlines

    def _expires(self, deadline: float) -> None:
        self._next_expiry = min(self._next_expiry, deadline)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        if not self.alive and self._stopping_at is None:
            self._stopping_at = now
            self._next_expiry = now
        if now < self._next_expiry:
            return  # the common case: one comparison per loop turn
        # A stopping worker gives heads still arriving a short grace, like kept-alive connections,
        # and bodies until shortly before the master would kill it.
        head_stop = body_stop = float("inf")
        if self._stopping_at is not None:
            head_stop = self._stopping_at + gthread.STOP_KEEPALIVE_LINGER
            grace = float(self.cfg.graceful_timeout)
            body_stop = self._stopping_at + grace - 2 * abort_margin(grace)
        self._next_expiry = min(head_stop, body_stop) if self._stopping_at is not None else float("inf")
        for conn, state in list(self._pending.items()):
            stop = head_stop if state.part == "head" else body_stop
            if state.deadline <= now:
                self._expire(conn, state)
            elif stop <= now:
                self._expire(conn, state, stopping=True)
            else:
                self._expires(state.deadline)

    def _expire(self, conn: Any, state: _Pending, stopping: bool = False) -> None:
        if state.part in ("drain", "linger"):
            self._drop(conn, shutdown=True)
        elif state.part == "head" and not state.buf.strip():
            self._drop(conn, shutdown=True)  # sent nothing: closed without a word, like gunicorn's
        elif stopping and state.part == "body":
            self._refuse(conn, state, ShuttingDown("the worker stopped before the body arrived"))
        else:
            self._refuse(conn, state, RequestTimeout(state.part, state.seconds))

    # -- in the thread

    def handle(self, conn: Any) -> Any:
        data = conn.__dict__.pop("_request_bytes", None)
        if data is not None:
            conn.data_ready = True
            try:
                conn.init()
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    self.log.exception("socket error")
                return False
            deadline, part, seconds = conn.__dict__.pop("_deadline")
            conn.parser.unreader.sock = Deadline(conn.sock, deadline, part, seconds, prefix=data)
        return super().handle(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        if self._buffer_requests and not conn.is_http2:
            # Blocking (gunicorn's handle made it so), but not forever: a client that stops
            # reading its answer (a large one, pipelined requests) would hold this thread for
            # good. After GUNICORN_BODY_TIMEOUT seconds without progress the send fails and the
            # connection is closed. (Reads past the loop's have their own deadline: Deadline.)
            conn.sock.settimeout(self.body_timeout)
        if conn.__dict__.pop("_continued", False):
            req._expected_100_continue = False  # the loop sent "100 Continue" already
        return super().handle_request(req, conn)


class _Facts:
    """The method and path of a request the parser has not seen, for log_rejection."""

    def __init__(self, method: str | None, path: str | None) -> None:
        self.method = method
        self.path = path


def flush_logs() -> None:
    """Write out buffered log lines (the app's request log batches them); gunicorn hooks call this."""
    for handler in list(logging.getLogger("api").handlers):
        with contextlib.suppress(Exception):  # never fail a worker's exit over a log line
            handler.flush()
