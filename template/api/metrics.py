"""Prometheus metrics of the HTTP API, counted by the request middleware (api.observability).

- ``http_requests_total{method, route, status}``: every answered request. ``route`` is the
  matched URL rule (``/api/greeting``, ``/items/<int:id>``), ``<unmatched>`` for a path no rule
  matches; ``method`` is a standard method or ``OTHER``. A client can therefore not add series.
- ``http_request_duration_seconds{method, route}``: a histogram of the time to the answer's head.
- ``http_requests_in_flight``: requests being handled, over the live workers.
- ``app_info{name, version, revision}``: 1, naming the release.

gunicorn runs several worker processes. With ``PROMETHEUS_MULTIPROC_DIR`` set (the image sets it
to ``/tmp/metrics``, on the container's tmpfs; ``serve.py`` empties it at start), each worker
writes its values to memory-mapped files there and a scrape adds them up, so every worker
counts whichever one answers the scrape. A scrape that cannot read the files in a consistent
state (gunicorn's master is moving a dead worker's counts, :func:`compact`, and does not finish
in SCRAPE_LOCK_SECONDS) answers 503: a failed scrape is a gap to Prometheus, a lower total a
counter reset. Without ``PROMETHEUS_MULTIPROC_DIR`` (tests that build the app in-process), the
values are this process's.

Where ``/metrics`` answers (see :class:`Access`):
- on ``METRICS_PORT`` (gunicorn's second listener, 9101 by default), for a scraper on the
  container's network: only ``/metrics`` is served there;
- on the public port only with ``Authorization: Bearer <token>``, when
  ``APP_METRICS_TOKEN_SHA256`` holds the SHA-256 of that token (the deploy sets it from the
  ``METRICS_TOKEN`` setting; the token itself never reaches the container). Otherwise the public
  port answers 404, as for any unknown path.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import hmac
import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"
# Seconds; the p95/p99 latency of an API answering in tens of milliseconds falls between them.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

disable_created_metrics()  # no *_created series: Prometheus does not need them, and they double the output

# The metrics live in a registry of their own: in multiprocess mode a scrape reads the workers'
# files instead (through a MultiProcessCollector), never this process's objects.
_OWN = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("http_requests", "HTTP requests answered", ["method", "route", "status"], registry=_OWN)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from the request to the answer's head",
    ["method", "route"],
    buckets=BUCKETS,
    registry=_OWN,
)
IN_FLIGHT = Gauge("http_requests_in_flight", "Requests being handled", registry=_OWN, multiprocess_mode="livesum")
INFO = Gauge(
    "app_info",
    "The release this process runs (always 1)",
    ["name", "version", "revision"],
    registry=_OWN,
    multiprocess_mode="max",
)


class _FilesCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's collector, without the files a worker is still creating: MmapedDict
    creates its file empty and sizes it next; reading it in between raises struct.error (the
    scrape would answer 500). An empty file holds no values yet, so leaving it out loses none."""

    def __init__(self, registry: CollectorRegistry, directory: str) -> None:
        super().__init__(registry, directory)
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self.directory, "*.db")):
            with contextlib.suppress(FileNotFoundError):  # a live gauge's file, gone with its worker
                if os.path.getsize(path):
                    files.append(path)
        return self.merge(files, accumulate=True)


if MULTIPROCESS:
    _SCRAPED = CollectorRegistry()
    _FilesCollector(_SCRAPED, os.environ["PROMETHEUS_MULTIPROC_DIR"])
else:
    _SCRAPED = _OWN

# (method, route, status) -> the counter's and the histogram's series: looking a series up by its
# labels is the costly part of counting, so each is looked up once per process.
_series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}


def method_label(method: str | None) -> str:
    return method if method in METHODS else "OTHER"


def observe(method: str, route: str, status: str, seconds: float) -> None:
    """Count one answered request (``status``: its three digits)."""
    key = (method, route, status)
    series = _series.get(key)
    if series is None:
        series = _series[key] = (REQUESTS.labels(method, route, status), LATENCY.labels(method, route))
    series[0].inc()
    series[1].observe(seconds)


def set_info(name: str, version: str, revision: str) -> None:
    INFO.labels(name, version, revision).set(1)


class Unavailable(Exception):
    """The workers' files could not be read in a consistent state in time (a 503: the scrape
    fails, and Prometheus records a gap rather than a wrong number)."""


# Seconds a scrape waits for compact() to finish moving a dead worker's counts (it takes
# milliseconds; only a starved master holds the lock longer). Below Prometheus' default 10 s
# scrape timeout.
SCRAPE_LOCK_SECONDS = 5.0
# Seconds gunicorn's master waits for running scrapes before it leaves a dead worker's files for
# the next compact(): its main loop (heartbeats, replacing workers) waits meanwhile.
COMPACT_LOCK_SECONDS = 2.0


def exposition() -> bytes:
    """The text exposition. In multiprocess mode, raises :class:`Unavailable` rather than read the
    files while compact() moves a dead worker's counts: a read then could count them twice (the
    worker's file and the archive) or not at all, and the next scrape's lower total would look to
    Prometheus like a counter reset, adding every count since the start to rate() and increase()."""
    if not MULTIPROCESS:
        return generate_latest(_SCRAPED)
    with _files_lock(fcntl.LOCK_SH, SCRAPE_LOCK_SECONDS) as locked:
        if not locked:
            raise Unavailable(f"the metrics files stayed locked for {SCRAPE_LOCK_SECONDS:g} s")
        return generate_latest(_SCRAPED)


# A dead worker's files: counters and histograms are added into one archive file per kind and
# ``max`` gauges kept at their maximum, then the worker's file goes. Without this, every worker
# gunicorn replaces (GUNICORN_MAX_REQUESTS, a timeout, a crash) would leave its files on the
# tmpfs for good: each scrape would read more of them, until the tmpfs filled.
_MERGE = {"counter": "sum", "histogram": "sum", "gauge_max": "max"}
# Dead workers whose files a compact() could not fold (a scrape held the lock): the next one does.
_left: set[int] = set()


@contextlib.contextmanager
def _files_lock(how: int, seconds: float) -> Iterator[bool]:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    with open(os.path.join(directory, ".lock"), "a") as handle:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(handle, how | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.005)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compact(pid: int) -> int:
    """Fold a dead worker's files into the archive (in gunicorn's master, from ``child_exit``),
    under an exclusive lock, so no scrape sees a count twice or not at all (either would look to
    Prometheus like a counter reset). Returns the files folded. If running scrapes hold the lock
    past COMPACT_LOCK_SECONDS, the files stay, still read as they are (a dead worker's file counts
    like a live one's), and the next compact() folds them."""
    from prometheus_client.mmap_dict import MmapedDict

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not directory:
        return 0
    _left.add(pid)
    folded = 0
    with _files_lock(fcntl.LOCK_EX, COMPACT_LOCK_SECONDS) as locked:
        if not locked:
            return 0
        for dead_pid in sorted(_left):
            for kind, how in _MERGE.items():
                dead = os.path.join(directory, f"{kind}_{dead_pid}.db")
                if not os.path.exists(dead):
                    continue
                archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))
                try:
                    for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                        current, _ = archive.read_value(key)
                        archive.write_value(key, current + value if how == "sum" else max(current, value), timestamp)
                finally:
                    archive.close()
                os.remove(dead)
                folded += 1
        _left.clear()
    return folded


def token_digest(token: str) -> str:
    """What ``APP_METRICS_TOKEN_SHA256`` holds for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Access:
    """Who may read ``/metrics``: requests on the metrics listener, or bearers of the token."""

    def __init__(self, metrics_port: int, token_sha256: str) -> None:
        self.port = str(metrics_port) if metrics_port else ""
        self.token_sha256 = token_sha256.lower()

    def on_metrics_port(self, environ: WSGIEnvironment) -> bool:
        # gunicorn sets SERVER_PORT from the listener that accepted the connection, not from the
        # Host header (that is only used for unix sockets, which the image does not bind).
        return bool(self.port) and environ.get("SERVER_PORT") == self.port

    def bearer_allowed(self, environ: WSGIEnvironment) -> bool | None:
        """None: no token is configured (the public port has no /metrics); else whether the
        request carries the token."""
        if not self.token_sha256:
            return None
        scheme, _, credentials = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return False
        digest = token_digest(credentials.strip())
        return hmac.compare_digest(digest, self.token_sha256)


def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The exposition, for GET and HEAD."""
    if environ.get("REQUEST_METHOD") not in {"GET", "HEAD"}:
        start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
        return [b""]
    try:
        body = exposition()
    except Unavailable:
        start_response("503 Service Unavailable", [("Content-Length", "0"), ("Cache-Control", "no-store")])
        return [b""]
    start_response(
        "200 OK",
        [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
    )
    return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
