"""The local edge against a conformance table of Netlify's documented routing behaviour, and
proxying to a real gunicorn running this project's app."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cnd_toolkit import dev as dev_ops
from cnd_toolkit import project
from cnd_toolkit.edge.routing import Router
from cnd_toolkit.edge.server import RunningEdge, load_site, serve_in_thread
from cnd_toolkit.netlify import redirects
from cnd_toolkit.netlify.rule_files import parse_redirects_file
from cnd_toolkit.netlify.rules import Problem
from cnd_toolkit.netlify.urls import PathPattern, RequestPath

ROOT = project.ROOT  # the project under test: a default render

NETLIFY_TOML = """
[build]
  publish = "public"

[[redirects]]
  from = "/order"
  to = "/from-toml"
  status = 302

[[redirects]]
  from = "/api/*"
  to = "BACKEND/api/:splat"
  status = 200
  force = true

[[headers]]
  for = "/*"
  [headers.values]
    X-Frame-Options = "DENY"

[[headers]]
  for = "/assets/*"
  [headers.values]
    Cache-Control = "public, max-age=31536000, immutable"
"""

REDIRECTS = """
# comments and blank lines are ignored
/order            /from-redirects-file   301
/old              /new                   301
/temp             /elsewhere             302
/see              /other                 303
/keep-method      /moved                 307
/perm-method      /moved-for-good        308
/news/:year/:slug /blog/:year-:slug      301
/docs/*           /manual/:splat         301
/search  q=:term  /find/:term            302
/lang    lang=en  /english               302
/spa/*            /app.html              200
/about            /not-used              301
/forced           /about.html            200!
/gone             /404.html              404
/trail/           /trail-target          301
/outside          https://example.org/x  302
/geo              /au                    302   Country=au
"""

HEADERS = """
/blog/*
  X-Blog: yes
  X-Multi: one
  X-Multi: two
"""

FILES = {
    "index.html": "<h1>home</h1>",
    "about.html": "about page",
    "contact/index.html": "contact index",
    "app.html": "single page app",
    "404.html": "custom not found",
    "blog/post.html": "a post",
    "assets/site.css": "body{}",
    "assets/app.js": "console.log(1)",
    "data.json": "{}",
    ".secret": "dotfile",
}


@pytest.fixture(scope="module")
def site_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    public = root / "public"
    for name, body in FILES.items():
        (public / name).parent.mkdir(parents=True, exist_ok=True)
        (public / name).write_text(body)
    (public / "_redirects").write_text(REDIRECTS)
    (public / "_headers").write_text(HEADERS)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    """This project's app under real gunicorn, as a local process."""
    port = free_port()
    # METRICS_PORT 0: no second listener on the image's fixed 9101, which any other gunicorn
    # on this machine (another test's, a parallel run's) may hold; that made this one exit 1.
    env = {
        **os.environ, "PORT": str(port), "METRICS_PORT": "0", "WEB_CONCURRENCY": "1", "APP_LOG_FLUSH_MS": "0",
        "APP_VERSION": "edge-test",
    }  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "serve.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=30).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    else:
        proc.kill()
        proc.wait(30)
        pytest.fail(f"gunicorn did not start (exit code {proc.returncode})")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def edge(site_root: Path, backend: str) -> Iterator[RunningEdge]:
    (site_root / "netlify.toml").write_text(NETLIFY_TOML.replace("BACKEND", backend))
    lines: list[str] = []
    with serve_in_thread(load_site(site_root), on_log=lines.append) as running:
        yield running


@pytest.fixture
def http(edge: RunningEdge) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge.url, follow_redirects=False, timeout=60) as client:
        yield client


# path -> (status, Location or body fragment, {header: value})
TABLE = [
    # static files, index files, pretty URLs, content types
    ("/", 200, "<h1>home</h1>", {"Content-Type": "text/html; charset=utf-8", "X-Frame-Options": "DENY"}),
    ("/about", 200, "about page", {}),  # shadowing: about.html exists, the 301 without ! is skipped
    ("/contact", 200, "contact index", {}),
    ("/contact/", 200, "contact index", {}),
    (
        "/assets/site.css",
        200,
        "body{}",
        {"Content-Type": "text/css; charset=utf-8", "Cache-Control": "public, max-age=31536000, immutable"},
    ),
    ("/assets/app.js", 200, "console.log", {"Content-Type": "application/javascript; charset=utf-8"}),
    ("/data.json", 200, "{}", {"Content-Type": "application/json; charset=utf-8"}),
    # not found: the custom 404 page, with the static headers
    ("/missing", 404, "custom not found", {"X-Frame-Options": "DENY"}),
    ("/.secret", 404, "custom not found", {}),
    # what a deploy uploads is public: the rules files are files of the deploy too
    ("/_redirects", 200, "/order            /from-redirects-file   301", {"X-Frame-Options": "DENY"}),
    ("/_headers", 200, "  X-Multi: two", {"X-Frame-Options": "DENY"}),
    # redirects with each status, and Location
    ("/old", 301, "/new", {}),
    ("/temp", 302, "/elsewhere", {}),
    ("/see", 303, "/other", {}),
    ("/keep-method", 307, "/moved", {}),
    ("/perm-method", 308, "/moved-for-good", {}),
    ("/outside", 302, "https://example.org/x", {}),
    # _redirects before netlify.toml; the first match wins
    ("/order", 301, "/from-redirects-file", {}),
    # placeholders and splats
    ("/news/2024/hello", 301, "/blog/2024-hello", {}),
    ("/docs/a/b/c", 301, "/manual/a/b/c", {}),
    ("/docs", 301, "/manual/", {}),
    # query matching binds placeholders; the query string passes on (as netlify dev does)
    ("/search?q=netlify", 302, "/find/netlify?q=netlify", {}),
    ("/search", 404, "custom not found", {}),
    ("/lang?lang=en", 302, "/english?lang=en", {}),
    ("/lang?lang=fr", 404, "custom not found", {}),
    ("/old?utm=x", 301, "/new?utm=x", {}),
    # trailing slashes match either way
    ("/old/", 301, "/new", {}),
    ("/trail", 301, "/trail-target", {}),
    # rewrites serve another file under the requested URL, with the headers of that URL
    ("/spa/deep/link", 200, "single page app", {"X-Frame-Options": "DENY"}),
    ("/forced", 200, "about page", {}),
    ("/gone", 404, "custom not found", {}),
    # header rules with splats, repeated names joined
    ("/blog/post", 200, "a post", {"X-Blog": "yes", "X-Multi": "one, two"}),
    # a condition the edge cannot evaluate is not applied
    ("/geo", 404, "custom not found", {}),
]


@pytest.mark.parametrize(("path", "status", "expected", "headers"), TABLE, ids=[row[0] for row in TABLE])
def test_conformance(http: httpx.Client, path: str, status: int, expected: str, headers: dict[str, str]) -> None:
    response = http.get(path)
    assert response.status_code == status
    if 300 <= status < 400:
        assert response.headers["Location"] == expected
    else:
        assert expected in response.text
    for name, value in headers.items():
        assert response.headers.get(name) == value, name


def test_path_traversal_never_leaves_the_publish_directory(edge: RunningEdge, site_root: Path) -> None:
    (site_root / "outside.txt").write_text("must not be served")
    for raw in ("/../outside.txt", "/%2e%2e/outside.txt", "/assets/..%2f..%2foutside.txt"):
        with socket.create_connection(("127.0.0.1", edge.port)) as sock:
            sock.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert b"must not be served" not in answer, raw


def test_proxy_forwards_method_headers_body_and_forwarding_headers(http: httpx.Client) -> None:
    payload = {"items": ["x" * 1000] * 300}  # ~300 KB each way, streamed through the edge
    response = http.post("/api/echo", json=payload, headers={"X-Request-ID": "through-the-edge"})
    assert response.status_code == 200
    assert response.json()["echo"] == payload
    assert response.headers["X-Request-ID"] == "through-the-edge"
    assert response.headers["X-App-Version"] == "edge-test"
    # Header rules are for static files: Netlify does not add them to proxied responses.
    assert "X-Frame-Options" not in response.headers


def test_proxy_passes_status_and_query(http: httpx.Client) -> None:
    assert http.get("/api/greeting", params={"name": "Edge"}).json()["message"] == "Hello, Edge!"
    missing = http.get("/api/nope")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == 404
    assert http.put("/api/version").status_code == 405


def test_proxy_sets_x_forwarded_headers(site_root: Path) -> None:
    seen: dict[str, str] = {}

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    import threading

    def serve() -> None:
        conn, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        for line in data.decode().split("\r\n")[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                seen[name.strip().lower()] = value.strip()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    site = dev_ops.site_for(site_root, f"http://127.0.0.1:{port}")
    with serve_in_thread(site) as running:
        response = httpx.get(running.url + "/api/anything", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=60)
    thread.join(60)
    listener.close()
    assert response.text == "ok"
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{running.port}"
    assert seen["host"] == f"127.0.0.1:{port}"


def test_unreachable_backend_is_a_502_that_names_it(site_root: Path) -> None:
    port = free_port()
    with serve_in_thread(dev_ops.site_for(site_root, f"http://127.0.0.1:{port}")) as running:
        response = httpx.get(running.url + "/api/version", timeout=60)
    assert response.status_code == 502
    assert f"127.0.0.1:{port}" in response.text


def test_unsupported_rules_are_reported_once(site_root: Path) -> None:
    notes = load_site(site_root).unsupported()
    assert notes == ["public/_redirects:19: /geo uses Country condition; the local edge skips it"]


def test_dev_site_points_the_api_rule_at_the_local_backend(site_root: Path) -> None:
    site = dev_ops.site_for(site_root, "http://127.0.0.1:5555")
    first = site.redirects[0]
    assert (first.source, first.to, first.status, first.force) == (
        "/api/*",
        "http://127.0.0.1:5555/api/:splat",
        200,
        True,
    )
    assert not (site_root / "public" / "_redirects").read_text().startswith("# BEGIN")  # nothing written


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/a/*", "/a", True),
        ("/a/*", "/a/b/c", True),
        ("/a/*", "/ab", False),
        ("/:x/y", "/q/y", True),
        ("/:x/y", "/q/r/y", False),
        ("/", "/", True),
        ("/", "/x", False),
        ("/*", "/anything/at/all", True),
        # As Netlify's matcher: a placeholder may follow "//", a literal may not; one trailing slash.
        ("/news/:y/:s", "/news//2024//x", True),
        ("/news/:y/:s", "/news/2024/x/", True),
        ("/news/:y/:s", "/news/2024/x//", False),
        ("/lit/a", "/lit//a", False),
        ("/a/*", "//a/x", False),
    ],
)
def test_path_patterns(pattern: str, path: str, matches: bool) -> None:
    assert (PathPattern.compile(pattern).match(RequestPath.parse(path)) is not None) is matches


def test_redirects_file_syntax_problems_name_the_line() -> None:
    problems: list[Problem] = []
    rules = parse_redirects_file("/ok /fine\n/broken\n", "public/_redirects", problems)
    assert len(rules) == 1
    assert [str(p) for p in problems] == [
        "public/_redirects:2: rule for /broken has no destination; write `/broken /new-path 301`"
    ]


def test_a_busy_port_is_a_clear_error(site_root: Path) -> None:
    from cnd_toolkit.errors import OpsError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with (
            pytest.raises(OpsError, match=f"cannot listen on 127.0.0.1:{port}.*--port"),
            serve_in_thread(load_site(site_root), port=port),
        ):
            pass


def test_redirects_file_comments_and_forward_rules() -> None:
    text = "# a comment\n/a /b#frag 301 # trailing comment\n/app/* 200!\n"
    problems: list[Problem] = []
    rules = parse_redirects_file(text, "public/_redirects", problems)
    assert problems == []
    assert [(r.source, r.to, r.status, r.force) for r in rules] == [
        ("/a", "/b#frag", 301, False),
        ("/app/*", "/app/:splat", 200, True),
    ]


# Fidelity: how Netlify treats what no table row spells out. The router is pure, so these ask it
# directly what it would do; the differential run against netlify dev (in the template's own
# tests) covers the same classes with generated requests.


@pytest.fixture(scope="module")
def router(site_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Router:
    root = tmp_path_factory.mktemp("router")
    shutil.copytree(site_root, root, dirs_exist_ok=True)
    public = root / "public"
    (public / "page.html").write_text("page file")
    (public / "docs").mkdir(exist_ok=True)
    (public / "docs" / "guide.html").write_text("guide file")
    rules = (public / "_redirects").read_text()
    (public / "_redirects").write_text("/page/ /not-used 301\n/query q=:v /to/:v 302\n" + rules)
    config = dev_ops.site_for(root, "http://127.0.0.1:9")
    assert [r.source for r in config.redirects][:3] == ["/api/*", "/page/", "/query"]
    return Router(config)


@pytest.mark.parametrize(
    ("target", "kind", "where"),
    [
        ("/api/../about", "static", "about.html"),
        ("/api/%2e%2e/about", "static", "about.html"),
        ("/api/.%2E/.secret", "not-found", "404.html"),
        ("/api/%2E%2E/%2e%2e/../about", "static", "about.html"),
        ("/assets/./site.css", "static", "site.css"),
        ("/api/a/./b/../c", "proxy", "http://127.0.0.1:9/api/a/c"),
        ("/api/a%20b/c?x=%2F", "proxy", "http://127.0.0.1:9/api/a%20b/c?x=%2F"),
        ("/api/greeting%3Fname=evil", "proxy", "http://127.0.0.1:9/api/greeting%3Fname=evil"),
        ("/api/x?name=%23tag", "proxy", "http://127.0.0.1:9/api/x?name=%23tag"),
        ("/api/a%2Fb", "proxy", "http://127.0.0.1:9/api/a%2Fb"),
        ("/api/caf\u00e9", "proxy", "http://127.0.0.1:9/api/caf%C3%A9"),
        ("/docs/a%20b", "redirect", "/manual/a%20b"),
        ("/docs/a%2Fb%3Fc", "redirect", "/manual/a%2Fb%3Fc"),
        ("/query?q=cats%20dogs", "redirect", "/to/cats+dogs?q=cats%20dogs"),
        ("/query?q=a/b&q=c/d", "redirect", "/to/c%2Fd?q=a/b&q=c/d"),
        ("/query?q=caf%C3%A9", "redirect", "/to/caf%C3%A9?q=caf%C3%A9"),
        ("/query?%71=x", "not-found", "404.html"),  # keys match as sent, as in Netlify's matcher
        ("/query?q=x&q", "redirect", "/to/x?q=x&q"),  # a bare key sets nothing
        ("/docs//a%20b", "redirect", "/manual//a%20b"),  # a splat keeps what was sent
        ("/about/", "static", "about.html"),
        ("/docs/guide/", "static", "guide.html"),
        ("/page/", "static", "page.html"),
        ("/page", "static", "page.html"),
    ],
)
def test_paths_as_netlify_resolves_them(router: Router, target: str, kind: str, where: str) -> None:
    decision = router.route("GET", target)
    assert decision.kind == kind
    if kind in ("proxy", "redirect"):
        assert decision.location == where
    else:
        assert decision.file is not None and decision.file.name == where


def test_static_files_answer_get_and_head_only(http: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        for path in ("/", "/about", "/missing", "/spa/x"):
            response = http.request(method, path, content=b"x")
            assert response.status_code == 405, (method, path)
            assert response.text == "Method Not Allowed\n"
            assert response.headers["X-Frame-Options"] == "DENY"  # header rules still apply
    assert http.head("/about").status_code == 200
    assert http.post("/old").status_code == 301  # redirects answer every method
    assert http.post("/api/echo", json={"a": 1}).json()["echo"] == {"a": 1}  # proxies pass every method


def test_redirects_carry_a_body_naming_the_target(http: httpx.Client) -> None:
    for path, location in (("/old", "/new"), ("/temp", "/elsewhere"), ("/docs/a%20b", "/manual/a%20b")):
        response = http.get(path)
        assert response.headers["Location"] == location
        assert response.text == f"Redirecting to {location}\n"


def test_locations_are_always_url_safe(router: Router) -> None:
    rng = random.Random(6)
    alphabet = ["a", "/", "%20", " ", "\u00e9", "%C3%A9", "%2F", "%3F", "?", "&", "=", "%", "..", ".", "+", "#", "\x7f"]
    for _ in range(2000):
        target = "/" + rng.choice(["docs/", "query?q=", "api/", "old/", ""]) + "".join(rng.choices(alphabet, k=8))
        decision = router.route("GET", target)
        if decision.kind in ("redirect", "proxy"):
            assert all(33 <= ord(c) < 127 for c in decision.location), (target, decision.location)
        if decision.kind == "proxy":
            assert decision.location.startswith("http://127.0.0.1:9/api/"), target
            proxied_path = decision.location.partition("?")[0]
            assert "/../" not in proxied_path and "/./" not in proxied_path, target


# Routes short paths and 100 times longer ones through the site in argv[1] (one the rule refuses,
# one it matches) and prints how many times as long the longer ones took (the best of several
# tries each: load only adds time).
GROWTH = """
import sys, time
from pathlib import Path
from cnd_toolkit.edge.routing import Router
from cnd_toolkit.edge.server import load_site

router = Router(load_site(Path(sys.argv[1])))

def cost(length):
    best = float("inf")
    for _ in range(30):
        started = time.perf_counter()
        assert router.route("GET", "/" + "a" * length).headers == []
        assert router.route("GET", "/" + "a" * length + "b").headers == [("X-Slow", "no")]
        best = min(best, time.perf_counter() - started)
    return best

print(cost(50_000) / cost(500))
"""


def test_wildcards_match_in_linear_time(tmp_path: Path) -> None:
    """A rule like /*a*a*a*...ab once took exponential time per request, stalling the whole edge."""
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "_headers").write_text("/*a*a*a*a*a*a*a*a*a*a*a*ab\n  X-Slow: no\n")
    router = Router(load_site(tmp_path))
    assert router.route("GET", "/" + "a" * 50 + "b").headers == [("X-Slow", "no")]
    # Linear: a path 100 times as long costs less than 100 times as much (the request's fixed
    # cost makes it far less: about 3 times). Quadratic matching tends to 10,000 times, and
    # backtracking never ends: a child process does the routing so that a stuck one can be stopped.
    try:
        done = subprocess.run(
            [sys.executable, "-c", GROWTH, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("routing 50,000-character paths against the rule did not end in 120 s")
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 100


def test_wildcards_agree_with_a_regex() -> None:
    import re

    from cnd_toolkit.netlify.urls import _glob

    rng = random.Random(7)
    for _ in range(5000):
        part = "".join(rng.choices("ab*", k=rng.randint(0, 7)))
        text = "".join(rng.choices("abAB", k=rng.randint(0, 8)))
        regex = ".*".join(re.escape(piece) for piece in part.split("*"))
        assert _glob(part, text, True) == (re.fullmatch(regex, text) is not None), (part, text)
        assert _glob(part, text, False) == (re.fullmatch(regex, text, re.IGNORECASE) is not None), (part, text)


def raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("request_line", "status", "body"),
    [
        ("GET /missing%0Aline", "404", b"custom not found"),  # "." in a route stops at a newline
        ("GET /old%0A", "404", b"custom not found"),
        ("GET /docs/a%0Ab", "301", b"Redirecting to /manual/a%0Ab"),
        ("OPTIONS *", "400", b"Bad Request"),
        ("CONNECT example.com:443", "400", b"Bad Request"),
        ("GET http://edge.test?x=1", "200", b"<h1>home</h1>"),  # the absolute form, no path
        ("GET http://edge.test/about", "200", b"about page"),
        ("GET /api/..\\..\\healthz", "400", b"Bad Request"),  # browsers make \\ a /; servers do not
        ("GET /assets\\..\\about", "400", b"Bad Request"),
    ],
)
def test_every_request_line_is_answered_by_the_edge(
    edge: RunningEdge, request_line: str, status: str, body: bytes
) -> None:
    answer = raw_exchange(
        edge.port, f"{request_line} HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n".encode()
    )
    assert answer.split(b" ")[1] == status.encode(), answer[:200]
    assert body in answer
    if status == "404":
        assert b"X-Frame-Options: DENY" in answer  # the site's rules, not a bare 404 from the framework


def test_rules_above_the_generated_block_keep_their_place(tmp_path: Path) -> None:
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "index.html").write_text("home")
    (tmp_path / "public" / "_redirects").write_text(
        "/api/health  /index.html  200!\n"
        f"{redirects.BEGIN}\n/api/*  https://api.example.com/api/:splat  200!\n{redirects.END}\n"
        "/api/late  /index.html  200!\n"
    )
    router = Router(dev_ops.site_for(tmp_path, "http://127.0.0.1:9"))
    assert router.route("GET", "/api/health").kind == "rewrite"  # as in production: first match
    assert router.route("GET", "/api/x").location == "http://127.0.0.1:9/api/x"
    assert router.route("GET", "/api/late").kind == "proxy"
    origins = [str(rule.origin) for rule in router.rules]
    assert origins == ["public/_redirects:1", "public/_redirects:3", "public/_redirects:5"]


def test_inv_dev_reads_the_generated_blocks_as_the_build_step_writes_them(tmp_path: Path) -> None:
    """Two blocks (an older template's and a new one) with a rule between: both keep the rule."""
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "index.html").write_text("home")
    text = (
        f"{redirects.BEGIN}\n/api/*  https://a.example/api/:splat  200!\n{redirects.END}\n"
        "/api/between  /index.html  200!\n"
        "# BEGIN ops/redirects.py\n/api/*  https://b.example/api/:splat  200!\n# END ops/redirects.py\n"
    )
    (tmp_path / "public" / "_redirects").write_text(text)
    local = [(r.source, r.to) for r in dev_ops.site_for(tmp_path, "http://127.0.0.1:9").redirects]
    built = tmp_path / "built"
    (built / "public").mkdir(parents=True)
    (built / "public" / "_redirects").write_text(redirects.render(text, "http://127.0.0.1:9"))
    assert local == [(r.source, r.to) for r in load_site(built).redirects]
    assert local == [("/api/*", "http://127.0.0.1:9/api/:splat"), ("/api/between", "/index.html")]


def test_an_unreadable_file_is_a_404_and_a_log_line(site_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    original = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self.name == "about.html":
            raise PermissionError(13, "Permission denied")
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with serve_in_thread(load_site(site_root), on_log=lines.append) as running:
        response = httpx.get(running.url + "/about", timeout=60)
    assert response.status_code == 404
    assert any("cannot read" in line and "Permission denied" in line for line in lines)


@pytest.mark.parametrize("port", [99999, -1])
def test_a_port_out_of_range_is_a_clear_error(site_root: Path, port: int) -> None:
    from cnd_toolkit.errors import OpsError

    with (
        pytest.raises(OpsError, match=f"--port {port} is not a port"),
        serve_in_thread(load_site(site_root), port=port),
    ):
        pass


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
@pytest.mark.parametrize(("size", "status"), [(500_000, 200), (1_100_000, 413), (5_000_000, 413)])
def test_bodies_through_the_edge_get_the_apps_limit(http: httpx.Client, size: int, status: int, chunked: bool) -> None:
    """The app's 1 MiB limit holds for chunked bodies too, end to end through the edge and gunicorn,
    and a 413 arrives as a 413 (not a 502 from a reset) however much of the body was still coming."""
    body = json.dumps({"a": "x" * size}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    content = chunks() if chunked else body
    response = http.post("/api/echo", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"]["status"] == 413 if status == 413 else response.json()["bytes"] == len(body)
