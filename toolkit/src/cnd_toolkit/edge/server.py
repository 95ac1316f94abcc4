"""The local edge server (aiohttp): static files, redirects, rewrites, proxies and headers."""

from __future__ import annotations

import asyncio
import mimetypes
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from cnd_toolkit.edge.limits import LIMITS, SHUTDOWN_GRACE, ConnectionLimit, Limits
from cnd_toolkit.edge.origin import PROXY_TIMEOUT, forward
from cnd_toolkit.edge.routing import Decision, Router
from cnd_toolkit.errors import ConfigError, OpsError
from cnd_toolkit.logs import LineSink
from cnd_toolkit.netlify.check import check_config
from cnd_toolkit.netlify.config import NetlifyConfig, load

SMALL_FILE = 256 * 1024
TEXT_TYPES = {"application/javascript", "application/json", "image/svg+xml"}
# Netlify serves JavaScript as application/javascript; Python 3.12+ would say text/javascript.
mimetypes.add_type("application/javascript", ".js")


class Edge:
    """Serves one site the way Netlify's CDN would: decisions from the router, I/O here."""

    def __init__(self, site: NetlifyConfig, on_log: LineSink | None = None) -> None:
        self.site = site
        self.router = Router(site)
        self.on_log = on_log
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No cookie jar, no automatic decompression: the proxy passes bytes through untouched.
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, timeout=PROXY_TIMEOUT
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        decision = self.router.route(request.method, raw_target(request))
        response = await self.respond(request, decision)
        if self.on_log:
            elapsed = (time.perf_counter() - started) * 1000
            detail = f" {decision.detail}" if decision.detail else ""
            self.on_log(
                f"{request.method} {request.raw_path} {response.status} {decision.kind}{detail} {elapsed:.1f}ms"
            )
        return response

    async def respond(self, request: web.Request, decision: Decision) -> web.StreamResponse:
        if decision.kind == "proxy":
            assert decision.rule is not None
            return await forward(await self.session(), request, decision.location, decision.rule.headers)
        if decision.kind == "redirect":
            # Netlify's redirects carry a short body naming the target.
            return web.Response(
                status=decision.status,
                text=f"Redirecting to {decision.location}\n",
                headers={"Location": decision.location},
            )
        response: web.StreamResponse
        if decision.kind == "bad-request":
            return web.Response(status=400, text="Bad Request: the path is not one a browser sends\n")
        if decision.kind == "method-not-allowed":
            response = web.Response(status=405, text="Method Not Allowed\n", headers={"Allow": "GET, HEAD"})
        elif decision.file is None:
            response = web.Response(status=decision.status, text="Not Found\n")
        else:
            try:
                response = self.file_response(request, decision.file, decision.status)
            except OSError as exc:  # unreadable (permissions), or gone since it was looked up
                if self.on_log:
                    self.on_log(f"cannot read {decision.file}: {exc.strerror or exc}; answering 404")
                response = web.Response(status=404, text="Not Found\n")
        for name, value in decision.headers:
            response.headers[name] = value
        return response

    def file_response(self, request: web.Request, file: Path, status: int) -> web.StreamResponse:
        stat = file.stat()
        response: web.StreamResponse
        if stat.st_size > SMALL_FILE:
            response = web.FileResponse(file, status=status)  # sendfile, ranges
        else:
            # Small files are read here: cheaper than FileResponse's thread-pool round trips.
            etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
            if status == 200 and request.headers.get("If-None-Match") == etag:
                response = web.Response(status=304, headers={"ETag": etag})
            else:
                response = web.Response(status=status, body=file.read_bytes(), headers={"ETag": etag})
        content_type, _ = mimetypes.guess_type(file.name)
        if content_type:
            response.content_type = content_type
            if content_type.startswith("text/") or content_type in TEXT_TYPES:
                response.charset = "utf-8"
        return response


def raw_target(request: web.Request) -> str:
    """The request-target as the client sent it (aiohttp's ``path`` is decoded).

    The absolute form a client may send to a proxy (``GET http://host/path?q``) becomes its path
    and query; other forms (``*``, ``host:443``) stay as they are, and the router refuses them.
    """
    target = request.raw_path
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        target = rest[cut:]
        target = target if target.startswith("/") else "/" + target
    return target


def load_site(root: Path, api_rule: str = "") -> NetlifyConfig:
    """The project's Netlify configuration, or a ConfigError naming the first error's file:line.

    ``api_rule`` stands in for the rule of the block the build step writes (see ``load``). The
    edge serves only what ``inv check`` passes: a rule Netlify would read differently, or
    one that would fail at request time, stops it here instead of misbehaving later.
    """
    site = load(root, api_rule)
    errors = [problem for problem in check_config(site) if problem.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more; run `inv check`)" if len(errors) > 1 else " (run `inv check`)"
        raise ConfigError(f"{errors[0]}{more}")
    return site


def make_app(edge: Edge, limits: Limits | None = None) -> web.Application:
    """The edge as an aiohttp application; ``limits`` (cnd_toolkit.edge.limits) also bound its proxy."""
    app = web.Application(client_max_size=0)
    app[LIMITS] = limits or Limits()
    # Every request goes to the edge: the route takes any path ("." would stop at a newline from
    # %0A), and the middleware takes what no route can (OPTIONS *, CONNECT host:443).
    app.router.add_route("*", r"/{tail:[\s\S]*}", edge.handle)

    @web.middleware
    async def everything(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.resource is None:
            return await edge.handle(request)
        return await handler(request)

    app.middlewares.append(everything)

    async def close(_: web.Application) -> None:
        await edge.close()

    app.on_cleanup.append(close)
    return app


@dataclass
class RunningEdge:
    url: str
    port: int
    startup_seconds: float


@contextmanager
def serve_in_thread(
    site: NetlifyConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    on_log: LineSink | None = None,
    limits: Limits | None = None,
) -> Iterator[RunningEdge]:
    """Run the edge on its own event loop in a background thread (for ``inv dev`` and tests).

    Every wait and size is bounded by ``limits`` (see cnd_toolkit.edge.limits for each defence): aiohttp's
    handler options bound request heads and idle or slow clients, and the listening socket
    serves at most ``limits.max_connections`` connections at once (a 503 past that).
    """
    limits = limits or Limits()
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def start() -> web.AppRunner:
        runner = web.AppRunner(
            make_app(Edge(site, on_log), limits), shutdown_timeout=SHUTDOWN_GRACE, **limits.handler_options()
        )
        await runner.setup()
        assert runner.server is not None
        # Not a TCPSite: aiohttp has no connection cap, so the protocol factory counts them.
        listener = await loop.create_server(ConnectionLimit(runner.server, limits), host, port, reuse_address=True)
        state["listener"] = listener
        state["port"] = listener.sockets[0].getsockname()[1]
        return runner

    async def stop(runner: web.AppRunner) -> None:
        listener: asyncio.Server = state["listener"]  # type: ignore[assignment]
        listener.close()
        await runner.cleanup()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            state["runner"] = loop.run_until_complete(start())
        except BaseException as exc:  # reported to the caller below
            state["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="edge", daemon=True)
    thread.start()
    ready.wait(30)
    error = state.get("error")
    if isinstance(error, OverflowError):  # socket.bind's answer to a port past 65535
        raise OpsError(f"--port {port} is not a port; use 1-65535 (or 0 for a free one)") from None
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
        raise OpsError(f"the edge cannot listen on {host}:{port} ({reason}); pick another port with --port") from None
    if isinstance(error, BaseException):
        raise error
    bound = int(state["port"])  # type: ignore[call-overload]
    try:
        yield RunningEdge(f"http://{host}:{bound}", bound, time.perf_counter() - started)
    finally:
        runner: web.AppRunner = state["runner"]  # type: ignore[assignment]
        asyncio.run_coroutine_threadsafe(stop(runner), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
