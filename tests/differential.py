"""A generated, seeded differential test of the local edge against the real ``netlify dev``.

Both front the same fixture site (:func:`write_site`: pretty URLs, shadowing, splats,
placeholders, query rules, rewrites, redirects of every status, header rules, awkward file
names, a custom 404 page) and the same recording backend (:class:`Backend`, raw sockets, so it
sees the request-target exactly as the proxy sent it). A small grammar (:func:`generate`) makes
requests from the site's real path segments plus encodings, dot segments, odd slashes, queries
and methods; each request goes out as exact bytes (:func:`send`), and what came back is reduced
to an :class:`Observation`: status, Location, which file (or the backend) answered, the
``X-Rule-*`` headers and what the backend received.

Every difference between the two must be explained, field by field, by :data:`DELIBERATE`: a
field that differs needs an entry that names it and whose predicate holds for the request. Where
production Netlify and netlify dev disagree, the edge follows production and says so there.

    python -m tests.differential [--seed N] [--count N] [--examples N] [--all]
                                 [--workdir DIR] [--dump FILE.jsonl]

prints the full report without pytest (DIFF_SEED and DIFF_COUNT set the defaults, as in the
test; ``--all`` groups explained differences too; ``--workdir`` keeps the site and netlify
dev's log; ``--dump`` writes every observation). It needs netlify-cli (``npm install --prefix
.cache/netlify-tools netlify-cli``, or $NETLIFY_CLI).

One valid request class is left out: a target starting with "//" (netlify dev parses it as a
host and exits on one that is not a valid host name, e.g. ``GET //a%20b``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus, unquote, unquote_to_bytes

DEFAULT_SEED = 20240917
DEFAULT_COUNT = 400
# Only so that a hung server cannot hang a run: a busy machine's slow answer is still an answer.
REQUEST_TIMEOUT = 60.0
CONCURRENCY = 8  # the edge serves requests concurrently, as a browser sends them
# netlify dev, one at a time: under concurrent load it sometimes exits on its own bug
# (proxy.js: "TypeError: Invalid URL" in its proxyRes handler), which would stop every run.
NETLIFY_DEV_CONCURRENCY = 1


def seed_from_env() -> int:
    return int(os.environ.get("DIFF_SEED", DEFAULT_SEED))


def count_from_env() -> int:
    return int(os.environ.get("DIFF_COUNT", DEFAULT_COUNT))


# ---------------------------------------------------------------------------------------------
# The fixture site

# Every file's body carries a marker naming it, so an observation can say which file answered.
MARKER = re.compile(rb"\[\[file:(.+?)\]\]")
FILES = (
    "index.html",
    "404.html",
    "about.html",  # about/ exists but has no index.html: /about/ must serve this
    "about/team.html",
    "docs/guide.html",  # and docs/guide/index.html: which one /docs/guide and /docs/guide/ get
    "docs/guide/index.html",
    "docs/guide/setup.html",
    "docs/intro.html",
    "a/b/index.html",
    "page.html",  # shadows /page and /page/ (rules without force)
    "forced.html",  # shadowed by nothing: /forced has a forced rule
    "target.html",
    "app.html",  # the SPA shell of /app/*
    "app/real.html",  # a real file under the SPA rule
    "private/secret.html",  # a real file under the 404 rule
    "a b.html",
    "café.html",
    "100%.html",
    "a+b.html",
    "assets/site.css",
)

REDIRECTS = """\
# the backend, as the generated project's API rule
/api/*                  http://127.0.0.1:{port}/api/:splat   200!
# shadowing: page.html exists; forced.html exists too but its rule is forced
/page                   /target.html                  301
/page/                  /target.html                  302
/forced                 /target.html                  302!
# splats into every redirect status
/blog/*                 /posts/:splat                 301
/old/*                  /new/:splat                   302
/see/*                  /docs/:splat                  303
/tmp/*                  /news/:splat                  307
/perm/*                 /a/b/:splat                   308
# placeholders (and a placeholder with a splat)
/news/:year/:slug       /archive/:year/:slug          301
/n/:year/:slug/*        /archive/:year/:slug/:splat   302
# query rules: the first that matches wins
/search  q=:term  page=:page   /find/:term/:page     302
/search  q=:term               /find/:term           302
/lang    lang=en               /english              302
/lang    lang=:code            /intl/:code           301
# a 404 rule, a SPA rewrite, a rewrite to a file
/private/*              /404.html                     404
/app/*                  /app.html                     200
/guide                  /docs/guide.html              200
"""

HEADERS = """\
/*
  X-Rule-All: all
  X-Rule-Shared: root
/docs/*
  X-Rule-Docs: docs
  X-Rule-Shared: docs
/docs/:section/*
  X-Rule-Section: section
/docs/guide
  X-Rule-Exact: guide
/about
  X-Rule-About: about
/app/*
  X-Rule-App: app
/api/*
  X-Rule-Api: api
/café.html
  X-Rule-Cafe: cafe
/private/*
  X-Rule-Private: private
"""

NETLIFY_TOML = """\
[build]
  publish = "public"

[[redirects]]
  from = "/toml-old/*"
  to = "/docs/:splat"
  status = 301

[[redirects]]
  from = "/page"
  to = "/never-used"
  status = 302

[[headers]]
  for = "/a/*"
  [headers.values]
    X-Rule-Toml = "toml"

[[headers]]
  for = "/*.css"
  [headers.values]
    X-Rule-Css = "css"
"""


def write_site(root: Path, backend_port: int) -> Path:
    """The fixture site at ``root`` (netlify.toml, public/), proxying /api/* to the backend."""
    public = root / "public"
    for name in FILES:
        path = public / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<!doctype html><title>{name}</title><p>[[file:{name}]]</p>\n", encoding="utf-8")
    (public / "about").mkdir(exist_ok=True)
    (public / "_redirects").write_text(REDIRECTS.format(port=backend_port), encoding="utf-8")
    (public / "_headers").write_text(HEADERS, encoding="utf-8")
    (root / "netlify.toml").write_text(NETLIFY_TOML, encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------
# Requests, and the grammar that makes them

# RFC 9112 origin-form: pchar in the path, pchar / "/" / "?" in the query. Raw non-ASCII (sent
# as UTF-8) is not valid URI syntax but real clients send it; it is the one class allowed.
_PCHAR = r"A-Za-z0-9\-._~!$&'()*+,;=:@"
_ESCAPE = r"%[0-9A-Fa-f]{2}"
TARGET = re.compile(rf"/(?:[{_PCHAR}/]|{_ESCAPE}|[^\x00-\x7f])*(?:\?(?:[{_PCHAR}/?]|{_ESCAPE}|[^\x00-\x7f])*)?")
METHODS_WITH_BODY = ("POST", "PUT", "DELETE")


@dataclass(frozen=True)
class Request:
    index: int
    method: str
    target: str  # the raw request-target (non-ASCII characters go out as UTF-8)
    body: bytes = b""

    @property
    def id(self) -> str:
        return f"r{self.index:04d}"

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str | None:
        _, sep, query = self.target.partition("?")
        return query if sep else None

    def describe(self) -> str:
        body = f"  body={self.body!r}" if self.body else ""
        return f"#{self.index} {self.method} {self.target}{body}"


# The site's own paths: each rule and file is reachable from at least one of them.
BASES = (
    "/",
    "/index.html",
    "/about",
    "/about/",
    "/about.html",
    "/about/team",
    "/about/team.html",
    "/docs/guide",
    "/docs/guide/",
    "/docs/guide.html",
    "/docs/guide/index.html",
    "/docs/guide/setup",
    "/docs/intro",
    "/docs/",
    "/a/b",
    "/a/b/",
    "/a/b/index.html",
    "/a",
    "/page",
    "/page/",
    "/page.html",
    "/forced",
    "/forced.html",
    "/target.html",
    "/guide",
    "/blog/one",
    "/blog/2024/post",
    "/old/x/y",
    "/see/guide",
    "/tmp/2024/hello",
    "/perm/z",
    "/toml-old/guide",
    "/news/2024/hello-world",
    "/news/2024/hello-world/more",
    "/news/2024",
    "/n/2024/slug/rest/of/it",
    "/search",
    "/search",
    "/search/",
    "/lang",
    "/lang",
    "/private/secret.html",
    "/private/nothing",
    "/private",
    "/app",
    "/app/",
    "/app/dashboard/settings",
    "/app/real.html",
    "/app/real",
    "/api/items",
    "/api/items/42",
    "/api/items/",
    "/api/",
    "/api",
    "/a%20b.html",
    "/a%20b",
    "/a+b.html",
    "/a%2Bb",
    "/caf%C3%A9.html",
    "/café.html",
    "/café",
    "/100%25.html",
    "/100%25",
    "/assets/site.css",
    "/missing",
    "/missing/deep/path.html",
    "/404.html",
)
WORDS = ("docs", "guide", "a", "b", "about", "team", "page", "app", "api", "items", "x", "2024", "index.html")
SPECIALS = (
    "%20",
    "%2F",
    "%2f",
    "%3F",
    "%23",
    "%25",
    "+",
    "é",
    "%C3%A9",
    "%c3%a9",
    "%2e",
    "!",
    "'",
    "(",
    ")",
    "*",
    ",",
    ";",
    "=",
    ":",
    "@",
    "~",
    "$",
    "&",
    "%41",
    "%7E",
)
DOTS = (".", "..", "..", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%2e.", "...")
QUERY_KEYS = ("q", "q", "q", "page", "lang", "lang", "x", "%71", "l%61ng", "", "a+b", "k%20y", "é", "Q")
QUERY_VALUES = (
    "cats",
    "cats%20dogs",
    "cats+dogs",
    "a%2Fb",
    "a/b",
    "en",
    "en",
    "fr",
    "EN",
    "",
    "%3F",
    "?",
    "%26",
    "%23",
    "é",
    "%C3%A9",
    "1",
    "2",
    "x%3Dy",
    "a=b",
    "%25",
    "%2e%2e",
)
METHODS = (("GET", 50), ("HEAD", 10), ("POST", 14), ("PUT", 9), ("DELETE", 9), ("OPTIONS", 8))
BODIES = ("x", "hello", "héllo wörld", "a=b&c=d", '{"k": [1, 2]}', "line1\nline2\r\n")

Segments = list[str]  # "/a/b/" is ["a", "b", ""], "/" is [""]


def _inside_escapes(segment: str) -> set[int]:
    """Positions inside a %XX escape (after its "%"), where nothing may be inserted or replaced."""
    return {m.start() + k for m in re.finditer(_ESCAPE, segment) for k in (1, 2)}


def _boundaries(segment: str) -> list[int]:
    inside = _inside_escapes(segment)
    return [i for i in range(len(segment) + 1) if i not in inside]


def _special(rng: random.Random, segments: Segments) -> None:
    """A special character, encoded or not, inside a segment (or as a segment of its own)."""
    index = rng.randrange(len(segments))
    segment = segments[index]
    at = rng.choice(_boundaries(segment))
    segments[index] = segment[:at] + rng.choice(SPECIALS) + segment[at:]


def _dot(rng: random.Random, segments: Segments) -> None:
    """A dot segment somewhere; half the time after a real segment it cancels."""
    index = rng.randrange(len(segments) + 1)
    inserted = [rng.choice(DOTS)]
    if rng.random() < 0.5:
        inserted.insert(0, rng.choice(WORDS))
    segments[index:index] = inserted


def _encode(rng: random.Random, segments: Segments) -> None:
    """One plain character of a segment percent-encoded (upper or lower case hex)."""
    places = [
        (i, j)
        for i, s in enumerate(segments)
        for j, c in enumerate(s)
        if c.isascii() and c.isalnum() and j not in _inside_escapes(s)
    ]
    if not places:
        return
    i, j = rng.choice(places)
    escape = f"%{ord(segments[i][j]):02X}"
    segments[i] = segments[i][:j] + (escape.lower() if rng.random() < 0.3 else escape) + segments[i][j + 1 :]


def _case(rng: random.Random, segments: Segments) -> None:
    """A segment in another case (escapes keep their hex digits)."""
    places = [i for i, s in enumerate(segments) if any(c.isalpha() for c in s)]
    if not places:
        return
    i = rng.choice(places)
    change = rng.choice((str.upper, str.capitalize, str.swapcase))
    segments[i] = re.sub(r"(%[0-9A-Fa-f]{2})|([^%]+)", lambda m: m.group(1) or change(m.group(2)), segments[i])


def _double_slash(rng: random.Random, segments: Segments) -> None:
    """An empty segment, never first: netlify dev parses a leading "//x" as a host and exits
    (TypeError: Invalid URL in rules-proxy.js) on one that is not a valid host name."""
    if len(segments) > 1:
        segments.insert(rng.randrange(1, len(segments)), "")


def _trailing_slash(rng: random.Random, segments: Segments) -> None:
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()
    elif segments[-1] != "":
        segments.append("")


def _append(rng: random.Random, segments: Segments) -> None:
    at = len(segments) - 1 if segments[-1] == "" else len(segments)
    segments.insert(at, rng.choice(WORDS))


MUTATIONS = (_special, _special, _special, _dot, _dot, _encode, _case, _double_slash, _trailing_slash, _append)


def _query(rng: random.Random, path: str) -> str | None:
    likely = path.lower().lstrip("/").startswith(("search", "lang"))
    if rng.random() >= (0.85 if likely else 0.35):
        return None
    if rng.random() < 0.05:
        return ""  # "/search?"
    parts: list[str] = []
    keys: list[str] = []
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
        key = rng.choice(keys) if keys and rng.random() < 0.3 else rng.choice(QUERY_KEYS)
        keys.append(key)
        value = rng.choice(QUERY_VALUES)
        form = rng.random()
        if form < 0.07:
            parts.append(key)  # no "="
        elif form < 0.12:
            parts.append(f"{key}=")
        else:
            parts.append(f"{key}={value}")
    separator = "&&" if rng.random() < 0.05 else "&"
    return separator.join(parts)


def _method(rng: random.Random) -> str:
    return rng.choices([m for m, _ in METHODS], weights=[w for _, w in METHODS])[0]


def generate(seed: int, count: int) -> list[Request]:
    """``count`` requests, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    requests = []
    for index in range(count):
        segments = rng.choice(BASES)[1:].split("/")
        for _ in range(rng.choices((0, 1, 2, 3), weights=(30, 35, 22, 13))[0]):
            rng.choice(MUTATIONS)(rng, segments)
        path = "/" + "/".join(segments)
        query = _query(rng, path)
        target = path if query is None else f"{path}?{query}"
        method = _method(rng)
        body = b""
        if method in ("POST", "PUT") or (method == "DELETE" and rng.random() < 0.3):
            body = f"{index}:{rng.choice(BODIES)}".encode()
        assert TARGET.fullmatch(target), f"the grammar made an invalid request-target: {target!r}"
        requests.append(Request(index, method, target, body))
    return requests


# ---------------------------------------------------------------------------------------------
# The recording backend


@dataclass(frozen=True)
class Received:
    """What the backend got: method, raw path and raw query (None without "?"), body."""

    method: str
    path: str
    query: str | None
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def describe(self) -> str:
        query = "" if self.query is None else f"?{self.query}"
        body = f" body={self.body!r}" if self.body else ""
        return f"{self.method} {self.path}{query}{body}"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Backend:
    """An HTTP/1.1 origin on raw asyncio streams that records every request by its X-Diff-Id.

    Nothing here parses or normalises the request-target: it is split at the first "?" only.
    Keep-alive, Content-Length and chunked bodies and ``Expect: 100-continue`` are handled,
    since proxies use all of them. Every request gets 200 ``BACKEND <id>``.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[Received]] = {}
        self.unlabelled: list[Received] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="diff-backend", daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> Backend:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the recording backend did not start")
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def received(self, diff_id: str) -> Received | None:
        found = self.records.get(diff_id)
        return found[0] if found else None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        while line in (b"\r\n", b"\n"):
            line = await reader.readline()
        if not line:
            return False
        method, target, version = line.rstrip(b"\r\n").split(b" ", 2)
        headers: list[tuple[str, str]] = []
        while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        fields = {name.lower(): value for name, value in headers}
        if fields.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body = b""
            while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            while await reader.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
        else:
            body = await reader.readexactly(int(fields.get("content-length", "0")))
        path, sep, query = target.partition(b"?")
        record = Received(_text(method), _text(path), _text(query) if sep else None, body, tuple(headers))
        diff_id = fields.get("x-diff-id")
        if diff_id:
            self.records.setdefault(diff_id, []).append(record)
        else:
            self.unlabelled.append(record)
        answer = f"BACKEND {diff_id}".encode()
        close = fields.get("connection", "").lower() == "close" or version == b"HTTP/1.0"
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(answer)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
        )
        writer.write(head.encode() + (b"" if method == b"HEAD" else answer))
        await writer.drain()
        return not close


@contextlib.contextmanager
def running_backend() -> Iterator[Backend]:
    backend = Backend().start()
    try:
        yield backend
    finally:
        backend.stop()


# ---------------------------------------------------------------------------------------------
# The raw client


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def _dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body


def send(base_url: str, request: Request, diff_id: str, timeout: float = REQUEST_TIMEOUT) -> Response:
    """``request`` as exact bytes on a new connection; the response read until the server closes."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    head = [
        f"{request.method} ".encode() + request.target.encode("utf-8") + b" HTTP/1.1",
        f"Host: {host}:{port}".encode(),
        f"X-Diff-Id: {diff_id}".encode(),
        b"Connection: close",
    ]
    if request.body:
        head += [b"Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(request.body)}".encode()]
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + request.body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    while data.startswith(b"HTTP/1.1 1"):  # interim responses
        data = data.partition(b"\r\n\r\n")[2]
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = tuple((name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in header_lines))
    status = int(status_line.split(" ", 2)[1])
    response = Response(status, headers, b"")
    if request.method == "HEAD" or status in (204, 304):
        return response
    if "chunked" in (response.header("Transfer-Encoding") or "").lower():
        return Response(status, headers, _dechunk(rest))
    length = response.header("Content-Length")
    return Response(status, headers, rest[: int(length)] if length is not None else rest)


# ---------------------------------------------------------------------------------------------
# Observations


@dataclass(frozen=True)
class Observation:
    status: int  # 0: no response (the error is in body)
    location: str | None
    body: str  # file:<name> | backend | redirect-body | 405 | empty | other:<first 40 bytes> | error:...
    rules: tuple[tuple[str, str], ...]  # the X-Rule-* headers, names lower-cased, sorted
    backend: Received | None

    def describe(self) -> str:
        location = f" -> {self.location}" if self.location is not None else ""
        rules = ",".join(f"{k.removeprefix('x-rule-')}={v}" for k, v in self.rules)
        backend = f" backend[{self.backend.describe()}]" if self.backend else ""
        return f"{self.status}{location} {self.body} rules[{rules}]{backend}"


def body_kind(body: bytes) -> str:
    if not body:
        return "empty"
    if found := MARKER.search(body):
        return "file:" + _text(found.group(1))
    if body.startswith(b"BACKEND "):
        return "backend"
    if body.startswith(b"Redirecting to"):
        return "redirect-body"
    if body.strip().startswith(b"Method Not Allowed"):
        return "405"
    return f"other:{body[:40]!r}"


def observe(base_url: str, request: Request, backend: Backend, label: str) -> Observation:
    diff_id = f"{label}-{request.id}"
    try:
        response = send(base_url, request, diff_id)
    except (OSError, ValueError, IndexError) as exc:
        return Observation(0, None, f"error:{type(exc).__name__}", (), backend.received(diff_id))
    location = response.header("Location")
    rules = tuple(sorted((k.lower(), v) for k, v in response.headers if k.lower().startswith("x-rule-")))
    return Observation(
        response.status,
        None if location is None else _text(location.encode("latin-1")),
        body_kind(response.body),
        rules,
        backend.received(diff_id),
    )


def observe_all(
    base_url: str, requests: Sequence[Request], backend: Backend, label: str, concurrency: int = CONCURRENCY
) -> list[Observation]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda r: observe(base_url, r, backend, label), requests))


# The fields compared; backend.* only when both reached the backend.
FIELDS = (
    "status",
    "location",
    "body",
    "rules",
    "backend",
    "backend.method",
    "backend.path",
    "backend.query",
    "backend.body",
)


def differing_fields(a: Observation, b: Observation) -> tuple[str, ...]:
    found = [name for name in ("status", "location", "body", "rules") if getattr(a, name) != getattr(b, name)]
    if (a.backend is None) != (b.backend is None):
        found.append("backend")
    elif a.backend is not None and b.backend is not None:
        found += [
            f"backend.{name}"
            for name in ("method", "path", "query", "body")
            if getattr(a.backend, name) != getattr(b.backend, name)
        ]
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# How netlify dev turns a URL into what it sends (proxy.js, rules-proxy.js), for the predicates


def resolve_dots(raw_path: str) -> str:
    """RFC 3986 remove_dot_segments, with %2e counted as "." (as WHATWG URLs and Netlify do)."""
    out: list[str] = []
    segments = raw_path.split("/")[1:]
    for i, segment in enumerate(segments):
        dots = re.sub("%2[eE]", ".", segment)
        last = i == len(segments) - 1
        if dots in (".", ".."):
            if dots == ".." and out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def _encode_set(text: str, keep: bytes) -> str:
    """Percent-encode every byte of ``text`` outside printable ASCII or in ``keep``'s complement."""
    return "".join(
        chr(b) if 0x20 < b < 0x7F and chr(b) not in keep.decode() else f"%{b:02X}"
        for b in text.encode("utf-8", "surrogateescape")
    )


def whatwg_path(text: str) -> str:
    """The WHATWG path percent-encode set, as `new URL()` applies it."""
    return _encode_set(text, b'"#<>?`{}')


def whatwg_query(text: str) -> str:
    return _encode_set(text, b"\"#<>'")


def whatwg_fragment(text: str) -> str:
    return _encode_set(text, b'"<>`')


def _form_pairs(raw_query: str) -> list[tuple[bytes, bytes]]:
    """application/x-www-form-urlencoded parsing, as URLSearchParams does it."""
    pairs = []
    for part in raw_query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((_form_decode(key), _form_decode(value)))
    return pairs


def _form_decode(text: str) -> bytes:
    return unquote_to_bytes(text.replace("+", " "))


def form_encode(raw: bytes) -> str:
    """The application/x-www-form-urlencoded byte serialiser: `cats dogs` -> `cats+dogs`, `/` -> `%2F`."""
    raw = raw.decode("utf-8", "replace").encode("utf-8")
    return "".join(
        "+" if b == 0x20 else chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "*-._") else f"%{b:02X}"
        for b in raw
    )


def url_search_params(raw_query: str) -> str:
    """`new URLSearchParams(raw_query).toString()`: form-decoded, then form-encoded again."""
    return "&".join(f"{form_encode(k)}={form_encode(v)}" for k, v in _form_pairs(raw_query))


def netlify_dev_url(production: str, client_query: str | None) -> tuple[str, str | None, str | None]:
    """What netlify dev makes of a URL path that production builds from the client's encoding.

    netlify dev matches rules on decodeURIComponent(pathname) (rules-proxy.js), so splat and
    placeholder values arrive decoded; `new URL()` then parses the result again (an escaped "?"
    or "#" now starts a query or fragment, "%2e" segments resolve) and re-encodes it; the
    client's query goes on re-encoded by URLSearchParams unless the URL now has one (proxy.js).
    Returns (path, query or None, fragment or None).
    """
    text = unquote(production, errors="surrogateescape").strip("".join(map(chr, range(0x21))))
    rest, _, fragment = text.partition("#")
    path, queried, query = rest.partition("?")
    # URLSearchParams takes over only when the URL has no query of its own.
    query = whatwg_query(query) if queried and _form_pairs(query) else url_search_params(client_query or "")
    # URL.hash is "" for an empty fragment, so a lone "#" vanishes from the Location.
    return resolve_dots(whatwg_path(path)), query or None, whatwg_fragment(fragment) if fragment else None


def _keeps_client_encoding(request: Request, produced_path: str) -> bool:
    """Whether a path the edge produced is what production can produce from this request.

    Dot segments resolved (production resolves them before matching), no raw space or other
    invalid character, and no escape the client did not send (nothing decoded and encoded again).
    """
    sent = set(re.findall(_ESCAPE, resolve_dots(request.path)))
    for _, value in _form_pairs(request.query or ""):  # placeholders bound from the query, form-encoded
        sent |= set(re.findall(_ESCAPE, form_encode(value) + quote_plus(value)))
    return (
        TARGET.fullmatch(produced_path) is not None
        and resolve_dots(produced_path) == produced_path
        and set(re.findall(_ESCAPE, produced_path)) <= sent
    )


# ---------------------------------------------------------------------------------------------
# Deliberate differences

Predicate = Callable[[Request, Observation, Observation], bool]


@dataclass(frozen=True)
class Divergence:
    """A known, deliberate difference: the fields it may explain, and when."""

    name: str
    reason: str  # what production does and why the edge follows it (or why netlify dev cannot be matched)
    fields: frozenset[str]
    explains: Predicate  # (request, netlify dev's observation, the edge's observation)
    witness: str  # "METHOD target": a request that shows it, added to every run so the entry cannot rot


def _proxied(request: Request, netlify: Observation, edge: Observation) -> tuple[Received, Received] | None:
    if netlify.backend is None or edge.backend is None or netlify.backend.method != edge.backend.method:
        return None
    return netlify.backend, edge.backend


def _proxy_path_decoded(request: Request, netlify: Observation, edge: Observation) -> bool:
    """The edge forwards the client's encoding; netlify dev the decoded path, re-encoded by new URL()."""
    both = _proxied(request, netlify, edge)
    if both is None or not _keeps_client_encoding(request, both[1].path):
        return False
    return both[0].path == netlify_dev_url(both[1].path, request.query)[0]


def _proxy_query_reencoded(request: Request, netlify: Observation, edge: Observation) -> bool:
    """The edge forwards the client's query verbatim; netlify dev re-encodes it with URLSearchParams."""
    both = _proxied(request, netlify, edge)
    if both is None or both[1].query != request.query:
        return False
    return both[0].query == netlify_dev_url(both[1].path, request.query)[1]


def _split_location(location: str) -> tuple[str, str | None]:
    path, queried, query = location.partition("?")
    return path, query if queried else None


def _render(path: str, query: str | None, fragment: str | None = None) -> str:
    return path + (f"?{query}" if query else "") + (f"#{fragment}" if fragment is not None else "")


def _client_query_passed_on(request: Request, query: str | None) -> bool:
    return query == (request.query or None)


def _redirect_values_decoded(request: Request, netlify: Observation, edge: Observation) -> bool:
    """Splat and placeholder values from the path: the client's encoding on the edge, decoded by netlify dev."""
    if netlify.status != edge.status or netlify.location is None or edge.location is None:
        return False
    path, query = _split_location(edge.location)
    if not path.startswith("/") or not _keeps_client_encoding(request, path):
        return False
    if not _client_query_passed_on(request, query):
        return False
    return netlify.location == _render(*netlify_dev_url(path, request.query))


def _redirect_query_reencoded(request: Request, netlify: Observation, edge: Observation) -> bool:
    """The same Location path; the query passed on verbatim by the edge, re-encoded by netlify dev."""
    if netlify.status != edge.status or netlify.location is None or edge.location is None:
        return False
    path, query = _split_location(edge.location)
    if not _client_query_passed_on(request, query):
        return False
    return netlify.location == _render(path, url_search_params(request.query or ""))


def _header_rules() -> list[tuple[str, dict[str, str]]]:
    """The fixture's header rules, _headers first, then netlify.toml's (as both parsers order them)."""
    import tomllib

    rules: list[tuple[str, dict[str, str]]] = []
    for line in HEADERS.splitlines():
        if line.startswith("/"):
            rules.append((line.strip(), {}))
        elif ":" in line:
            name, _, value = line.strip().partition(":")
            rules[-1][1][name.strip().lower()] = value.strip()
    for entry in tomllib.loads(NETLIFY_TOML).get("headers", []):
        rules.append((entry["for"], {k.lower(): v for k, v in entry["values"].items()}))
    return rules


def _merged(found: Iterator[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    merged: dict[str, str] = {}
    for values in found:
        merged.update(values)
    return tuple(sorted(merged.items()))


def netlify_dev_header_rules(path: str) -> tuple[tuple[str, str], ...]:
    """@netlify/headers-parser's forRegExp on a path: case-insensitive, and the slash before a
    lone "*" optional, so /a/* also matches /about (for_regexp.js)."""

    def regex(source: str) -> str:
        parts = []
        for part in filter(None, (p.rstrip() for p in source.split("/"))):
            if part.startswith(":"):
                parts.append("([^/]+)")
            elif part == "*":
                parts.append("?(.*)")
            elif "*" in part:
                parts.append(part.replace("*", "(.*)"))  # unescaped there: "." matches any character
            else:
                parts.append(re.escape(part))
        return "^/" + "/".join(parts) + "/?$"

    return _merged(v for source, v in _header_rules() if re.match(regex(source), path, re.IGNORECASE))


def production_header_rules(path: str) -> tuple[tuple[str, str], ...]:
    """Header rules by path segments of the decoded request path, as Netlify documents them:
    ":name" one segment, a final "*" the rest (or nothing), other "*" within one segment."""
    segments = [unquote(s) for s in path.split("/") if s]

    def matches(source: str) -> bool:
        parts = [p for p in source.split("/") if p]
        if parts and parts[-1] == "*":
            return len(segments) >= len(parts) - 1 and all(map(same, parts[:-1], segments))
        return len(segments) == len(parts) and all(map(same, parts, segments))

    def same(part: str, segment: str) -> bool:
        if part.startswith(":"):
            return bool(segment)
        pattern = ".*".join(re.escape(piece) for piece in part.split("*"))
        return re.fullmatch(pattern, segment, re.IGNORECASE) is not None

    return _merged(v for source, v in _header_rules() if matches(source))


# The files the fixture's 200 and 404 rules serve: netlify dev matches header rules on these paths.
REWRITTEN_TO = {
    fields[-2] for line in REDIRECTS.splitlines() if (fields := line.split()) and fields[-1] in ("200", "404")
}


def _served_path(observation: Observation) -> str | None:
    if observation.body.startswith("file:"):
        return "/" + whatwg_path(observation.body.removeprefix("file:"))
    return None


def _header_rules_by_request_path(request: Request, netlify: Observation, edge: Observation) -> bool:
    """netlify dev matches header rules with its over-matching regex against the path it finally
    served (the rewritten file, the 404 page); the edge by segments against the requested path."""
    requested = resolve_dots(request.path)
    decoded = whatwg_path(unquote(requested, errors="surrogateescape"))
    # The file netlify dev served (a HEAD or 405 answer names none): a pretty URL's, or a rule's.
    pretty = {decoded + ".html", decoded.rstrip("/") + ".html", decoded.rstrip("/") + "/index.html"}
    candidates = {requested, decoded, *pretty, *REWRITTEN_TO}
    if served := _served_path(netlify):
        candidates.add(served)
    expected = tuple((k, v) for k, v in edge.rules)
    return expected == production_header_rules(requested) and any(
        netlify.rules == netlify_dev_header_rules(path) for path in candidates
    )


def _rewrite_keeps_rule_status(request: Request, netlify: Observation, edge: Observation) -> bool:
    """A method other than GET/HEAD on a rewritten file: both say Method Not Allowed, but netlify
    dev sends it with the rule's status (200 or 404) where the edge sends 405."""
    return (
        request.method not in ("GET", "HEAD")
        and netlify.body == edge.body == "405"
        and edge.status == 405
        and netlify.status in (200, 404)
    )


def _raw_non_ascii_refused(request: Request, netlify: Observation, edge: Observation) -> bool:
    """Raw non-ASCII bytes in the request line: both refuse them with 400, each with its own body."""
    return not request.target.isascii() and netlify.status == edge.status == 400


def _directory_index_or_html(request: Request, netlify: Observation, edge: Observation) -> bool:
    """x.html and x/index.html both exist: the edge serves x.html for /x and x/index.html for /x/;
    netlify dev picks by which of its servers answers (its static server serves the directory's
    index for /x, its fallback list tries x.html first for /x/ after a dot segment)."""
    theirs, ours = netlify.body.removeprefix("file:"), edge.body.removeprefix("file:")
    stem = (ours if ours.endswith("/index.html") else theirs).removesuffix("/index.html")
    if {theirs, ours} != {stem + ".html", stem + "/index.html"}:
        return False
    slash = resolve_dots(request.path).endswith("/")
    return ours == (stem + "/index.html" if slash else stem + ".html")


def _empty_segments_collapsed(request: Request, netlify: Observation, edge: Observation) -> bool:
    """netlify dev's proxy (http-proxy's urlJoin) collapses "//" in the path it sends; the edge
    forwards the path as the client wrote it."""
    both = _proxied(request, netlify, edge)
    if both is None or "//" not in both[1].path:
        return False
    return both[0].path == re.sub("/+", "/", netlify_dev_url(both[1].path, request.query)[0])


def _encoded_slash_is_data(request: Request, netlify: Observation, edge: Observation) -> bool:
    """netlify dev decodes %2F into a path separator before it matches rules and files; production
    keeps an encoded slash inside its segment, so it never starts a new one."""
    return "%2f" in resolve_dots(request.path).lower()


def _double_slash_at_the_end(request: Request, netlify: Observation, edge: Observation) -> bool:
    """/about// : netlify dev 404s a path ending in "//" though it serves "//" elsewhere in a path."""
    return resolve_dots(request.path).endswith("//") and netlify.status == 404 and edge.status == 200


def _trailing_slash_after_a_file(request: Request, netlify: Observation, edge: Observation) -> bool:
    """/x.html/ or /x.css/ (sent so, or once dot segments resolve): netlify dev serves the file when a rule
    matched the path (path.resolve drops the slash) and 404s it when none did; the edge treats it
    as a directory path everywhere (x.html/index.html, else what the rules say, else 404)."""
    resolved = unquote(resolve_dots(request.path))
    name = re.sub("/+", "/", resolved.strip("/"))
    if not resolved.endswith("/") or name not in FILES:
        return False
    if request.method == "HEAD":  # no body names the file: the statuses tell
        return netlify.status == 200 and edge.status == 404
    served = (200, "file:" + name)
    return (netlify.status, netlify.body) == served != (edge.status, edge.body)


def _query_ending_in_one_ampersand(request: Request, netlify: Observation, edge: Observation) -> bool:
    """/search?q=x& : Netlify's matcher (libredirect) meets no query condition when the query ends
    in a single "&" (yet does with "&&"); the edge reads the empty pair as nothing."""
    query = request.query or ""
    return (
        query.endswith("&")
        and not query.endswith("&&")
        and netlify.status == 404
        and edge.status in (301, 302, 303, 307, 308, 405)
    )


def _dots_after_empty_segments(request: Request, netlify: Observation, edge: Observation) -> bool:
    """/docs//.. : RFC 3986 pops the empty segment (/docs/); netlify dev's static server lets the
    file system resolve the unresolved path, where "//" is one slash and ".." leaves docs (/)."""
    return "//" in request.path and resolve_dots(re.sub("/+", "/", request.path)) != resolve_dots(request.path)


def climbs_above_the_root(raw_path: str) -> bool:
    """Whether a ".." (or "%2e%2e") would climb above "/" while the path resolves."""
    depth = 0
    for segment in raw_path.split("/")[1:]:
        dots = re.sub("%2[eE]", ".", segment)
        if dots == "..":
            if depth == 0:
                return True
            depth -= 1
        elif dots != ".":
            depth += 1
    return False


def _dots_above_the_root(request: Request, netlify: Observation, edge: Observation) -> bool:
    """A ".." above "/" (/../x, /a/../../x): netlify dev's static server refuses the unresolved
    path (403, or 404 once escapes are in it); the edge resolves it and serves /x or its 404."""
    return (
        climbs_above_the_root(request.path)
        and netlify.status in (403, 404)
        and edge.status in (200, 404)
        and (netlify.status, netlify.body) != (edge.status, edge.body)
    )


def _location_dots_from_the_query(request: Request, netlify: Observation, edge: Observation) -> bool:
    """A query value such as ".." put into a Location: the edge sends the target as the rule builds
    it (the browser resolves it); netlify dev resolves it first with new URL()."""
    if netlify.location is None or edge.location is None:
        return False
    path, query = _split_location(edge.location)
    if resolve_dots(path) == path or not _client_query_passed_on(request, query):
        return False
    return netlify.location == _render(*netlify_dev_url(path, request.query))


def _reserved_escapes_in_file_names(request: Request, netlify: Observation, edge: Observation) -> bool:
    """/a%2Bb for a+b.html: netlify dev's static server keeps escapes of reserved characters when it
    looks a file up and 404s; the edge decodes each segment, as it does for every other escape."""
    resolved = resolve_dots(request.path)
    name = unquote(resolved).strip("/")
    served = edge.body in (f"file:{name}", f"file:{name}.html", f"file:{name}/index.html")
    return (
        re.search("%(2[4BbCc]|3[AaBbDd]|40|26)", resolved) is not None
        and netlify.status == 404
        and edge.status == 200
        and (served or request.method == "HEAD")
    )


DELIBERATE: list[Divergence] = [
    Divergence(
        "proxy-path-decoded",
        "Production Netlify forwards the path to a proxy target as the client encoded it; netlify dev matches "
        "rules on decodeURIComponent(pathname) and builds the target URL from the decoded splat (rules-proxy.js).",
        frozenset({"backend.path"}),
        _proxy_path_decoded,
        "GET /api/a%20b/c%3Fd",
    ),
    Divergence(
        "proxy-query-reencoded",
        "Production Netlify forwards the query string as the client encoded it; netlify dev re-encodes it with "
        "URLSearchParams (proxy.js: %20 becomes +, a bare key gets '=', empty pairs and an empty '?' vanish).",
        frozenset({"backend.query"}),
        _proxy_query_reencoded,
        "GET /api/items?x=a%20b&y",
    ),
    Divergence(
        "redirect-values-decoded",
        "Production Netlify puts splat and placeholder values into a redirect's Location as the client encoded "
        "them; netlify dev decodes them first (decodeURIComponent in rules-proxy.js) and new URL() re-encodes.",
        frozenset({"location"}),
        _redirect_values_decoded,
        "GET /old/a%20b%3Fc",
    ),
    Divergence(
        "redirect-query-reencoded",
        "Production Netlify passes the request's query string on to a redirect's Location as the client encoded "
        "it; netlify dev re-encodes it with URLSearchParams (proxy.js), as it does for a proxy target.",
        frozenset({"location"}),
        _redirect_query_reencoded,
        "GET /old/x?k%20y=a%20b",
    ),
    Divergence(
        "header-rules-by-request-path",
        "Netlify documents header rules by the path the visitor requests, matched by segment; netlify dev matches "
        "them against the file it served after a rewrite or 404, with a regex that makes the slash before a lone * "
        "optional (so /a/* also covers /about) and against the still-encoded path.",
        frozenset({"rules"}),
        _header_rules_by_request_path,
        "GET /about.html",
    ),
    Divergence(
        "rewrite-keeps-rule-status",
        "Both refuse methods other than GET and HEAD on static content; netlify dev sends its 405 body with the "
        "rewrite rule's status (200 or 404), the edge with 405, as a static file gets.",
        frozenset({"status"}),
        _rewrite_keeps_rule_status,
        "DELETE /app/dashboard",
    ),
    Divergence(
        "raw-non-ascii-refused",
        "A request line with raw non-ASCII bytes is not valid HTTP; both answer 400 (browsers always "
        "percent-encode), and only the error bodies differ.",
        frozenset({"body"}),
        _raw_non_ascii_refused,
        "GET /café.html",
    ),
    Divergence(
        "directory-index-or-html",
        "With both x.html and x/index.html, /x is x.html on Netlify's CDN (the file's pretty URL) and /x/ is "
        "x/index.html; netlify dev's static server (fastify-static) serves the directory's index for /x, and its "
        "fallback list tries x.html first for /x/.",
        frozenset({"body"}),
        _directory_index_or_html,
        "GET /docs/guide",
    ),
    Divergence(
        "proxy-empty-segments-kept",
        "Production Netlify forwards the path as the client sent it, '//' included; netlify dev's proxy library "
        "(http-proxy's urlJoin) collapses repeated slashes.",
        frozenset({"backend.path"}),
        _empty_segments_collapsed,
        "GET /api//items/42",
    ),
    Divergence(
        "encoded-slash-is-data",
        "An encoded slash (%2F) stays inside its segment on Netlify, so /api%2F.. or /app%2F never become other "
        "paths; netlify dev decodes the whole path before it matches rules and files.",
        frozenset({"status", "location", "body", "rules", "backend", "backend.path", "backend.query"}),
        _encoded_slash_is_data,
        "GET /app%2F",
    ),
    Divergence(
        "slash-after-a-file",
        "The edge answers /a.html/ as a directory path wherever it comes from (404 unless a rule applies, as "
        "netlify dev itself answers it when no rule matches); netlify dev serves a.html when a rule matched the "
        "path, because path.resolve drops the slash.",
        frozenset({"status", "body", "rules"}),
        _trailing_slash_after_a_file,
        "GET /app/real.html/%2E",
    ),
    Divergence(
        "query-ending-in-one-ampersand",
        "Netlify's matcher (libredirect, which netlify dev runs) meets no query condition when the query string "
        "ends in a single '&' but does with '&&'; the edge reads an empty pair as nothing, so /search?q=x& "
        "matches like /search?q=x.",
        frozenset({"status", "location", "body", "rules"}),
        _query_ending_in_one_ampersand,
        "GET /search?q=x&",
    ),
    Divergence(
        "dots-after-empty-segments",
        "Dot segments resolve as RFC 3986 says, so /docs//.. is /docs/ (the '..' removes the empty segment); "
        "netlify dev's static server hands the unresolved path to the file system, which reads it as /.",
        frozenset({"status", "location", "body", "rules", "backend", "backend.path"}),
        _dots_after_empty_segments,
        "GET /docs//..",
    ),
    Divergence(
        "location-dots-from-the-query",
        "A query value put into a redirect target is sent as the rule builds it (/find/.. for q=..), and the "
        "browser resolves it; netlify dev resolves the dot segments itself when it builds the URL.",
        frozenset({"location"}),
        _location_dots_from_the_query,
        "GET /search?q=%2e%2e",
    ),
    Divergence(
        "dots-above-the-root",
        "Netlify resolves dot segments before anything else and nothing climbs above '/', so /../x is /x; "
        "netlify dev's static server refuses the unresolved path (403, or 404 when it holds escapes).",
        frozenset({"status", "body"}),
        _dots_above_the_root,
        "GET /../target.html",
    ),
    Divergence(
        "reserved-escapes-in-file-names",
        "The edge decodes every escape in a segment before it looks a file up (/a%2Bb is a+b.html); netlify dev's "
        "static server leaves escapes of reserved characters such as %2B encoded and 404s.",
        frozenset({"status", "body"}),
        _reserved_escapes_in_file_names,
        "GET /a%2Bb",
    ),
    Divergence(
        "double-slash-at-the-end",
        "The edge ignores empty segments when it looks a file up, wherever they are; netlify dev does so in the "
        "middle of a path (/docs//guide) but 404s one that ends in '//' (/about//).",
        frozenset({"status", "body"}),
        _double_slash_at_the_end,
        "GET /about//",
    ),
]


# ---------------------------------------------------------------------------------------------
# Comparing


@dataclass(frozen=True)
class Difference:
    request: Request
    netlify: Observation
    edge: Observation
    fields: tuple[str, ...]
    explained: dict[str, tuple[str, ...]]  # field -> the divergences that explain it

    @property
    def unexplained(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if not self.explained.get(f))


@dataclass
class Comparison:
    requests: list[Request]
    netlify: list[Observation]
    edge: list[Observation]
    differences: list[Difference]
    divergences: list[Divergence]
    seconds: float = 0.0
    edge_errors: list[str] = field(default_factory=list)
    # Requests netlify dev cannot survive, sent to the edge alone: (request, observation, what is wrong).
    edge_only: list[tuple[Request, Observation, str]] = field(default_factory=list)

    @property
    def unexplained(self) -> list[Difference]:
        return [d for d in self.differences if d.unexplained]

    def used(self, divergence: Divergence) -> int:
        return sum(divergence.name in names for d in self.differences for names in d.explained.values())

    @property
    def stale(self) -> list[Divergence]:
        return [d for d in self.divergences if not self.used(d)]


def compare(
    requests: Sequence[Request],
    netlify: Sequence[Observation],
    edge: Sequence[Observation],
    divergences: Sequence[Divergence] = tuple(DELIBERATE),
) -> Comparison:
    differences = []
    for request, theirs, ours in zip(requests, netlify, edge, strict=True):
        fields = differing_fields(theirs, ours)
        if not fields:
            continue
        explained = {
            f: tuple(d.name for d in divergences if f in d.fields and d.explains(request, theirs, ours)) for f in fields
        }
        differences.append(Difference(request, theirs, ours, fields, explained))
    return Comparison(list(requests), list(netlify), list(edge), differences, list(divergences))


def _diverse(members: Sequence[Difference], count: int) -> list[Difference]:
    """The first ``count`` differences, preferring ones whose outcomes look unlike those already chosen."""

    def shape(d: Difference) -> tuple[object, ...]:
        return (d.netlify.status, d.netlify.body.split(":")[0], d.edge.status, d.edge.body.split(":")[0])

    chosen: list[Difference] = []
    shapes: set[tuple[object, ...]] = set()
    for difference in members:
        if len(chosen) < count and shape(difference) not in shapes:
            chosen.append(difference)
            shapes.add(shape(difference))
    taken = {id(d) for d in chosen}
    chosen += [d for d in members if id(d) not in taken][: count - len(chosen)]
    return sorted(chosen, key=lambda d: d.request.index)


def report(comparison: Comparison, examples: int = 3, explained: bool = False) -> str:
    """Differences grouped by the fields that differ, with the first few requests of each group."""
    groups: dict[tuple[str, ...], list[Difference]] = {}
    for difference in comparison.differences:
        key = difference.fields if explained else difference.unexplained
        if key:
            groups.setdefault(key, []).append(difference)
    total = len(comparison.requests)
    lines = [
        f"{total} requests: {total - len(comparison.differences)} alike, {len(comparison.differences)} differ, "
        f"{len(comparison.unexplained)} not explained by DELIBERATE"
    ]
    for divergence in comparison.divergences:
        lines.append(f"  divergence {divergence.name}: explains {comparison.used(divergence)} field differences")
    if comparison.edge_errors:
        distinct = sorted(set(comparison.edge_errors))  # requests run concurrently: sorted, to be repeatable
        lines.append(f"  the edge logged {len(comparison.edge_errors)} errors, {len(distinct)} distinct; first:")
        lines += [f"    {line}" for line in distinct[:examples]]
    for key, members in sorted(groups.items(), key=lambda item: -len(item[1])):
        title = "differ" if explained else "differ, unexplained"
        lines.append(f"\n== {', '.join(key)} {title}: {len(members)} requests ==")
        for difference in _diverse(members, examples):
            lines.append(f"  {difference.request.describe()}")
            lines.append(f"    netlify dev: {difference.netlify.describe()}")
            lines.append(f"    edge:        {difference.edge.describe()}")
            notes = {f: names for f, names in difference.explained.items() if names}
            if notes:
                lines.append("    explained:   " + "; ".join(f"{f} by {','.join(n)}" for f, n in notes.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running the two servers


@contextlib.contextmanager
def start_edge(site: Path) -> Iterator[str]:
    """The edge under test serving ``site``; yields its URL. The one place that knows the edge's API."""
    from cnd_toolkit.edge.server import load_site, serve_in_thread  # type: ignore[import-not-found]

    with serve_in_thread(load_site(site)) as running:
        yield running.url


def netlify_dev_command(cli: str, publish: Path, port: int) -> list[str]:
    """As the generated cnd_toolkit.dev.netlify_dev_command (not imported: cnd_toolkit.dev needs Docker's SDK)."""
    return [
        cli, "dev", "--offline", "--internal-disable-edge-functions",
        "--framework", "#static", "--dir", str(publish), "--port", str(port),
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NetlifyDev:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self, last: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-last:]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"netlify dev exited with {self.proc.returncode}:\n{self.output()}")

    def settle(self, timeout: float = 120) -> None:
        """After requests it did not answer: until it answers a probe (it lives) or has exited (a
        crash: its report is then whole in the log, for ``check_alive`` to show)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                if send(self.url, PROBE, "probe").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)


PROBE = Request(-1, "GET", "/index.html")


@contextlib.contextmanager
def start_netlify_dev(cli: str, site: Path, log: Path, timeout: float = 120) -> Iterator[NetlifyDev]:
    """The real netlify dev serving ``site``; its output goes to ``log`` (a pipe nobody reads would block it)."""
    port = _free_port()
    env = {**os.environ, "BROWSER": "none", "NETLIFY_NO_UPDATE_NOTIFIER": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            netlify_dev_command(cli, site / "public", port),
            cwd=site,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown reaches its children
        )
    running = NetlifyDev(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            running.check_alive()
            try:
                if send(running.url, PROBE, "probe", timeout=30).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"netlify dev did not answer within {timeout:.0f} s:\n{running.output()}")
            time.sleep(0.2)
        yield running
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children left in its group


@dataclass
class Servers:
    netlify: NetlifyDev
    edge_url: str
    backend: Backend
    site: Path
    edge_errors: list[str] = field(default_factory=list)  # what aiohttp logged, one line each


class _Collect(logging.Handler):
    """aiohttp's server log (a traceback per request it could not parse or handle), one line each."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        detail = " ".join(str(error).split())[:160] if error else ""
        self.into.append(f"{record.getMessage()}: {type(error).__name__ if error else ''} {detail}".strip())


@contextlib.contextmanager
def _edge_log(into: list[str]) -> Iterator[None]:
    logger = logging.getLogger("aiohttp.server")
    handler, propagate = _Collect(into), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextlib.contextmanager
def servers(workdir: Path, cli: str) -> Iterator[Servers]:
    """Write the fixture site, start the backend, netlify dev and the edge (the toolkit's)."""
    errors: list[str] = []
    with running_backend() as backend, _edge_log(errors):
        site = write_site(workdir / "site", backend.port)
        with (
            start_netlify_dev(cli, site, workdir / "netlify-dev.log") as netlify,
            start_edge(site) as edge_url,
        ):
            yield Servers(netlify, edge_url, backend, site, errors)


def witnesses(start: int) -> list[Request]:
    """One request per DELIBERATE entry that shows it, numbered from ``start``."""
    found = []
    for index, divergence in enumerate(DELIBERATE, start=start):
        method, _, target = divergence.witness.partition(" ")
        found.append(Request(index, method, target, b"witness" if method in METHODS_WITH_BODY else b""))
    return found


def crashes_netlify_dev(request: Request) -> bool:
    """netlify dev exits on a path decodeURIComponent cannot decode (a lone "%", "%E9" alone),
    and on a path that starts with "//" once dot segments resolve (//x, /..//x), which it parses as
    a host name."""
    if resolve_dots(request.path).startswith("//"):
        return True
    try:
        unquote_to_bytes(request.path).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return re.search(r"%(?![0-9A-Fa-f]{2})", request.path) is not None


SANE_STATUSES = {200, 301, 302, 303, 307, 308, 400, 404, 405}


def insane(request: Request, observation: Observation) -> str:
    """What is wrong with an answer on its own (for requests no oracle can judge), or ""."""
    if observation.status not in SANE_STATUSES:
        return f"status {observation.status}"
    if observation.backend is not None and not observation.backend.path.startswith("/api/"):
        return f"reached the backend outside /api/: {observation.backend.path}"
    return ""


def run(servers: Servers, requests: Sequence[Request]) -> Comparison:
    started = time.perf_counter()
    edge_only = [r for r in requests if crashes_netlify_dev(r)]
    requests = [r for r in requests if not crashes_netlify_dev(r)]
    theirs = observe_all(servers.netlify.url, requests, servers.backend, "netlify", NETLIFY_DEV_CONCURRENCY)
    if any(o.status == 0 for o in theirs):
        servers.netlify.settle()  # alive, or exited with its whole crash report
    servers.netlify.check_alive()
    ours = observe_all(servers.edge_url, requests, servers.backend, "edge")
    comparison = compare(requests, theirs, ours)
    alone = observe_all(servers.edge_url, edge_only, servers.backend, "edge")
    comparison.edge_only = [(r, o, insane(r, o)) for r, o in zip(edge_only, alone, strict=True)]
    comparison.seconds = time.perf_counter() - started
    comparison.edge_errors = list(servers.edge_errors)
    return comparison


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def main(argv: Sequence[str] | None = None) -> int:
    from tools.generated import netlify_cli

    parser = argparse.ArgumentParser(description="Compare the edge with netlify dev on generated requests")
    parser.add_argument("--seed", type=int, default=seed_from_env())
    parser.add_argument("--count", type=int, default=count_from_env())
    parser.add_argument("--examples", type=int, default=5, help="requests shown per group")
    parser.add_argument("--all", action="store_true", help="group every difference, explained ones too")
    parser.add_argument("--workdir", type=Path, help="keep the rendered project, site and netlify dev's log here")
    parser.add_argument("--dump", type=Path, help="write every request and both observations here (JSON lines)")
    args = parser.parse_args(argv)
    cli = netlify_cli()
    if cli is None:
        print("netlify-cli is not installed (npm install --prefix .cache/netlify-tools netlify-cli)", file=sys.stderr)
        return 2
    requests = generate(args.seed, args.count)
    requests += witnesses(len(requests))
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-diff-")))
        workdir.mkdir(parents=True, exist_ok=True)
        comparison = run(stack.enter_context(servers(workdir, cli)), requests)
    if args.dump:
        with args.dump.open("w") as out:
            for request, theirs, ours in zip(comparison.requests, comparison.netlify, comparison.edge, strict=True):
                out.write(
                    json.dumps({"request": _jsonable(request), "netlify": _jsonable(theirs), "edge": _jsonable(ours)})
                    + "\n"
                )
    print(f"seed {args.seed}, {args.count} requests, {time.perf_counter() - started:.1f} s in all")
    print(report(comparison, args.examples, explained=args.all))
    for divergence in comparison.stale:
        print(f"\nstale: DELIBERATE entry {divergence.name!r} explains nothing in this run")
    return 1 if comparison.unexplained or comparison.stale else 0


if __name__ == "__main__":
    sys.exit(main())
