"""The one poller: ask a probe until it says ready, a deadline passes, or it says it never will be.

Every wait in the tooling goes through :func:`poll`: a container's health gate, the local
gunicorn of ``inv dev --no-docker``, and the template's own tools. A probe returns its result
when ready, raises :class:`NotReady` (with the reason, kept for the timeout's message) to be
asked again, and raises anything else to stop the wait at once (a container that exited).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import httpx

T = TypeVar("T")


class NotReady(Exception):
    """Not ready yet; ``str(exc)`` says why, and is the timeout's reason if it is the last."""


class TimedOut(Exception):
    """The deadline passed; ``reason`` is what the last probe said, ``seconds`` how long it waited."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(f"not ready after {seconds:.0f}s ({reason})")
        self.reason = reason
        self.seconds = seconds


def poll(
    probe: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.02,
    max_interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``probe()``'s first result that is not :class:`NotReady`, asked every ``interval`` seconds.

    The interval doubles up to ``max_interval``, so a quick start is seen at once and a slow one
    is not hammered. The probe is always asked at least once, and once more at the deadline.
    """
    started = clock()
    deadline = started + timeout
    reason = "no answer yet"
    delay = interval
    while True:
        try:
            return probe()
        except NotReady as exc:
            reason = str(exc) or reason
        now = clock()
        if now >= deadline:
            raise TimedOut(reason, now - started)
        sleep(min(delay, max(0.0, deadline - now)))
        delay = min(delay * 2, max_interval)


def http_ok(http: httpx.Client, url: str) -> None:
    """A probe step: return when ``url`` answers 200, else raise :class:`NotReady` saying what it got."""
    try:
        status = http.get(url).status_code
    except httpx.TransportError as exc:
        raise NotReady(f"{urlsplit(url).path or '/'}: {type(exc).__name__}") from None
    if status != 200:
        raise NotReady(f"{urlsplit(url).path or '/'} answered {status}")


def wait_http(url: str, *, timeout: float = 30, check: Callable[[], None] | None = None) -> float:
    """Seconds until ``url`` answers 200; ``check`` runs before each try (it raises to stop the wait)."""
    started = time.monotonic()
    with httpx.Client(timeout=1) as http:

        def probe() -> float:
            if check is not None:
                check()
            http_ok(http, url)
            return time.monotonic() - started

        return poll(probe, timeout=timeout)
