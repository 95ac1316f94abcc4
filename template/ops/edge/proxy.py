"""Forwarding a request to an origin, as Netlify's proxy (a status-200 rewrite to a URL) does."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

# Headers that describe one connection, not the message: never forwarded by a proxy (RFC 9110 7.6.1).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
# Netlify's proxy gives up on an origin that sends nothing for 26 s.
PROXY_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=26)
SMALL_BODY = 256 * 1024


async def forward(
    session: aiohttp.ClientSession, request: web.Request, target: str, extra: dict[str, str]
) -> web.StreamResponse:
    """Forward the request (method, headers, streamed body) and stream the answer back."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
    headers.update(extra)
    peer = request.remote or "127.0.0.1"
    forwarded_for = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    body = request.content if request.body_exists else None
    try:
        async with session.request(
            request.method, target, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            length = upstream.content_length
            if length is not None and length <= SMALL_BODY:
                # A small body with a known length goes back in one write.
                kept = CIMultiDict(
                    (name, value)
                    for name, value in upstream.headers.items()
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
                )
                payload = await upstream.read()
                return web.Response(status=upstream.status, reason=upstream.reason, body=payload, headers=kept)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientConnectionError, OSError) as exc:
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(target))
        return web.Response(status=502, text=f"Bad Gateway: the edge could not reach {origin} ({exc})\n")
    except TimeoutError:
        return web.Response(status=504, text="Gateway Timeout: the backend sent nothing for 26 s\n")
