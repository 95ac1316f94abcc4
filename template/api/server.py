"""gunicorn's side of the API: JSON log lines, JSON errors and a deadline for request heads.

gunicorn.conf.py names these classes (``worker_class``, ``logger_class``). They cover what
happens before the app sees a request:

- Requests gunicorn refuses itself (a request line over ``limit_request_line``, too many or too
  large headers, conflicting ``Content-Length``/``Transfer-Encoding``, malformed lines) get the
  app's JSON error body, an ``X-Request-ID`` and one ``api.request`` log line, not HTML.
- Every line gunicorn logs is one JSON object (``json.dumps``), its access log included, so a
  quote, backslash or newline in a ``User-Agent`` cannot break a line or add fields.
- A request head must arrive within ``header_timeout`` seconds (``GUNICORN_HEADER_TIMEOUT``),
  else 408. The threaded worker also reads heads in its event loop, not in a thread, so clients
  that send half a head and stall hold no thread: health checks keep being answered.

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

from api.jsonlines import JsonFormatter, dumps, request_id_from, timestamp

DEFAULT_HEADER_TIMEOUT = 10.0
# Heads are buffered in the event loop up to this size; a larger one (rare: big cookies) is read
# by a thread, still under the deadline. It bounds a worker's memory at worker_connections x this.
HEAD_BUFFER_BYTES = 32 * 1024
_HEAD_ENDS = (b"\n\r\n", b"\n\n")  # CRLF CRLF, or bare LFs, which the parser then refuses with 400

_request_log = logging.getLogger("api.request")


class HeadTimeout(Exception):
    """The request head did not arrive in time."""


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


def describe(exc: BaseException, cfg: Any, header_timeout: float) -> tuple[int, str, str, str]:
    """(status, reason phrase, code, message) for an error gunicorn raised before the app ran.

    Messages are fixed texts: nothing the client sent is reflected (the detail goes to the log).
    """
    e = http_errors
    if isinstance(exc, HeadTimeout):
        return 408, "Request Timeout", "request_timeout", f"the request head did not arrive within {header_timeout:g} s"
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
    """What both worker classes add: JSON errors (``handle_error``) and logs flushed on SIGTERM."""

    cfg: Any
    log: Any
    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def handle_exit(self, sig: int, frame: Any) -> None:
        # SIGTERM (docker stop): write out the batched request lines now, not only at exit. A
        # request still running when the grace period ends gets the worker SIGKILLed, and lines
        # still buffered then would be lost. Not from this handler itself: it may have
        # interrupted a write holding the log handler's lock.
        super().handle_exit(sig, frame)  # type: ignore[misc]
        self.flush_logs_soon()

    def flush_logs_soon(self) -> None:
        threading.Thread(target=flush_logs, name="log-flush-on-exit", daemon=True).start()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        started = datetime.now()
        addr = addr or ("", -1)  # unix socket
        if req is None and isinstance(exc, (http_errors.InvalidHeader, http_errors.InvalidHeaderName)):
            req = getattr(exc, "req", None)
        status, reason, code, message = describe(exc, self.cfg, self.header_timeout)
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
        if isinstance(exc, HeadTimeout):
            # The client stalled: do not wait for it to close (gunicorn lingers up to 2 s).
            _shutdown(client)


def log_rejection(status: int, code: str, exc: BaseException, remote_addr: str, request_id: str, req: Any) -> None:
    detail = str(exc)[:200] if not isinstance(exc, HeadTimeout) else "request head incomplete at the deadline"
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


# ---------------------------------------------------------------------------- head deadline


class HeadDeadline:
    """A socket whose reads fail with HeadTimeout once ``deadline`` passes, until disarmed.

    Unlike a socket timeout, which bounds each read, the deadline bounds the whole head: a
    client sending one byte every few seconds is cut off too.
    """

    def __init__(self, sock: Any, deadline: float) -> None:
        self.sock = sock
        self.deadline: float | None = deadline

    def recv(self, size: int, *flags: int) -> bytes:
        if self.deadline is None:
            return bytes(self.sock.recv(size, *flags))
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.deadline = None
            raise HeadTimeout()
        self.sock.settimeout(remaining)
        try:
            return bytes(self.sock.recv(size, *flags))
        except TimeoutError:
            self.deadline = None
            raise HeadTimeout() from None
        finally:
            self.sock.settimeout(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _disarm(req: Any) -> None:
    unreader = getattr(req, "unreader", None)
    wrapped = getattr(unreader, "sock", None)
    if isinstance(wrapped, HeadDeadline):
        unreader.sock = wrapped.sock  # type: ignore[union-attr]


class SyncWorker(_ApiWorker, sync.SyncWorker):
    """gunicorn's sync worker (GUNICORN_THREADS=1) with JSON errors and a head deadline.

    A sync worker serves one connection at a time, so a stalled client still holds the whole
    worker, but for at most ``header_timeout`` seconds instead of until the worker timeout.
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
        super().handle(listener, HeadDeadline(client, time.monotonic() + self.header_timeout), addr)

    def handle_request(self, listener: Any, req: Any, client: Any, addr: Any) -> None:
        if isinstance(client, HeadDeadline):
            client.deadline = None  # the head is in; the body and response are not bound by it
        super().handle_request(listener, req, client, addr)


class ThreadWorker(_ApiWorker, gthread.ThreadWorker):
    """gunicorn's gthread worker, reading request heads in its event loop.

    gunicorn hands a connection to a thread as soon as it is readable, and the thread then blocks
    until the whole head has arrived: clients that send half a head and stall hold every thread.
    Here the event loop collects the head without blocking (up to HEAD_BUFFER_BYTES) and only a
    complete head reaches a thread; heads not complete within ``header_timeout`` get 408.
    """

    def init_process(self) -> None:
        self._heads: dict[Any, float] = {}  # connections collecting a head -> deadline (in order)
        self._stopping_at: float | None = None
        # TLS and HTTP/2 prior knowledge read the connection themselves before the parser does.
        self._buffer_heads = not self.cfg.is_ssl and self.cfg.http2_cleartext not in ("prior-knowledge", "both")
        super().init_process()

    def flush_logs_soon(self) -> None:
        self.method_queue.defer(flush_logs)  # run by the event loop, outside the signal handler

    def enqueue_req(self, conn: Any) -> None:
        if not self._buffer_heads or conn.is_http2:
            super().enqueue_req(conn)
            return
        pending = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn._head = bytearray(pending)
        conn._head_deadline = time.monotonic() + self.header_timeout
        conn.sock.setblocking(False)
        if self._head_complete(conn._head, 0):
            self._dispatch(conn)
        else:
            self._read_head(conn)

    @staticmethod
    def _head_complete(head: bytearray, start: int) -> bool:
        start = max(0, start - 3)
        return len(head) >= HEAD_BUFFER_BYTES or any(head.find(end, start) >= 0 for end in _HEAD_ENDS)

    def _read_head(self, conn: Any, _fileobj: Any = None) -> None:
        try:
            data = conn.sock.recv(HEAD_BUFFER_BYTES)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            self._drop(conn)
            return
        if data == b"":  # the client closed
            self._drop(conn)
            return
        if data:
            before = len(conn._head)
            conn._head += data
            if self._head_complete(conn._head, before):
                self._dispatch(conn)
                return
        if conn not in self._heads:
            self._heads[conn] = conn._head_deadline
            self.poller.register(conn.sock, gthread.selectors.EVENT_READ, partial(self._read_head, conn))

    def _unwatch(self, conn: Any) -> None:
        if self._heads.pop(conn, None) is not None:
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)

    def _dispatch(self, conn: Any) -> None:
        self._unwatch(conn)
        conn._head_bytes = bytes(conn.__dict__.pop("_head"))
        super().enqueue_req(conn)

    def _drop(self, conn: Any) -> None:
        self._unwatch(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        if not self.alive and self._stopping_at is None:
            self._stopping_at = now
        # A stopping worker gives heads still arriving a short grace, like kept-alive connections.
        stop = None if self._stopping_at is None else self._stopping_at + gthread.STOP_KEEPALIVE_LINGER
        for conn, deadline in list(self._heads.items()):  # in deadline order
            if deadline > now and (stop is None or now < stop):
                break
            self._expire(conn)

    def _expire(self, conn: Any) -> None:
        self._unwatch(conn)
        head = conn.__dict__.pop("_head", b"")
        if head.strip():  # a connection that sent nothing is closed without a word, like gunicorn's
            exc = HeadTimeout()
            status, reason, code, message = describe(exc, self.cfg, self.header_timeout)
            request_id = request_id_from(None)
            log_rejection(status, code, exc, conn.client[0] if conn.client else "", request_id, None)
            with contextlib.suppress(OSError):
                conn.sock.send(error_response(status, reason, code, message, request_id))
        self.nr_conns -= 1
        _shutdown(conn.sock)
        conn.close()

    def handle(self, conn: Any) -> Any:
        head = conn.__dict__.pop("_head_bytes", None)
        if head is not None:
            conn.data_ready = True
            conn.sock.setblocking(True)
            try:
                conn.init()
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    self.log.exception("socket error")
                return False
            conn.parser.unreader.unread(head)
            # The rest of a head over HEAD_BUFFER_BYTES is read by this thread, under the same deadline.
            conn.parser.unreader.sock = HeadDeadline(conn.sock, conn.__dict__.pop("_head_deadline"))
        return super().handle(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        _disarm(req)
        return super().handle_request(req, conn)


def flush_logs() -> None:
    """Write out buffered log lines (the app's request log batches them); gunicorn hooks call this."""
    for handler in list(logging.getLogger("api").handlers):
        with contextlib.suppress(Exception):  # never fail a worker's exit over a log line
            handler.flush()
