"""Forwarding a request to an origin, as Netlify's proxy (a status-200 rewrite to a URL) does.

What reaches the origin is what the client sent: the request-target byte for byte, the
client's own headers (minus the connection-scoped ones, Host and Expect) plus
X-Forwarded-For/-Proto/-Host and the rule's headers, and the body as it was encoded. What
reaches the client is the origin's status, headers and body bytes (never decompressed).

Every failure ends one way or the other: before the response has begun, as a one-line 502 or
504 naming the origin (408 or 400 when the client's own body was the problem); after it has
begun, by aborting the client's connection, so the client sees a failed transfer and never a
second response inside the first one's body. The time limits are in ``cnd_toolkit.edge.limits``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from cnd_toolkit.edge.limits import CONNECT_TIMEOUT, ORIGIN_TIMEOUT, Limits, app_limits

# Headers that describe one connection, not the message: never forwarded by a proxy (RFC 9110 7.6.1),
# nor are the headers a Connection header names.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
# Host names the origin (aiohttp's client sets it from the target). Expect: 100-continue is
# answered by the edge itself (aiohttp's server does it): an origin that ignores Expect would
# otherwise leave the body unsent and the request hanging.
ANSWERED_BY_THE_EDGE = {"host", "expect"}
# aiohttp's client would add these when the client did not send them; a proxy must not
# (an Accept-Encoding the client never sent would have the origin compress for it).
CLIENT_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# Kept for the session's defaults; forward() passes the timeouts of its Limits on each request.
PROXY_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=ORIGIN_TIMEOUT)
SMALL_BODY = 256 * 1024
# A request body is read, up to this many bytes, before the edge connects to the origin, as the
# shared Caddy does in front of a release: a client that sends its body slowly holds the edge's
# connection, not one of the app's stock gunicorn workers. The app's default limit and a byte: a
# body over it is refused by the app from what was read. The rest of a larger body streams on,
# within the same deadline: the whole body has ``client_timeout`` to arrive.
REQUEST_BUFFER = 1024 * 1024 + 1
# Characters that can never appear raw in a request-target. A percent-encoded target has none,
# so quoting them changes nothing there, and keeps a raw space or non-ASCII from breaking the line.
TARGET_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) not in '"<>\\^`{|}')


async def forward(
    session: aiohttp.ClientSession,
    request: web.Request,
    target: str,
    extra: dict[str, str],
    limits: Limits | None = None,
) -> web.StreamResponse:
    """Forward the request (method, headers, streamed body) to ``target`` and stream the answer back.

    ``target`` is an absolute URL whose path and query are percent-encoded as the client sent
    them; they reach the origin unchanged. ``limits`` defaults to the application's (see
    ``cnd_toolkit.edge.limits``), so ``limits.origin_timeout`` is how long the origin may stay silent.
    """
    limits = limits or app_limits(request)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(target))
    upload = _Upload(request, limits.client_timeout) if request.body_exists else None
    if upload is not None and not await upload.fill(REQUEST_BUFFER):
        return upload.problem or _answer(400, "Bad Request: the request body could not be read")
    response: web.StreamResponse | None = None
    try:
        async with session.request(
            request.method,
            URL(quote(target, safe=TARGET_SAFE), encoded=True),
            headers=_request_headers(request, extra),
            data=upload.data() if upload is not None else None,
            allow_redirects=False,
            skip_auto_headers=CLIENT_AUTO_HEADERS,
            auto_decompress=False,
            timeout=limits.origin_client_timeout,
        ) as upstream:
            if not 200 <= upstream.status < 600:
                # A 1xx that aiohttp passes on (an unasked-for 101 Switching Protocols) or a status out
                # of range: nothing a client that asked for none of it can use.
                return _answer(502, f"Bad Gateway: {origin} answered with status {upstream.status}")
            response = await _relay(request, upstream, limits)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        if response is not None:
            return response  # sent (or aborted) already: closing the origin's side failed after that
        if upload is not None and upload.problem is not None:
            return upload.problem
        return _failure(origin, exc, limits)
    return response


def _connection_scoped(headers: MultiMapping[str]) -> set[str]:
    """The hop-by-hop header names, with those a Connection header lists (lower case)."""
    names = set(HOP_BY_HOP)
    for value in headers.getall("Connection", []):
        names.update(token.strip().lower() for token in value.split(","))
    return names


def _kept(items: Iterable[tuple[str, str]], dropped: set[str]) -> CIMultiDict[str]:
    return CIMultiDict((name, value) for name, value in items if name.lower() not in dropped)


def _request_headers(request: web.Request, extra: dict[str, str]) -> CIMultiDict[str]:
    """The client's headers (repeated ones kept) for the origin, with the proxy's own."""
    headers = _kept(request.headers.items(), _connection_scoped(request.headers) | ANSWERED_BY_THE_EDGE)
    for name, value in extra.items():
        headers[name] = value
    peer = request.remote or "127.0.0.1"
    forwarded_for = ", ".join(headers.popall("X-Forwarded-For", []))
    headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse, limits: Limits) -> web.StreamResponse:
    """Send the origin's answer to the client; raises only before anything was sent.

    The response it returns is complete, or its connection aborted: aiohttp adds nothing to it.
    """
    headers = _kept(upstream.headers.items(), _connection_scoped(upstream.headers))
    length = upstream.content_length
    if length is not None and length <= SMALL_BODY:
        # A small body with a known length is read first (so a failure is still a clean 502 or
        # 504) and goes back in one write.
        payload = await upstream.read()
        if request.method != "HEAD":
            headers.popall("Content-Length", None)  # aiohttp sets it from the body
        response: web.StreamResponse = web.Response(
            status=upstream.status, reason=upstream.reason, body=payload, headers=headers
        )
        if await _bounded(limits, _send(request, response)):
            return response
        return _aborted(request, response)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if not await _bounded(limits, response.prepare(request)):
        return _aborted(request, response)
    while True:
        try:
            chunk = await upstream.content.readany()
        except (aiohttp.ClientError, OSError):
            # The origin stalled past the timeout, closed early or broke its framing: the status
            # line is out, so the only honest answer left is a failed transfer.
            return _aborted(request, response)
        if not chunk:
            break
        if not await _bounded(limits, response.write(chunk)):
            return _aborted(request, response)
    if not await _bounded(limits, response.write_eof()):
        return _aborted(request, response)
    return response


async def _bounded(limits: Limits, write: Awaitable[object]) -> bool:
    """Await a write to the client for at most the client timeout; False if the client failed."""
    try:
        async with asyncio.timeout(limits.client_timeout):
            await write
    except OSError:  # gone (ConnectionResetError) or not reading (TimeoutError)
        return False
    return True


async def _send(request: web.Request, response: web.StreamResponse) -> None:
    await response.prepare(request)
    await response.write_eof()


def _aborted(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Abort the client's connection mid-response; aiohttp then sends nothing more on it."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return response


class _Upload:
    """The client's request body for the origin, each wait bounded; remembers why it failed."""

    def __init__(self, request: web.Request, timeout: float) -> None:
        self.request = request
        self.timeout = timeout
        self.problem: web.Response | None = None
        self.buffered: list[bytes] = []
        self.ended = False
        self.deadline = 0.0  # (the event loop's clock) when the whole body must have arrived

    async def fill(self, limit: int) -> bool:
        """Read the body until it ends or ``limit`` bytes are in, within ``timeout`` in all (as
        Caddy's ``read_body``: trickling does not extend it); False, with ``problem``, if it failed."""
        size = 0
        self.deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(self.deadline):
                async for chunk in self._read():
                    self.buffered.append(chunk)
                    size += len(chunk)
                    if size >= limit:
                        return True
        except TimeoutError:
            self.problem = self.problem or _answer(
                408, f"Request Timeout: the client did not send its body within {self.timeout:g} s"
            )
            return False
        except Exception:
            return False
        self.ended = True
        return True

    def data(self) -> bytes | AsyncIterator[bytes]:
        """A body read whole goes with its Content-Length (a chunked one too, as Caddy sends a
        buffered body); a larger one streams on after what was read."""
        return b"".join(self.buffered) if self.ended else self.chunks()

    async def chunks(self) -> AsyncIterator[bytes]:
        buffered, self.buffered = self.buffered, []
        for chunk in buffered:
            yield chunk
        if not self.ended:
            try:
                async with asyncio.timeout_at(self.deadline):
                    async for chunk in self._read():
                        yield chunk
            except TimeoutError:
                self.problem = self.problem or _answer(
                    408, f"Request Timeout: the client did not send its body within {self.timeout:g} s"
                )
                raise

    async def _read(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    chunk = await self.request.content.readany()
            except TimeoutError:
                self.problem = _answer(408, f"Request Timeout: the client sent no body data for {self.timeout:g} s")
                raise
            except Exception as exc:
                self.problem = _answer(400, f"Bad Request: the request body ended early or is malformed ({exc})")
                raise
            if not chunk:
                return
            yield chunk


def _failure(origin: str, exc: BaseException, limits: Limits) -> web.Response:
    """The answer when the origin failed before the response began."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return _answer(504, f"Gateway Timeout: the edge could not connect to {origin} in {limits.connect_timeout:g} s")
    # Checked before the connection errors: aiohttp's timeouts subclass them.
    if isinstance(exc, TimeoutError):
        return _answer(
            504,
            f"Gateway Timeout: {origin} sent nothing for {limits.origin_timeout:g} s "
            f"(Netlify's proxy waits {ORIGIN_TIMEOUT:g} s)",
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        return _answer(502, f"Bad Gateway: {origin} sent a response head the edge cannot accept ({exc.message})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return _answer(502, f"Bad Gateway: {origin} closed the connection before the end of its response body")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return _answer(502, f"Bad Gateway: {origin} closed the connection without a response")
    return _answer(502, f"Bad Gateway: the edge could not reach {origin} ({exc})")


def _answer(status: int, message: str) -> web.Response:
    line = " ".join(message.split())  # one line, whatever an exception's text holds
    if len(line) > 300:
        line = line[:297] + "..."
    return web.Response(status=status, text=line + "\n")
