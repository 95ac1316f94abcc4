"""Request ids, the version header and one JSON log line per request."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, request
from werkzeug.routing import Rule

from api import metrics
from api.jsonlines import IN_FLIGHT, REQUEST_ID_HEADER, JsonFormatter, request_id_from
from api.jsonlines import timestamp as _timestamp

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REQUEST_ID_KEY = "api.request_id"  # where the middleware leaves the id in the WSGI environ
ROUTE_KEY = "api.route"  # where the request leaves its matched URL rule, for the metrics


class RoutedRequest(Request):
    """Flask's request, noting its matched URL rule in the environ as Flask matches it: Flask
    clears its own reference to the request when the view is done, before the middleware counts."""

    @property
    def url_rule(self) -> Rule | None:  # type: ignore[override]
        return self.__dict__.get("_url_rule")

    @url_rule.setter
    def url_rule(self, rule: Rule | None) -> None:
        self.__dict__["_url_rule"] = rule
        if rule is not None:
            self.environ[ROUTE_KEY] = rule.rule


class BatchedStdoutHandler(logging.Handler):
    """Writes JSON lines to ``sys.stdout`` in batches rather than one write per line.

    In a container every write to stdout is a syscall plus work in the container runtime's log
    pipeline; one write per request cost about a third of /healthz throughput (``nox -s bench``
    in the template repository). Lines are written at most ``interval`` seconds after they are
    logged, as soon as 64 KiB are waiting, at once for WARNING and above, and at exit (logging's
    own atexit hook calls ``flush``). ``interval <= 0`` writes every line at once.
    """

    max_bytes = 64 * 1024

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self._buffer: list[str] = []
        self._size = 0
        self._pid = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write(line, urgent=record.levelno >= logging.WARNING)

    def write(self, line: str, urgent: bool = False) -> None:
        """Queue one formatted line (without its newline); ``urgent`` writes it out at once."""
        line += "\n"
        with self.lock:  # type: ignore[union-attr]
            pid = os.getpid()
            if pid != self._pid:
                # First line in this process: gunicorn forks workers, and threads do not survive a
                # fork. Lines buffered before the fork are the parent's to write.
                self._buffer.clear()
                self._size = 0
                self._pid = pid
                if self.interval > 0:
                    threading.Thread(target=self._flush_periodically, name="log-flush", daemon=True).start()
            self._buffer.append(line)
            self._size += len(line)
            if urgent or self.interval <= 0 or self._size >= self.max_bytes:
                self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        if self._buffer:
            data = "".join(self._buffer)
            self._buffer.clear()
            self._size = 0
            sys.stdout.write(data)
            sys.stdout.flush()

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()


def configure_logging(level: str = "INFO", flush_seconds: float = 0.25) -> BatchedStdoutHandler:
    """Send the ``api`` loggers to stdout as JSON lines (idempotent: tests build many apps)."""
    logger = logging.getLogger("api")
    for old in [h for h in logger.handlers if isinstance(h, BatchedStdoutHandler)]:
        old.flush()
        logger.removeHandler(old)
    handler = BatchedStdoutHandler(flush_seconds)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler


def current_request_id() -> str | None:
    """The id of the request being handled (for error bodies and log lines)."""
    return request.environ.get(REQUEST_ID_KEY) if request else None


class RequestMiddleware:
    """WSGI middleware: request id in and out, ``X-App-Version``, one JSON log line and the
    Prometheus counts (api.metrics) per request, and ``/metrics`` itself.

    Plain WSGI rather than Flask hooks: it runs for every request (404s and errors included) and
    costs less per request than ``before_request``/``after_request`` with ``g``. Counting here
    rather than in a second middleware reuses the timing and status the log line needs.
    """

    def __init__(
        self,
        app: WSGIApplication,
        version: str,
        log: BatchedStdoutHandler | None,
        access: metrics.Access | None = None,
        count: bool = True,
    ) -> None:
        self.app = app
        self.version = version
        self.log = log
        self.access = access or metrics.Access(0, "")
        self.count = count

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if self.access.on_metrics_port(environ):
            # The metrics listener serves /metrics and nothing else; scrapes are not counted.
            if path == "/metrics":
                return metrics.serve(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
            return [b""]
        app = self.app
        if path == "/metrics":
            allowed = self.access.bearer_allowed(environ)
            if allowed:
                return metrics.serve(environ, start_response)
            if allowed is False:  # a token is configured and this request lacks it: counted and logged
                app = _unauthorized
        elif path == "/healthz" and environ.get("REQUEST_METHOD") in {"GET", "HEAD"}:
            app = _healthz  # liveness, answered before Flask: no hook added to the app can fail it
            environ[ROUTE_KEY] = path
        started = time.perf_counter()
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ[REQUEST_ID_KEY] = request_id
        status = ["500"]

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = status_line
            headers.append((REQUEST_ID_HEADER, request_id))
            headers.append(("X-App-Version", self.version))
            headers.append(("X-Content-Type-Options", "nosniff"))  # JSON is never to be sniffed as HTML
            return start_response(status_line, headers, exc_info)

        key = id(environ)
        method = environ.get("REQUEST_METHOD")
        IN_FLIGHT[key] = (request_id, method, path, time.time(), environ.get("REMOTE_ADDR"))
        if self.count:
            metrics.IN_FLIGHT.inc()
        try:
            body = app(environ, start)
        finally:
            del IN_FLIGHT[key]
            if self.count:
                metrics.IN_FLIGHT.dec()
        seconds = time.perf_counter() - started
        code = status[0][:3]
        if self.count:
            metrics.observe(metrics.method_label(method), environ.get(ROUTE_KEY, metrics.UNMATCHED), code, seconds)
        if self.log is not None:
            entry = {
                "ts": _timestamp(time.time()),
                "level": "info",
                "logger": "api.request",
                "msg": "request",
                "request_id": request_id,
                "method": method,
                "path": readable_path(path),
                "status": int(code),
                "duration_ms": round(seconds * 1000, 2),
                "remote_addr": environ.get("REMOTE_ADDR"),
            }
            self.log.write(json.dumps(entry))
        return body


def readable_path(path: str | None) -> str | None:
    """PATH_INFO as the client meant it: WSGI hands over the raw bytes as Latin-1 text, so a UTF-8
    path (``/café``) would be logged as mojibake (``/cafÃ©``). Bytes that are not UTF-8 are kept
    as ``\\xNN`` escapes, never guessed at."""
    if path is None or path.isascii():
        return path
    try:
        return path.encode("latin-1").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # not a WSGI string (a test's environ): as it is
        return path


def _healthz(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``GET /healthz``, logged and counted like every request, in a fifth of a Flask request's
    time (``nox -s bench``): Docker, Caddy and Kubernetes ask it every few seconds, for life."""
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "16")])
    return [b'{"status":"ok"}\n']


def _unauthorized(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    body = json.dumps(
        {
            "error": {
                "status": 401,
                "code": "unauthorized",
                "message": "/metrics needs Authorization: Bearer <the metrics token>",
                "request_id": environ.get(REQUEST_ID_KEY),
            }
        }
    ).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("WWW-Authenticate", 'Bearer realm="metrics"'),
    ]
    start_response("401 Unauthorized", headers)
    return [body]


def register_request_hooks(app: Flask) -> None:
    handler = configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FLUSH_SECONDS"])
    # The request log is a hot path: it skips the logging machinery (a LogRecord per request)
    # and writes straight to the batching handler, unless the level hides INFO.
    log = handler if logging.getLogger("api.request").isEnabledFor(logging.INFO) else None
    app.request_class = RoutedRequest
    access = metrics.Access(app.config["METRICS_PORT"], app.config["METRICS_TOKEN_SHA256"])
    metrics.set_info(app.config["APP_NAME"], app.config["VERSION"], app.config["REVISION"])
    app.wsgi_app = RequestMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, app.config["VERSION"], log, access, count=app.config["METRICS"]
    )
