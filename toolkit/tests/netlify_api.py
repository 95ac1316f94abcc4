"""A local Netlify for tests: the deploy API, strict where Netlify is strict, and its CDN.

Not a mock of the client: HTTP servers (aiohttp, on 127.0.0.1) that the real client talks to
through ``NETLIFY_API_URL``, implementing the operations of Netlify's OpenAPI spec that a
file-digest deploy uses, and refusing what the real API refuses:

- every call needs ``Authorization: Bearer <the token>`` (401 otherwise, 404 for a site the
  token cannot see);
- ``createSiteDeploy`` takes ``{"files": {path: sha1}}``: paths without a leading slash, ``#``,
  ``?``, empty or dot segments, SHA1s as 40 hex digits (422 otherwise); it answers ``required``
  with the SHA1s the site does not hold yet (deduplicated across deploys, as Netlify does);
  ``async`` deploys answer ``preparing`` first and list ``required`` on the next read;
- ``uploadDeployFile`` takes ``application/octet-stream`` bytes for a path of that deploy whose
  SHA1 matches the one declared (422 otherwise), only while the deploy is uploading;
- deploys move new -> uploading -> processing -> ready (or ``error`` with ``error_message``; an
  uploaded root ``netlify.toml`` that is not TOML fails the deploy);
- ``restoreSiteDeploy`` publishes a ready deploy (422 for one that is not ready);
- a deploy with a ``branch`` is a branch deploy (context ``branch-deploy``), never published by
  itself; the site's newest ready deploy of each branch is what a split test sends traffic to;
- split tests (``traffic_splits``): ``{"branch_tests": {branch: percentage}}`` with at least two
  branches, whole percentages 0..100 adding up to 100, each branch with a ready deploy (the
  production branch: a published one), else 422; one split test per site (a second create is
  422: update the one there is); ``publish``/``unpublish`` answer 204 and turn it on and off.

The CDN: each ready deploy is served at its ``deploy_url`` (a port of its own), and
:meth:`LocalNetlify.site_url` serves the site's published deploy, from exactly the files uploaded
for that deploy and nothing else. This module imports nothing of the project (no ``ops``) and
reads none of its files: a fake built from the code under test would agree with its bugs, and a
deploy that lacks what the project's own edge shows must look broken here, as it would on
Netlify. What it applies, as Netlify documents it (:class:`Served`):

- redirect rules from the deploy's ``_redirects`` (``from to [status][!]``, ``#`` comments), then
  from its root ``netlify.toml`` (``[[redirects]]`` ``from``/``to``/``status``/``force``); the first
  rule that matches wins; a rule without ``!`` (``force``) gives way to a file at the path;
  ``*`` at the end of ``from`` binds ``:splat``, a ``:name`` segment binds ``:name``; the request's
  query string is passed on. Status 200 to a path rewrites (that file, status 200), to an http(s)
  URL proxies (method, headers and body forwarded, with X-Forwarded-For; the origin's status,
  headers and body back); 301/302/303/307/308 redirect with ``Location``; 404 (and 410, 451)
  serve the target with that status;
- static files: ``/`` and ``/dir/`` are ``index.html``, ``/about`` is ``about.html`` (or
  ``about/index.html``); a missing file is the deploy's ``404.html`` with 404, else a plain 404;
  ``Content-Type`` by file name, text types with ``; charset=utf-8``; GET and HEAD only (405);
- custom headers from ``_headers`` (a path line, then indented ``Name: value`` lines; a name
  repeated in one block is joined with ", ") and ``[[headers]]`` (``for``, ``values``), matched
  by the requested path (``*`` any characters, ``:name`` one segment), ``_headers`` first and a
  later value of a name replacing an earlier one; on static answers (rewrites and 404 pages
  too), never on proxied answers or redirects (Netlify: custom headers apply only to files it
  serves from its own store);
- every uploaded file is served: ``/_redirects``, ``/_headers`` and ``/netlify.toml`` too.

Rules that use what is not implemented here (query or condition matching, forward rules without
a ``to``, signed proxies, a ``from`` with a domain, headers sent to a proxy) are left out, as the
deploys under test use none of them; :attr:`Served.skipped` lists them.

Faults on demand: :meth:`LocalNetlify.fail` makes the next N matching API requests answer a status
(429 with ``Retry-After``, 500, ...), :meth:`LocalNetlify.fail_next_deploy` makes the next deploy
end in ``error``. Every API call is recorded in :attr:`LocalNetlify.calls` (requests to the CDN
are not).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import mimetypes
import re
import socket
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

SHA1 = re.compile(r"^[0-9a-f]{40}$")
BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")

# -- the CDN: what a deploy serves, from its own files --------------------------------------------

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that belong to one connection, never passed through a proxy (RFC 9110 7.6.1), and the
# ones each side sets for itself: the body's length, Host (the origin's), Expect (answered here).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer"}
    | {"transfer-encoding", "upgrade", "host", "content-length", "expect"}
)
PROXY_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=26, sock_read=26)  # Netlify's 26 s
TEXT_TYPES = frozenset({"application/javascript", "application/json"})
# A table of its own, not the process's: Netlify's names (JavaScript is application/javascript).
TYPES = mimetypes.MimeTypes()
TYPES.add_type("application/javascript", ".js")


@dataclass(frozen=True)
class Rule:
    """One redirect rule: ``source`` and ``to`` as written, ``status``, ``force``; ``origin``
    says where it came from (``_redirects:3``, ``netlify.toml [[redirects]] #2``)."""

    source: str
    to: str
    status: int = 301
    force: bool = False
    origin: str = ""


@dataclass(frozen=True)
class HeaderRule:
    path: str  # the ``for`` pattern
    values: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Answer:
    """What the CDN does with one request: serve ``file`` (static, a rewrite, a 404 page) with
    ``status`` and ``headers``, redirect to ``location``, or proxy to it (``kind``)."""

    kind: str  # static | redirect | proxy | not-found | method-not-allowed
    status: int
    file: str = ""  # the path of the deploy's file to send
    location: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    rule: Rule | None = None


def parse_redirects(text: str) -> tuple[list[Rule], list[str]]:
    """``_redirects``: one ``from to [status][!]`` rule a line; ``#`` starts a comment. Returns the
    rules and the lines this fake does not implement (query or condition tokens, forward rules)."""
    rules: list[Rule] = []
    skipped: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        tokens: list[str] = []
        for token in line.split():
            if token.startswith("#"):
                break
            tokens.append(token)
        if not tokens:
            continue
        status = re.fullmatch(r"([0-9]{3})(!?)", tokens[2]) if len(tokens) == 3 else None
        if (
            len(tokens) not in (2, 3)
            or not tokens[1].startswith(("/", "http://", "https://"))
            or (len(tokens) == 3 and status is None)
        ):
            skipped.append(f"_redirects:{number}: {line.strip()}")
            continue
        code, bang = (int(status.group(1)), status.group(2) == "!") if status else (301, False)
        rules.append(Rule(tokens[0], tokens[1], code, bang, f"_redirects:{number}"))
    return rules, skipped


def parse_headers(text: str) -> list[HeaderRule]:
    """``_headers``: a path line, then ``Name: value`` lines under it; ``#`` lines are comments."""
    blocks: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("/"):
            blocks.append((stripped, []))
            continue
        name, sep, value = stripped.partition(":")
        if sep and blocks:
            blocks[-1][1].append((name.strip(), value.strip()))
    return [HeaderRule(path, _joined(values)) for path, values in blocks if values]


def parse_config(text: str) -> tuple[list[Rule], list[HeaderRule], list[str]]:
    """A deploy's root ``netlify.toml``: its ``[[redirects]]`` and ``[[headers]]`` (tomllib raises
    on a file that is not TOML)."""
    data = tomllib.loads(text)
    rules: list[Rule] = []
    skipped: list[str] = []
    for number, entry in enumerate(data.get("redirects", []), start=1):
        where = f"netlify.toml [[redirects]] #{number}"
        # Empty tables change nothing (netlify-cli's resolved config writes every rule with them).
        extra = {key for key, value in entry.items() if key not in ("from", "to", "status", "force") and value}
        if extra or "to" not in entry:
            skipped.append(f"{where}: {', '.join(sorted(extra)) or 'no to'}")
            continue
        status = int(entry.get("status", 301))
        rules.append(Rule(entry["from"], entry["to"], status, bool(entry.get("force", False)), where))
    headers: list[HeaderRule] = []
    for entry in data.get("headers", []):
        values = [
            (name, ", ".join(value) if isinstance(value, list) else str(value))
            for name, value in entry.get("values", {}).items()
        ]
        if values:
            headers.append(HeaderRule(entry["for"], _joined(values)))
    return rules, headers, skipped


def _joined(values: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """A name given twice in one rule is one header with both values (Netlify's multi-value headers)."""
    merged: dict[str, tuple[str, str]] = {}
    for name, value in values:
        key = name.lower()
        merged[key] = (merged[key][0], f"{merged[key][1]}, {value}") if key in merged else (name, value)
    return tuple(merged.values())


def resolve(raw_path: str) -> str:
    """``raw_path`` with ``.`` and ``..`` segments (percent-encoded ones too) resolved, never above ``/``."""
    out: list[str] = []
    segments = raw_path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if unquote(segment) == ".":
            if last:
                out.append("")
        elif unquote(segment) == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def _segments(path: str) -> list[str]:
    """A path's segments, without the optional trailing slash: "/" is [], "/a/b/" is ["a", "b"]."""
    parts = path.split("/")[1:]
    return parts[:-1] if parts and parts[-1] == "" else parts


def match(source: str, raw_path: str) -> dict[str, str] | None:
    """The values a redirect ``from`` binds for ``raw_path`` (``splat`` and ``:name``, as the
    client encoded them), or None. Literal segments compare decoded; a trailing slash is optional."""
    pattern, path = _segments(source.split("?")[0]), _segments(raw_path)
    values: dict[str, str] = {}
    for index, part in enumerate(pattern):
        if part == "*" and index == len(pattern) - 1:
            values["splat"] = "/".join(path[index:])
            return values
        if index >= len(path):
            return None
        if part.startswith(":") and len(part) > 1:
            if not path[index]:
                return None
            values[part[1:]] = path[index]
        elif unquote(part) != unquote(path[index]):
            return None
    return values if len(path) == len(pattern) else None


def header_matches(pattern: str, path: str) -> bool:
    """Whether a ``_headers`` / ``[[headers]]`` path applies to the (decoded) request path: ``*``
    stands for any characters, ``:name`` for one segment, and ``/dir/*`` covers ``/dir`` too."""
    regex = ""
    for piece in re.split(r"(\*|:[A-Za-z_][A-Za-z0-9_]*)", pattern):
        regex += ".*" if piece == "*" else "[^/]+" if piece.startswith(":") else re.escape(piece)
    if regex.endswith("/.*"):
        regex = regex[:-3] + "(?:/.*)?"
    return re.fullmatch(regex + "/?", path) is not None


def fill(to: str, values: Mapping[str, str], raw_query: str) -> str:
    """``to`` with ``:splat`` and ``:name`` filled, and the request's query string passed on
    when ``to`` has none of its own."""
    for name in sorted(values, key=len, reverse=True):
        to = to.replace(f":{name}", values[name])
    return f"{to}?{raw_query}" if raw_query and "?" not in to else to


def content_type(name: str) -> str:
    kind = TYPES.guess_type(name, strict=False)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") or kind in TEXT_TYPES else kind


@dataclass
class Served:
    """What one deploy serves: its files (path -> bytes) and the rules in them."""

    files: dict[str, bytes]
    redirects: list[Rule] = field(default_factory=list)
    headers: list[HeaderRule] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, files: dict[str, bytes]) -> Served:
        """Raises ValueError for a root netlify.toml Netlify could not read (not UTF-8, not TOML)."""
        served = cls(dict(files))
        if "_redirects" in files:
            rules, skipped = parse_redirects(files["_redirects"].decode("utf-8", errors="replace"))
            served.redirects += rules
            served.skipped += skipped
        if "_headers" in files:
            served.headers += parse_headers(files["_headers"].decode("utf-8", errors="replace"))
        if "netlify.toml" in files:
            try:
                rules, headers, skipped = parse_config(files["netlify.toml"].decode("utf-8"))
            except (UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError, KeyError, ValueError) as exc:
                raise ValueError(f"netlify.toml: {exc}") from None
            served.redirects += rules  # after _redirects: Netlify's order
            served.headers += headers
            served.skipped += skipped
        return served

    def file_for(self, raw_path: str) -> str:
        """The file a path serves, with Netlify's index files and pretty URLs; "" for none."""
        names = [unquote(part) for part in raw_path.split("/")[1:]]
        key = "/".join(name for name in names if name)
        if not key:
            candidates = ["index.html"]
        elif raw_path.endswith("/"):
            candidates = [f"{key}/index.html", f"{key}.html"]
        else:
            candidates = [key, f"{key}.html", f"{key}/index.html"]
        return next((name for name in candidates if name in self.files), "")

    def custom_headers(self, raw_path: str) -> tuple[tuple[str, str], ...]:
        path = unquote(raw_path)
        chosen: dict[str, tuple[str, str]] = {}
        for rule in self.headers:
            if header_matches(rule.path, path):
                for name, value in rule.values:
                    chosen[name.lower()] = (name, value)
        return tuple(chosen.values())

    def answer(self, method: str, raw_target: str) -> Answer:
        """What Netlify's CDN does with ``method raw_target`` on this deploy."""
        raw_path, _, raw_query = raw_target.partition("#")[0].partition("?")
        path = resolve(raw_path or "/")
        found = self.file_for(path)
        for rule in self.redirects:
            values = match(rule.source, path)
            if values is None or (found and not rule.force):
                continue  # no match, or shadowed by a file at the path
            target = fill(rule.to, values, raw_query)
            if rule.status in REDIRECT_STATUSES:
                return Answer("redirect", rule.status, location=target, rule=rule)
            if target.startswith(("http://", "https://")):
                if rule.status == 200:
                    return Answer("proxy", 200, location=target, rule=rule)
                continue
            rewritten = self.file_for(resolve(target.partition("?")[0]))
            return self.static(method, path, rewritten, rule.status, rule)
        return self.static(method, path, found, 200, None)

    def static(self, method: str, path: str, file: str, status: int, rule: Rule | None) -> Answer:
        headers = self.custom_headers(path)
        if method not in ("GET", "HEAD"):
            return Answer("method-not-allowed", 405, headers=headers, rule=rule)
        if not file:
            return Answer("not-found", 404, "404.html" if "404.html" in self.files else "", headers=headers, rule=rule)
        return Answer("static", status, file, headers=headers, rule=rule)


@dataclass
class Fault:
    status: int
    times: int
    method: str = ""
    path_prefix: str = ""
    retry_after: str | None = None


@dataclass
class Call:
    method: str
    path: str
    status: int
    authorization: str


@dataclass
class SiteDeploy:
    id: str
    site_id: str
    files: dict[str, str]
    draft: bool
    title: str
    state: str = "new"
    required: list[str] = field(default_factory=list)
    error_message: str = ""
    published_at: str = ""
    created_at: str = ""
    uploaded: set[str] = field(default_factory=set)
    reads: int = 0
    branch: str = ""

    url: str = ""  # where the CDN serves it, once ready
    served: Served | None = None  # its files and rules, once ready

    def as_json(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "site_id": self.site_id,
            "state": self.state,
            "required": list(self.required) if self.state in {"uploading", "prepared"} else [],
            "draft": self.draft,
            "title": self.title,
            "error_message": self.error_message or None,
            "deploy_url": self.url,
            "deploy_ssl_url": self.url,
            "published_at": self.published_at or None,
            "created_at": self.created_at,
            "skew_protection_token": None,
            "branch": self.branch or None,
            "context": "branch-deploy" if self.branch else "deploy-preview" if self.draft else "production",
        }


@dataclass
class SplitTest:
    id: str
    site_id: str
    weights: dict[str, int]
    active: bool = False
    created_at: str = ""
    updated_at: str = ""
    unpublished_at: str = ""
    history: list[tuple[str, dict[str, int]]] = field(default_factory=list)  # (event, weights), in order

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "site_id": self.site_id,
            "name": "canary",
            "path": "/",
            "branches": [{"branch": b, "percentage": p} for b, p in self.weights.items()],
            "active": self.active,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "unpublished_at": self.unpublished_at or None,
        }


@dataclass
class Site:
    id: str
    name: str
    blobs: dict[str, bytes] = field(default_factory=dict)  # sha1 -> bytes: what the site already holds
    published_deploy: str = ""
    production_branch: str = "main"
    branches: dict[str, str] = field(default_factory=dict)  # branch -> its newest ready deploy
    split_tests: dict[str, SplitTest] = field(default_factory=dict)
    cdn_port: int = 0  # where the published deploy is served


class LocalNetlify:
    """The server; :meth:`start` it (or use it as a context manager) and point ``api_url`` at it."""

    def __init__(self, token: str, sites: dict[str, str] | None = None) -> None:
        self.token = token
        self.sites = {sid: Site(sid, name) for sid, name in (sites or {"site-1": "my-site"}).items()}
        self.deploys: dict[str, SiteDeploy] = {}
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self._fail_deploy = ""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._cdn: web.AppRunner | None = None
        self._ports: dict[int, tuple[str, str]] = {}  # CDN port -> ("deploy", id) or ("site", id)
        self._listening: list[asyncio.Task[None]] = []
        self._proxy: aiohttp.ClientSession | None = None
        self.port = 0

    # -- control ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def fail(
        self, status: int, times: int = 1, *, method: str = "", path_prefix: str = "", retry_after: str | None = None
    ) -> None:
        """The next ``times`` requests matching ``method`` and ``path_prefix`` (after /api/v1) get ``status``."""
        with self._lock:
            self.faults.append(Fault(status, times, method, path_prefix, retry_after))

    def fail_next_deploy(self, message: str) -> None:
        with self._lock:
            self._fail_deploy = message

    def uploads(self) -> list[str]:
        """Paths uploaded, in order, across all deploys."""
        return [unquote(c.path.split("/files/", 1)[1]) for c in self.calls if "/files/" in c.path and c.status == 200]

    def published(self, site_id: str = "site-1") -> SiteDeploy | None:
        deploy_id = self.sites[site_id].published_deploy
        return self.deploys.get(deploy_id) if deploy_id else None

    def site_body(self, deploy_id: str, path: str) -> bytes:
        """The bytes of a deploy's file ``path``, as uploaded (or already held by the site)."""
        deploy = self.deploys[deploy_id]
        return self.sites[deploy.site_id].blobs[deploy.files[path]]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalNetlify:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._route)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            cdn = web.Application(client_max_size=64 * 1024 * 1024)
            cdn.router.add_route("*", "/{tail:.*}", self._cdn_request)
            self._cdn = web.AppRunner(cdn, access_log=None)
            loop.run_until_complete(self._cdn.setup())
            for each in self.sites.values():  # the site's own URL, serving whichever deploy is published
                each.cdn_port = self._listen("site", each.id)
            ready.set()
            loop.run_forever()
            loop.run_until_complete(asyncio.gather(*self._listening, return_exceptions=True))
            if self._proxy is not None:
                loop.run_until_complete(self._proxy.close())
            loop.run_until_complete(self._cdn.cleanup())
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="local-netlify", daemon=True)
        self._thread.start()
        if not ready.wait(120):  # a deadline, not a bound: a busy machine starts it late
            raise RuntimeError("the local Netlify API did not start")
        return self

    def site_url(self, site_id: str = "site-1") -> str:
        """The site's URL, serving its published deploy, or ``""`` before the first publish."""
        site = self.sites[site_id]
        return f"http://127.0.0.1:{site.cdn_port}/" if site.published_deploy else ""

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(120)

    def __enter__(self) -> LocalNetlify:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP --------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        try:
            response = await self._answer(request, handler, authorization)
        except web.HTTPException as exc:
            response = exc
        with self._lock:
            self.calls.append(Call(request.method, request.raw_path, response.status, authorization))
        return response

    async def _answer(self, request: web.Request, handler: Any, authorization: str) -> web.StreamResponse:
        if not request.raw_path.startswith("/api/v1/"):
            return _error(404, "Not Found")
        if authorization != f"Bearer {self.token}":
            return _error(401, "Access Denied: Invalid Token")
        path = request.raw_path.split("?", 1)[0].removeprefix("/api/v1")
        await request.read()  # before the lock: nothing awaits while holding it
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and request.method.startswith(fault.method) and path.startswith(fault.path_prefix):
                    fault.times -= 1
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    return _error(fault.status, "injected fault", headers)
        response: web.StreamResponse = await handler(request)
        return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0].removeprefix("/api/v1")
        parts = raw.strip("/").split("/")
        method = request.method
        body = await request.read()  # read once, before the lock (the middleware has it cached)
        with self._lock:
            if parts == ["sites"] and method == "GET":  # listSites, as netlify-cli looks a site up by name
                name = request.query.get("name", "")
                found = [s for s in self.sites.values() if not name or s.name == name]
                return web.json_response([json.loads(self._site_json(site).text or "{}") for site in found])
            if parts == ["accounts"] and method == "GET":
                return web.json_response([{"id": "account-1", "slug": "local", "name": "Local"}])
            if parts[0] == "sites" and len(parts) >= 2:
                key = unquote(parts[1])  # an id, or (as netlify-cli asks first) a name
                site = self.sites.get(key) or next((s for s in self.sites.values() if s.name == key), None)
                if site is None:
                    return _error(404, "Not Found")
                if len(parts) == 2 and method == "GET":
                    return self._site_json(site)
                if len(parts) == 3 and parts[2] == "deploys":
                    if method == "POST":
                        return self._create(site, request.query, _json_body(request, body))
                    if method == "GET":
                        deploys = [d for d in self.deploys.values() if d.site_id == site.id]
                        return web.json_response([d.as_json(self._base(request)) for d in reversed(deploys)])
                if len(parts) >= 3 and parts[2] == "traffic_splits":
                    return self._split_test(site, parts[3:], method, _json_body(request, body))
                if len(parts) >= 4 and parts[2] == "deploys":
                    deploy = self.deploys.get(unquote(parts[3]))
                    if deploy is None or deploy.site_id != site.id:
                        return _error(404, "Not Found")
                    if len(parts) == 4 and method == "GET":
                        self._advance(deploy)
                        return web.json_response(deploy.as_json(self._base(request)))
                    if len(parts) == 4 and method == "PUT":  # updateSiteDeploy: the files of a created deploy
                        return self._update(site, deploy, _json_body(request, body))
                    if len(parts) == 5 and parts[4] == "restore" and method == "POST":
                        if deploy.state != "ready":
                            return _error(422, f"deploy is {deploy.state}, not ready")
                        site.published_deploy = deploy.id
                        deploy.published_at = _now()
                        return web.json_response(deploy.as_json(self._base(request)), status=201)
            if parts[0] == "deploys" and len(parts) == 3 and parts[2] == "cancel" and method == "POST":
                deploy = self.deploys.get(unquote(parts[1]))
                if deploy is None:
                    return _error(404, "Not Found")
                deploy.state, deploy.error_message = "error", "canceled"
                return web.json_response(deploy.as_json(f"http://127.0.0.1:{self.port}"), status=201)
            if parts[0] == "deploys" and len(parts) >= 4 and parts[2] == "files" and method == "PUT":
                deploy = self.deploys.get(unquote(parts[1]))
                if deploy is None:
                    return _error(404, "Not Found")
                return self._upload(deploy, unquote("/".join(parts[3:])), request, body)
        return _error(404, "Not Found")

    def _base(self, request: web.Request) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _site_json(self, site: Site) -> web.Response:
        published = self.deploys.get(site.published_deploy)
        return web.json_response(
            {
                "id": site.id,
                "name": site.name,
                "url": f"http://127.0.0.1:{site.cdn_port}/",
                "published_deploy": published.as_json(f"http://127.0.0.1:{self.port}") if published else None,
            }
        )

    def _create(self, site: Site, query: Any, body: Any) -> web.Response:
        if not isinstance(body, dict):
            return _error(422, "body must be a JSON object")
        files = body.get("files", {})  # netlify-cli creates first ({"draft": ...}), then PUTs the files
        if not isinstance(files, dict):
            return _error(422, "files must be an object of paths to SHA1 digests")
        for path, sha in files.items():
            problem = _bad_path(path)
            if problem:
                return _error(422, f"invalid file path {path!r}: {problem}")
            if not isinstance(sha, str) or not SHA1.match(sha):
                return _error(422, f"invalid SHA1 for {path!r}")
        for key in ("draft", "async"):
            if key in body and not isinstance(body[key], bool):
                return _error(422, f"{key} must be a boolean")
        branch = body.get("branch", "")
        if branch is not None and branch != "" and (not isinstance(branch, str) or not BRANCH.match(branch)):
            return _error(422, f"invalid branch {branch!r}")
        deploy = SiteDeploy(
            id=f"d{next(self._ids):04d}{hashlib.sha1(str(time.time()).encode()).hexdigest()[:8]}",
            site_id=site.id,
            files=dict(files),
            draft=bool(body.get("draft")),
            title=str(query.get("title", "")),
            created_at=_now(),
            branch=branch or "",
        )
        if self._fail_deploy:
            deploy.error_message, self._fail_deploy = self._fail_deploy, ""
        deploy.required = sorted({sha for sha in files.values() if sha not in site.blobs})
        self.deploys[deploy.id] = deploy
        if body.get("async"):
            deploy.state = "preparing"  # required is listed once Netlify has looked at the digests
        else:
            deploy.state = "uploading" if deploy.required else "processing"
        return web.json_response(deploy.as_json(f"http://127.0.0.1:{self.port}"))

    def _update(self, site: Site, deploy: SiteDeploy, body: Any) -> web.Response:
        if deploy.state not in {"new", "preparing", "uploading", "processing"} or deploy.uploaded:
            return _error(422, f"deploy {deploy.id} is {deploy.state}; its files are set")
        made = self._create(
            site, {"title": deploy.title}, {**(body or {}), "draft": deploy.draft, "branch": deploy.branch}
        )
        if made.status != 200:
            return made
        fresh = self.deploys.pop(json.loads(made.text or "{}")["id"])
        deploy.files, deploy.required, deploy.state = fresh.files, fresh.required, fresh.state
        deploy.error_message = deploy.error_message or fresh.error_message
        return web.json_response(deploy.as_json(f"http://127.0.0.1:{self.port}"))

    def _advance(self, deploy: SiteDeploy) -> None:
        deploy.reads += 1
        if deploy.state == "preparing":
            deploy.state = "uploading" if deploy.required else "processing"
        elif deploy.state == "processing":
            if not deploy.error_message:
                blobs = self.sites[deploy.site_id].blobs
                try:
                    deploy.served = Served.of({path: blobs[sha] for path, sha in deploy.files.items()})
                except ValueError as exc:  # a netlify.toml Netlify cannot read fails the deploy
                    deploy.error_message = f"Failed to parse configuration: {exc}"
            deploy.state = "error" if deploy.error_message else "ready"
            if deploy.state == "ready":
                deploy.url = f"http://127.0.0.1:{self._listen('deploy', deploy.id)}/"
                if deploy.branch:
                    self.sites[deploy.site_id].branches[deploy.branch] = deploy.id

    def _listen(self, kind: str, key: str) -> int:
        """A CDN port for a deploy or a site: bound and listening now (a client that connects at
        once waits in the backlog), served from the next turn of the loop."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port: int = sock.getsockname()[1]
        self._ports[port] = (kind, key)
        assert self._cdn is not None and self._loop is not None
        self._listening.append(self._loop.create_task(web.SockSite(self._cdn, sock).start()))
        return port

    async def _cdn_request(self, request: web.Request) -> web.StreamResponse:
        """A request to a deploy's URL or a site's: answered from that deploy's files alone."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        with self._lock:
            kind, key = self._ports.get(sockname[1] if sockname else 0, ("", ""))
            if kind == "site":
                key = self.sites[key].published_deploy
            deploy = self.deploys.get(key)
            served = deploy.served if deploy is not None else None
        if served is None:
            return web.Response(status=404, text="Not Found: no deploy is published here\n")
        answer = served.answer(request.method, request.raw_path)
        if answer.kind == "proxy":
            return await self._forward(request, answer.location)
        if answer.kind == "redirect":
            return web.Response(
                status=answer.status, text=f"Redirecting to {answer.location}\n", headers={"Location": answer.location}
            )
        if answer.kind == "method-not-allowed":
            kind, body, extra = "text/plain; charset=utf-8", b"Method Not Allowed\n", {"Allow": "GET, HEAD"}
        elif not answer.file:
            kind, body, extra = "text/plain; charset=utf-8", b"Not Found\n", {}
        else:
            kind, body, extra = content_type(answer.file), served.files[answer.file], {}
        headers = CIMultiDict({"Content-Type": kind, **extra})
        headers.update(answer.headers)  # custom headers last: a _headers Content-Type wins, as on Netlify
        return web.Response(status=answer.status, body=body, headers=headers)

    async def _forward(self, request: web.Request, url: str) -> web.StreamResponse:
        """Proxy ``request`` to ``url``: its method, headers and body; the origin's answer back."""
        if self._proxy is None:
            # No cookie jar and no decompression: bytes and headers pass through as they are.
            self._proxy = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, timeout=PROXY_TIMEOUT
            )
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        peer = request.remote or ""
        forwarded = ", ".join(headers.popall("X-Forwarded-For", []))
        headers["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer  # as Netlify's proxy adds it
        body = await request.read()
        try:
            async with self._proxy.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            ) as origin:
                payload = await origin.read()
                back = CIMultiDict((k, v) for k, v in origin.headers.items() if k.lower() not in HOP_BY_HOP)
                return web.Response(status=origin.status, body=payload, headers=back)
        except TimeoutError:
            return web.Response(status=504, text=f"Gateway Timeout: {url} did not answer\n")
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"Bad Gateway: {url}: {type(exc).__name__}\n")

    def _upload(self, deploy: SiteDeploy, path: str, request: web.Request, body: bytes) -> web.Response:
        if request.headers.get("Content-Type", "") != "application/octet-stream":
            return _error(422, "file uploads must be application/octet-stream")
        if path not in deploy.files:
            return _error(422, f"{path!r} is not a file of deploy {deploy.id}")
        if deploy.state != "uploading":
            return _error(422, f"deploy {deploy.id} is {deploy.state}, not uploading")
        sha = hashlib.sha1(body).hexdigest()
        if sha != deploy.files[path]:
            return _error(422, f"SHA1 mismatch for {path!r}: declared {deploy.files[path]}, got {sha}")
        self.sites[deploy.site_id].blobs[sha] = body
        deploy.uploaded.add(sha)
        if set(deploy.required) <= deploy.uploaded:
            deploy.state = "processing"
        return web.json_response({"id": sha, "path": "/" + path, "sha": sha, "size": len(body)})

    def _split_test(self, site: Site, rest: list[str], method: str, body: Any) -> web.Response:
        if not rest:
            if method == "GET":
                return web.json_response([t.as_json() for t in site.split_tests.values()])
            if method == "POST":
                if site.split_tests:
                    return _error(422, "this site has a split test already: update it")
                weights, problem = self._weights(site, body)
                if problem:
                    return _error(422, problem)
                test = SplitTest(f"st{next(self._ids):04d}", site.id, weights, created_at=_now(), updated_at=_now())
                test.history.append(("create", dict(weights)))
                site.split_tests[test.id] = test
                return web.json_response(test.as_json(), status=201)
            return _error(405, "Method Not Allowed")
        test = site.split_tests.get(unquote(rest[0]))
        if test is None:
            return _error(404, "Not Found")
        if len(rest) == 1 and method == "GET":
            return web.json_response(test.as_json())
        if len(rest) == 1 and method == "PUT":
            weights, problem = self._weights(site, body)
            if problem:
                return _error(422, problem)
            test.weights, test.updated_at = weights, _now()
            test.history.append(("update", dict(weights)))
            return web.json_response(test.as_json(), status=201)
        if len(rest) == 2 and rest[1] in {"publish", "unpublish"} and method == "POST":
            test.active = rest[1] == "publish"
            test.unpublished_at = "" if test.active else _now()
            test.history.append((rest[1], dict(test.weights)))
            return web.Response(status=204)
        return _error(404, "Not Found")

    def _weights(self, site: Site, body: Any) -> tuple[dict[str, int], str]:
        tests = body.get("branch_tests") if isinstance(body, dict) else None
        if not isinstance(tests, dict) or len(tests) < 2:
            return {}, "branch_tests must be an object of two or more branches and their percentages"
        weights: dict[str, int] = {}
        for branch, share in tests.items():
            if not isinstance(share, int) or isinstance(share, bool) or not 0 <= share <= 100:
                return {}, f"the percentage of branch {branch!r} must be a whole number in 0..100"
            if branch == site.production_branch:
                if not site.published_deploy:
                    return {}, f"the production branch {branch!r} has no published deploy"
            elif branch not in site.branches:
                return {}, f"branch {branch!r} has no ready branch deploy"
            weights[branch] = share
        if sum(weights.values()) != 100:
            return {}, f"the percentages add up to {sum(weights.values())}, not 100"
        return weights, ""


def _bad_path(path: object) -> str:
    if not isinstance(path, str) or not path:
        return "not a non-empty string"
    if path.startswith("/"):
        return "leading slash"
    if "#" in path or "?" in path:
        return "contains # or ?"
    if any(part in {"", ".", ".."} for part in path.split("/")):
        return "empty or dot segment"
    return ""


def _json_body(request: web.Request, body: bytes) -> Any:
    if request.content_type != "application/json":
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status, headers=headers)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
