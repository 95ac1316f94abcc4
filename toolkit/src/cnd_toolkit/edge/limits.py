"""How much the local edge lets a client or an origin take: every wait and every size is bounded.

The edge is an aiohttp server; each defence uses what aiohttp 3.14 offers where it can:

- Request heads (aiohttp's parser): a request line over ``max_line_size``, a header line over
  ``max_field_size`` or more than ``max_headers`` fields get a one-line 400 and the connection
  is closed (aiohttp answers 400, never 431). Header figures are gunicorn's (8190 bytes, 100
  fields), so the edge forwards no head the app's server would refuse; the request line gets
  nginx's 8 KiB. The client's mistake is logged without a traceback.
- Idle and slow clients, slowloris included (aiohttp's keep-alive timer, armed when a
  connection opens since aiohttp 3.14): a connection that has not delivered a complete request
  head ``client_timeout`` after it opened, or after its previous response, is closed, and
  trickling bytes does not reset the timer. The proxy bounds the rest of a client's share with
  the same figure: each wait for more of a request body (then a 408) and each write the client
  does not read (then the connection is aborted).
- Connections (aiohttp has no cap; ``ConnectionLimit`` counts them): past ``max_connections``
  a new connection gets a 503 with ``Retry-After`` once its request head is in (at most
  ``BUSY_WAIT`` seconds) and is closed, so refused connections hold nothing either.
- Origins (aiohttp's client timeouts): ``origin_timeout`` is Netlify's 26 s without a byte from
  the origin, to the first byte and between two reads, never in total, so a slow but steady
  answer is not cut; then a 504, or an aborted connection once the answer has begun.
  ``connect_timeout`` bounds the TCP connect; a response head over aiohttp's client limits
  (8190-byte lines, 128 fields) is a 502.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http import HttpProcessingError

ORIGIN_TIMEOUT = 26.0  # Netlify's proxy gives up on an origin that sends nothing for 26 s.
CONNECT_TIMEOUT = 10.0
CLIENT_TIMEOUT = 30.0  # idle keep-alive, a whole request head, a gap in a body either way
MAX_CONNECTIONS = 256  # a browser opens 6 per host; each proxied one also holds an origin socket
MAX_LINE_SIZE = 8190  # the request line (gunicorn: 4094, nginx: 8 KiB)
MAX_FIELD_SIZE = 8190  # one header line (gunicorn: 8190)
MAX_HEADERS = 100  # header fields in one request (gunicorn: 100)
LINGERING_TIME = 10.0  # aiohttp's
SHUTDOWN_GRACE = 5.0  # requests still running when the edge stops get this long to finish
BUSY_WAIT = 1.0  # how long a refused connection may take to send its request head
BUSY_HEAD = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """The figures above, in one value (tests use short timeouts and a small connection cap)."""

    origin_timeout: float = ORIGIN_TIMEOUT
    connect_timeout: float = CONNECT_TIMEOUT
    client_timeout: float = CLIENT_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    max_line_size: int = MAX_LINE_SIZE
    max_field_size: int = MAX_FIELD_SIZE
    max_headers: int = MAX_HEADERS

    @cached_property
    def origin_client_timeout(self) -> aiohttp.ClientTimeout:
        """The origin's timeouts for aiohttp's client: per read and for the connect, none in total."""
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=self.origin_timeout)

    def handler_options(self) -> dict[str, Any]:
        """Keyword arguments for aiohttp's ``RequestHandler`` (also accepted by ``AppRunner``)."""
        return {
            "keepalive_timeout": self.client_timeout,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
            # After an early answer, aiohttp reads what is left of a request body for up to 10 s.
            "lingering_time": min(LINGERING_TIME, self.client_timeout),
            # A request body goes to the origin as the client encoded it (Content-Encoding too).
            "auto_decompress": False,
            "access_log": None,
        }


LIMITS = web.AppKey("edge_limits", Limits)


def app_limits(request: web.Request) -> Limits:
    """The limits of the application serving ``request`` (the defaults when it set none)."""
    return request.config_dict.get(LIMITS, Limits())


class ConnectionLimit:
    """A protocol factory for ``loop.create_server``: aiohttp's handler, at most ``max_connections`` at once."""

    def __init__(self, server: web.Server, limits: Limits) -> None:
        self.server = server
        self.limits = limits
        self.open = 0

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.limits.max_connections:
            return _Busy(self.limits.max_connections)
        self.open += 1
        return _CountedHandler(
            self.server, self._closed, loop=asyncio.get_running_loop(), **self.limits.handler_options()
        )

    def _closed(self) -> None:
        self.open -= 1


class _CountedHandler(web.RequestHandler):
    """aiohttp's handler, telling the limit when its connection is gone."""

    __slots__ = ("_on_closed",)

    def __init__(self, manager: web.Server, on_closed: Callable[[], None], **options: Any) -> None:
        super().__init__(manager, **options)
        self._on_closed: Callable[[], None] | None = on_closed

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), HttpProcessingError):
            # A malformed or oversized request head: answered with a 400, the client's mistake,
            # not a traceback for the edge's log.
            self.logger.debug(*args, **kw)
            return
        super().log_exception(*args, **kw)

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            on_closed, self._on_closed = self._on_closed, None
            if on_closed is not None:
                on_closed()


class _Busy(asyncio.Protocol):
    """Reads a request head (at most BUSY_HEAD bytes, BUSY_WAIT seconds), answers 503, closes.

    Reading the head first means the close does not reset a connection with unread data,
    which could lose the answer on its way to the client.
    """

    def __init__(self, limit: int) -> None:
        body = f"Service Unavailable: the edge has {limit} connections open; retry shortly\n".encode()
        self.answer = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.head = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(BUSY_WAIT, self.refuse)

    def data_received(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" in self.head or len(self.head) > BUSY_HEAD:
            self.refuse()

    def refuse(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.answer)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None
