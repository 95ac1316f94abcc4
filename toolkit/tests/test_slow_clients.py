"""Slow clients against a deployed release, on a real engine through the real shared Caddy.

The app runs stock gunicorn workers, which a client sending slowly would hold; the proxy bears
such clients instead (its read timeouts, and request buffering: cnd_toolkit.release.caddy). The
release here has 2 workers of 2 threads, so 4 slow bodies reaching gunicorn would starve it:
16 half-sent heads and 16 slow bodies at the proxy leave ``/healthz`` answering and the engine's
health check passing, every second. And a 12 s request in flight across a blue/green switch
completes on the release it started on (gunicorn's graceful drain, the proxy's open connection).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cnd_toolkit.release import caddy, rollout, traffic
from cnd_toolkit.wait import NotReady, poll

from tests.test_canary_rollout import env, faulty  # noqa: F401 (faulty: an image with a slow route)
from tests.test_rollout import Host, app_images, host  # noqa: F401 (the fixtures)

pytestmark = pytest.mark.docker
SMALL = {"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "2"}


def connect(url: str, head: bytes) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    sock.sendall(head.replace(b"{host}", f"{parts.hostname}:{parts.port}".encode()))
    return sock


def in_flight(container: Any) -> float:
    """The release's own gauge of the requests its workers are handling (its metrics listener)."""
    text = traffic.exposition(container)
    found = re.search(r"^http_requests_in_flight(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


def in_app(container: Any) -> None:
    """A poll step: return once a request is in the release's workers."""
    if not in_flight(container):
        raise NotReady("the request is not in the app yet")


def closed(sock: socket.socket) -> bool:
    """The proxy has answered or closed ``sock`` (it reads something, or the end)."""
    sock.setblocking(False)
    try:
        return sock.recv(1024, socket.MSG_PEEK) is not None
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def test_slow_clients_at_the_proxy_leave_healthz_answering_and_the_release_healthy(
    engine: Any,
    host: Host,  # noqa: F811
    app_images: dict[str, str],  # noqa: F811
) -> None:
    release = rollout.roll_out(
        engine, host.target, app_images["rev-one"], version="1", revision="rev-one", environment=SMALL
    )
    heads = [connect(host.url, b"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ") for _ in range(16)]
    bodies = [
        connect(
            host.url,
            b"POST /api/echo HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            + (b"Transfer-Encoding: chunked\r\n\r\n2\r\n[1\r\n" if n % 2 else b"Content-Length: 100000\r\n\r\n[1"),
        )
        for n in range(16)
    ]
    answers: list[tuple[float, int | str]] = []
    health: dict[str, int] = {}  # each health check the engine ran meanwhile: its start -> exit code
    started = time.monotonic()
    try:
        with httpx.Client(timeout=3) as http:
            # Past the proxy's read_header timeout (10 s): the half-sent heads are dropped by then.
            while time.monotonic() - started < 12:
                for sock in heads + bodies:  # each trickles on, so no gap timer could end it
                    with contextlib.suppress(OSError):
                        sock.send(b"x" if sock in heads else (b"1\r\n,\r\n" if bodies.index(sock) % 2 else b","))
                sent = time.monotonic()
                try:
                    answers.append((time.monotonic() - sent, http.get(host.url + "/healthz").status_code))
                except httpx.HTTPError as exc:
                    answers.append((time.monotonic() - sent, type(exc).__name__))
                release.container.reload()
                for check in release.container.attrs["State"]["Health"]["Log"]:
                    health[check["Start"]] = check["ExitCode"]
                time.sleep(0.25)
        still_open = [sock for sock in heads if not closed(sock)]
        bodies_held = [sock for sock in bodies if not closed(sock)]
    finally:
        for sock in heads + bodies:
            sock.close()
    # Each asked with the client's 3 s timeout: a starved app would have left one unanswered.
    failed = [answer for answer in answers if answer[1] != 200]
    assert not failed and len(answers) >= 20, failed
    assert len(health) >= 8 and set(health.values()) == {0}, health  # about one check a second, each passed
    assert release.container.attrs["State"]["Health"]["Status"] == "healthy"
    assert not still_open, f"{len(still_open)} of 16 half-sent heads still open after {caddy.READ_HEADER}"
    assert len(bodies_held) == 16  # held at the proxy, within their read_body of 30 s


def test_a_12_s_request_in_flight_across_a_switch_completes_on_its_release(
    engine: Any,
    host: Host,  # noqa: F811
    app_images: dict[str, str],  # noqa: F811
    faulty: str,  # noqa: F811
) -> None:
    """The faulty image's route waits FAULT_DELAY seconds for a request with ``X-Fault: 1``."""
    first = rollout.roll_out(
        engine,
        host.target,
        faulty,
        version="slow",
        revision="rev-slow",
        environment=env("rev-slow", **SMALL, FAULT_DELAY="12"),
    )
    outcome: dict[str, Any] = {}

    def slow_request() -> None:
        sent = time.monotonic()
        try:
            answer = httpx.get(host.url + "/api/version", headers={"X-Fault": "1"}, timeout=60)
            outcome.update(status=answer.status_code, revision=answer.json().get("revision"))
        except (httpx.HTTPError, ValueError) as exc:
            outcome.update(status=type(exc).__name__)
        outcome.update(seconds=time.monotonic() - sent, ended=time.monotonic())

    thread = threading.Thread(target=slow_request)
    thread.start()
    poll(lambda: in_app(first.container), timeout=30, interval=0.1)
    lines: list[tuple[float, str]] = []
    second = rollout.roll_out(
        engine,
        host.target,
        app_images["rev-two"],
        version="2",
        revision="rev-two",
        environment=SMALL,
        on_line=lambda line: lines.append((time.monotonic(), line)),
    )
    thread.join(60)
    switched = next(at for at, line in lines if line.startswith("Switching"))
    assert second.revision == "rev-two" and httpx.get(host.url + "/api/version").json()["revision"] == "rev-two"
    assert (outcome["status"], outcome["revision"]) == (200, "rev-slow"), (outcome, lines)
    assert outcome["seconds"] >= 12 and outcome["ended"] > switched  # in flight across the switch
    assert first.container.name not in {r.name for r in rollout.releases(engine, host.target.slug) if r.running}
