"""The local edge server (aiohttp): static files, redirects, rewrites, proxies and headers."""

from __future__ import annotations

import asyncio
import mimetypes
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ops.edge.proxy import PROXY_TIMEOUT, forward
from ops.edge.rules import REDIRECT_STATUSES, HeaderRule, Site
from ops.errors import OpsError

LineSink = Callable[[str], None]
SMALL_FILE = 256 * 1024
TEXT_TYPES = {"application/javascript", "application/json", "image/svg+xml"}
# Netlify serves JavaScript as application/javascript; Python 3.12+ would say text/javascript.
mimetypes.add_type("application/javascript", ".js")


@dataclass(frozen=True)
class Outcome:
    kind: str  # static | rewrite | redirect | proxy | not-found
    detail: str = ""


class Edge:
    """Routes one request the way Netlify's CDN would for this site."""

    def __init__(self, site: Site, on_log: LineSink | None = None) -> None:
        self.site = site
        self.publish = site.publish.resolve()
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

    def resolve(self, path: str) -> Path | None:
        """The published file for a URL path (index files, pretty URLs), never outside publish/."""
        parts = [part for part in path.split("/") if part]
        if any(part.startswith(".") or "\\" in part or "\x00" in part for part in parts):
            return None  # dotfiles are not deployed (Netlify skips them); ".." cannot leave publish/
        base = self.publish.joinpath(*parts)
        if not parts or path.endswith("/"):
            candidates = [base / "index.html"]
        else:
            candidates = [base, base.with_name(base.name + ".html"), base / "index.html"]
        for candidate in candidates:
            if candidate.is_file():
                real = candidate.resolve()
                if real == self.publish or self.publish in real.parents:
                    return real
        return None

    def header_values(self, path: str) -> list[tuple[str, str]]:
        values: list[tuple[str, str]] = []
        rules: list[HeaderRule] = [rule for rule in self.site.headers if rule.matches(path)]
        for rule in rules:
            for name, items in rule.values.items():
                values.append((name, ", ".join(items)))
        return values

    def static_response(self, request: web.Request, file: Path | None, status: int = 200) -> web.StreamResponse:
        if file is None:
            status = 404
            file = self.resolve("/404.html")
            if file is None:
                return self._with_headers(web.Response(status=404, text="Not Found\n"), request.path)
        stat = file.stat()
        if stat.st_size > SMALL_FILE:
            response: web.StreamResponse = web.FileResponse(file, status=status)  # sendfile, ranges
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
        return self._with_headers(response, request.path)

    def _with_headers(self, response: web.StreamResponse, path: str) -> web.StreamResponse:
        for name, value in self.header_values(path):
            response.headers[name] = value
        return response

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        response, outcome = await self.route(request)
        if self.on_log:
            elapsed = (time.perf_counter() - started) * 1000
            detail = f" {outcome.detail}" if outcome.detail else ""
            self.on_log(f"{request.method} {request.path_qs} {response.status} {outcome.kind}{detail} {elapsed:.1f}ms")
        return response

    async def route(self, request: web.Request) -> tuple[web.StreamResponse, Outcome]:
        path = request.path
        query = {key: request.query[key] for key in request.query}
        unresolved = object()
        file: object = unresolved  # a Path or None, looked up only when a rule needs it
        for rule in self.site.redirects:
            if rule.unsupported:
                continue
            values = rule.match(path, query)
            if values is None:
                continue
            if not rule.force:
                if file is unresolved:
                    file = self.resolve(path)
                if file is not None:
                    continue  # shadowing: an existing file wins over a rule without force (!)
            target = rule.target(values, request.query_string)
            if rule.status in REDIRECT_STATUSES:
                response = web.Response(status=rule.status, headers={"Location": target})
                return response, Outcome("redirect", f"-> {target} ({rule.origin})")
            if rule.is_proxy:
                return await self.proxy(request, target, rule.headers), Outcome("proxy", f"-> {target}")
            target_path = urlsplit(target).path
            rewritten = self.resolve(target_path)
            outcome = Outcome("rewrite", f"-> {target_path} ({rule.origin})")
            return self.static_response(request, rewritten, status=rule.status), outcome
        if file is unresolved:
            file = self.resolve(path)
        if not isinstance(file, Path):
            return self.static_response(request, None), Outcome("not-found")
        return self.static_response(request, file), Outcome("static")

    async def proxy(self, request: web.Request, target: str, extra: dict[str, str]) -> web.StreamResponse:
        return await forward(await self.session(), request, target, extra)


def make_app(edge: Edge) -> web.Application:
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", edge.handle)

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
    site: Site, host: str = "127.0.0.1", port: int = 0, on_log: LineSink | None = None
) -> Iterator[RunningEdge]:
    """Run the edge on its own event loop in a background thread (for ``inv dev`` and tests)."""
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def start() -> web.AppRunner:
        runner = web.AppRunner(make_app(Edge(site, on_log)), access_log=None)
        await runner.setup()
        tcp = web.TCPSite(runner, host, port, reuse_address=True)
        await tcp.start()
        state["port"] = runner.addresses[0][1]
        return runner

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
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
