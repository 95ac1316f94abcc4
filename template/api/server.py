"""gunicorn's side of the API: JSON log lines, and no request that vanishes from the logs.

The workers are gunicorn's own (``sync``, or ``gthread`` when ``GUNICORN_THREADS`` > 1).
Slow clients are the proxy's to bear: Caddy in front of every release, and the local edge,
read each request whole before the app gets it and cut heads and bodies that take too long
(the README's "Slow clients"). gunicorn.conf.py names ``JsonLogger`` and calls the hooks below:

- Every line gunicorn logs is one JSON object (``json.dumps``), its access log included, so a
  quote, backslash or newline in a ``User-Agent`` cannot break a line or add fields.
- On SIGTERM the app's batched request lines are written out at once.
- Requests still running when the worker gives up (just before the master kills it at the end of
  ``GUNICORN_GRACEFUL_TIMEOUT``, on SIGQUIT/SIGINT, at the worker timeout) leave an
  ``api.request`` line with ``"msg": "aborted"``.

Standard library and gunicorn only: the master process imports this module (see api/__init__).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from api.jsonlines import IN_FLIGHT, JsonFormatter, dumps, timestamp

_request_log = logging.getLogger("api.request")


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
        status = str(resp.status).split(None, 1)[0]  # "200 OK", or 200
        request_id = next((value for name, value in resp.headers if name.lower() == "x-request-id"), None)
        entry = {
            "ts": timestamp(time.time()),
            "level": "info",
            "logger": "gunicorn.access",
            "remote_addr": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING"),
            "status": int(status) if status.isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_us": request_time.seconds * 1_000_000 + request_time.microseconds,
            "request_id": request_id,
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        try:
            self.access_log.info(dumps(entry))
        except Exception:
            self.exception("could not write an access log line")


def flush_logs() -> None:
    """Write out buffered log lines (the app's request log batches them)."""
    for handler in list(logging.getLogger("api").handlers):
        with contextlib.suppress(Exception):  # never fail a worker's exit over a log line
            handler.flush()


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


def abort_margin(grace: float) -> float:
    """How long before the master's SIGKILL the requests still running are reported."""
    return min(1.0, grace / 4)


def watch_shutdown(grace: float) -> None:
    """In a worker (gunicorn's ``post_worker_init``): on SIGTERM, write out the batched request
    lines at once, and report the requests still running ``abort_margin`` before the master's
    SIGKILL (``grace`` seconds after its SIGTERM). gunicorn's own handler still runs first.

    The handler only sets an event: the work is done by a thread, outside the handler, which may
    have interrupted a write holding the log handler's lock.
    """
    stopping = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        stopping.set()

    def when_stopping() -> None:
        stopping.wait()
        at = time.monotonic() + grace - abort_margin(grace)
        flush_logs()
        while (left := at - time.monotonic()) > 0:
            time.sleep(left)
        report_in_flight(f"still running {grace:g} s after SIGTERM (GUNICORN_GRACEFUL_TIMEOUT)")

    threading.Thread(target=when_stopping, name="shutdown-watch", daemon=True).start()
    signal.signal(signal.SIGTERM, on_sigterm)
