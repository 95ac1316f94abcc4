"""The local Netlify's CDN (tests/netlify_api.py) against what Netlify documents.

The deploy tests trust it to serve a deploy the way Netlify would, so its matcher is held here
to the examples of Netlify's docs (redirects and rewrites, custom headers, custom 404 pages):
precedence, shadowing and force, splats, placeholders, 404 rules and pages, multi-value headers.
Most cases ask :class:`Served` directly; the rest go through a real deploy, the real client
and a real origin (this project's API) behind a proxy rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from cnd_toolkit.netlify import api, publish

from tests.netlify_api import LocalNetlify, Served

TOKEN = "nfp_local_cdn_token_0123456789abcdef"
PAGES = {
    "index.html": b"<h1>home</h1>",
    "about.html": b"about page",
    "contact/index.html": b"contact index",
    "store-closed.html": b"the store is closed",
    "app/file.js": b"console.log(1)",
    "404.html": b"custom not found",
    "data.json": b"{}",
    "favicon.svg": b"<svg/>",
}


def site(redirects: str = "", headers: str = "", toml: str = "", pages: dict[str, bytes] = PAGES) -> Served:
    files = dict(pages)
    for name, text in (("_redirects", redirects), ("_headers", headers), ("netlify.toml", toml)):
        if text:
            files[name] = text.encode()
    return Served.of(files)


def outcome(served: Served, target: str, method: str = "GET") -> tuple[int, str]:
    """(status, Location or the file served, or "" for a plain 404)."""
    answer = served.answer(method, target)
    return answer.status, answer.location or answer.file


# Netlify's docs, "Redirects and rewrites" and "Rewrites and proxies": (rules, request, outcome).
DOCUMENTED = [
    # the default status is 301; 302 as given
    ("/home / \n/my-redirect / 302\n", "/home", (301, "/")),
    ("/home / \n/my-redirect / 302\n", "/my-redirect", (302, "/")),
    # splats: everything after the prefix, as :splat; the prefix alone too
    ("/news/*  /blog/:splat\n", "/news/2004/01/10/my-story", (301, "/blog/2004/01/10/my-story")),
    ("/news/*  /blog/:splat\n", "/news", (301, "/blog/")),
    # placeholders: one segment each
    (
        "/news/:year/:month/:date/:slug  /blog/:year/:month/:date/:slug\n",
        "/news/2004/02/12/my-story",
        (301, "/blog/2004/02/12/my-story"),
    ),
    ("/news/:year/:month/:date/:slug  /blog/:year/:month/:date/:slug\n", "/news/2004/02/12", (404, "404.html")),
    # a rewrite serves the target under the requested URL; a 404 rule serves it with 404
    ("/pass-through /index.html 200\n", "/pass-through", (200, "index.html")),
    ("/ecommerce /store-closed 404\n", "/ecommerce", (404, "store-closed.html")),
    # the first matching rule wins
    (
        "/blog/my-old-title /blog/my-new-title 301\n/blog/my-old-title /blog/an-even-better-title 301\n",
        "/blog/my-old-title",
        (301, "/blog/my-new-title"),
    ),
    # shadowing: a file at the path wins over a rule without !, not over one with it
    ("/app/*  /index.html  200\n", "/app/file.js", (200, "app/file.js")),
    ("/app/*  /index.html  200\n", "/app/anything/else", (200, "index.html")),
    ("/app/*  /index.html  200!\n", "/app/file.js", (200, "index.html")),
    ("/about /elsewhere 301\n", "/about", (200, "about.html")),
    ("/about /elsewhere 301!\n", "/about", (301, "/elsewhere")),
    # the single-page app rule: every path the site has no file for is index.html
    ("/*    /index.html   200\n", "/some/client/route", (200, "index.html")),
    ("/*    /index.html   200\n", "/about", (200, "about.html")),
    # query strings are passed on
    ("/old /new 301\n", "/old?utm=x&y=1", (301, "/new?utm=x&y=1")),
    # comments, and a trailing slash matching either way
    ("# moved\n/old/ /new 301 # since 2024\n", "/old", (301, "/new")),
    ("# moved\n/old/ /new 301 # since 2024\n", "/old/", (301, "/new")),
    # a proxy: a 200 rule to another origin
    (
        "/api/*  https://api.example.com/:splat  200\n",
        "/api/v1/items?page=2",
        (200, "https://api.example.com/v1/items?page=2"),
    ),
    # no rule, no file: the custom 404 page
    ("", "/missing", (404, "404.html")),
    # static files: index files and pretty URLs; dot segments resolved first
    ("", "/", (200, "index.html")),
    ("", "/about", (200, "about.html")),
    ("", "/contact", (200, "contact/index.html")),
    ("", "/contact/", (200, "contact/index.html")),
    ("", "/app/%2e%2e/about", (200, "about.html")),
    ("", "/store%2Dclosed", (200, "store-closed.html")),
]


@pytest.mark.parametrize(("rules", "target", "expected"), DOCUMENTED, ids=[f"{r[1]}:{r[0][:24]}" for r in DOCUMENTED])
def test_redirects_as_netlify_documents_them(rules: str, target: str, expected: tuple[int, str]) -> None:
    assert outcome(site(rules), target) == expected
    # The same rules from netlify.toml's [[redirects]] behave the same (each `from to status[!]`).
    toml = ""
    for line in rules.split("\n"):
        tokens = line.split("#")[0].split()
        if tokens:
            status = tokens[2] if len(tokens) > 2 else "301"
            force = "true" if status.endswith("!") else "false"
            toml += f'[[redirects]]\nfrom = "{tokens[0]}"\nto = "{tokens[1]}"\n'
            toml += f"status = {status.rstrip('!')}\nforce = {force}\n"
    assert outcome(site(toml=toml), target) == expected


def test_redirects_file_rules_come_before_netlify_toml_rules() -> None:
    served = site("/order /from-file 301\n", toml='[[redirects]]\nfrom = "/order"\nto = "/from-toml"\n')
    assert outcome(served, "/order") == (301, "/from-file")
    only_toml = site("/other /x 301\n", toml='[[redirects]]\nfrom = "/order"\nto = "/from-toml"\nstatus = 302\n')
    assert outcome(only_toml, "/order") == (302, "/from-toml")


def test_a_custom_404_page_only_when_the_deploy_has_one() -> None:
    assert outcome(site(), "/nothing") == (404, "404.html")
    bare = site(pages={"index.html": b"home"})
    assert outcome(bare, "/nothing") == (404, "")
    assert outcome(bare, "/") == (200, "index.html")


def test_what_this_fake_does_not_implement_is_listed_and_not_applied() -> None:
    served = site(
        "/store id=:id /blog/:id 301\n/geo /us 302 Country=us\n/app/* 200\n/ok /fine 301\n",
        toml='[[redirects]]\nfrom = "/q"\nto = "/r"\nquery = {a = ":a"}\n',
    )
    assert [rule.source for rule in served.redirects] == ["/ok"]
    assert [line.split(":")[0] for line in served.skipped] == ["_redirects"] * 3 + ["netlify.toml [[redirects]] #1"]
    assert outcome(served, "/store?id=x") == (404, "404.html")
    # Empty tables say nothing (netlify-cli's resolved config writes every rule with them).
    empty = site(toml='[[redirects]]\nfrom = "/q"\nto = "/r"\nquery = {}\nconditions = {}\nheaders = {}\n')
    assert (empty.skipped, outcome(empty, "/q")) == ([], (301, "/r"))


HEADERS = """# Netlify's docs, "Custom headers"
/*
  X-Frame-Options: DENY
  X-XSS-Protection: 1; mode=block
  cache-control: max-age=0
  cache-control: no-cache
/templates/index.html
  X-Frame-Options: SAMEORIGIN
/assets/*
  Cache-Control: public, max-age=31536000
"""


def test_custom_headers_match_the_path_join_repeated_names_and_a_later_rule_wins() -> None:
    served = site(headers=HEADERS, toml='[[headers]]\nfor = "/blog/:slug"\n[headers.values]\nX-Blog = ["a", "b"]\n')
    everywhere = {
        "X-Frame-Options": "DENY",
        "X-XSS-Protection": "1; mode=block",
        "cache-control": "max-age=0, no-cache",
    }
    assert dict(served.answer("GET", "/").headers) == everywhere
    assert dict(served.answer("GET", "/templates/index.html").headers)["X-Frame-Options"] == "SAMEORIGIN"
    assert dict(served.answer("GET", "/assets").headers)["Cache-Control"] == "public, max-age=31536000"
    assert dict(served.answer("GET", "/assets/img/a.png").headers)["Cache-Control"] == "public, max-age=31536000"
    assert dict(served.answer("GET", "/blog/first").headers)["X-Blog"] == "a, b"
    assert "X-Blog" not in dict(served.answer("GET", "/blog/first/second").headers)
    # On static answers, rewrites and 404 pages (by the requested path); never on redirects or proxies.
    rules = site("/moved /about 301\n/api/* https://api.example.com/:splat 200!\n/spa/* /index.html 200\n", HEADERS)
    assert rules.answer("GET", "/moved").headers == ()
    assert rules.answer("GET", "/api/x").headers == ()
    assert dict(rules.answer("GET", "/spa/x").headers)["X-Frame-Options"] == "DENY"
    assert dict(rules.answer("GET", "/missing").headers)["X-Frame-Options"] == "DENY"


@pytest.fixture
def netlify() -> Iterator[LocalNetlify]:
    with LocalNetlify(TOKEN) as server:
        yield server


def ship(netlify: LocalNetlify, files: dict[str, bytes]) -> str:
    """A ready draft of ``files`` through the real client; its URL."""
    digests = {path: hashlib.sha1(body).hexdigest() for path, body in files.items()}
    with api.NetlifyClient(TOKEN, netlify.api_url, sleep=lambda s: None) as client:
        done = publish.deploy_draft(
            client, "site-1", publish.SiteFiles(files, digests), poll_interval=0, sleep=lambda s: None
        )
    return done.deploy.url


def test_a_deploy_is_served_from_its_own_files_with_netlifys_content_types(netlify: LocalNetlify) -> None:
    url = ship(netlify, {**PAGES, "_redirects": b"/old /new 301\n", "_headers": b"/*\n  X-Test: yes\n"})
    with httpx.Client(base_url=url, timeout=60) as http:
        types = {
            path: http.get(path).headers["Content-Type"]
            for path in ("/", "/app/file.js", "/data.json", "/favicon.svg", "/_redirects")
        }
        assert types == {
            "/": "text/html; charset=utf-8",
            "/app/file.js": "application/javascript; charset=utf-8",
            "/data.json": "application/json; charset=utf-8",
            "/favicon.svg": "image/svg+xml",
            "/_redirects": "application/octet-stream",
        }
        # What a deploy uploads is public: its rules files too.
        assert http.get("/_redirects").content == b"/old /new 301\n"
        assert http.get("/_headers").headers["X-Test"] == "yes"
        moved = http.get("/old")
        assert (moved.status_code, moved.headers["Location"], moved.headers.get("X-Test")) == (301, "/new", None)
        missing = http.get("/nowhere")
        assert (missing.status_code, missing.content, missing.headers["X-Test"]) == (404, b"custom not found", "yes")
        assert http.post("/").status_code == 405
        assert http.head("/").status_code == 200
    # Another deploy of the same site serves its own files, not these.
    other = ship(netlify, {"index.html": b"other"})
    assert httpx.get(other, timeout=60).content == b"other"
    assert httpx.get(f"{other}about", timeout=60).status_code == 404


def test_a_proxy_rule_forwards_method_headers_and_body_and_returns_the_origins_answer(
    netlify: LocalNetlify, api_origin: str
) -> None:
    files = {
        **PAGES,
        "_redirects": f"/api/*  {api_origin}/api/:splat  200!\n".encode(),
        "_headers": b"/*\n  X-Frame-Options: DENY\n",
    }
    url = ship(netlify, files)
    payload = {"items": ["x" * 100] * 50, "text": "caf\u00e9"}
    via = httpx.post(f"{url}api/echo", json=payload, headers={"X-Request-ID": "proxied-1"}, timeout=60)
    direct = httpx.post(f"{api_origin}/api/echo", json=payload, headers={"X-Request-ID": "direct-1"}, timeout=60)
    assert via.status_code == direct.status_code == 200
    assert via.json() == direct.json() and via.json()["echo"] == payload
    assert via.headers["X-Request-ID"] == "proxied-1"  # the client's header reached the origin and came back
    assert via.headers.get("X-Frame-Options") == direct.headers.get("X-Frame-Options")  # the origin's, not _headers'
    refused = httpx.get(f"{url}api/echo", timeout=60)  # the origin's own status, headers and body come back
    assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"
    assert refused.headers["Allow"] == httpx.get(f"{api_origin}/api/echo", timeout=60).headers["Allow"]
    assert httpx.get(f"{url}api/version?x=1", timeout=60).json()["revision"] == "local-origin"


def test_a_root_netlify_toml_that_is_not_toml_fails_the_deploy(netlify: LocalNetlify) -> None:
    with pytest.raises(api.NetlifyError, match=r"Failed to parse configuration: netlify.toml"):
        ship(netlify, {"index.html": b"x", "netlify.toml": b"[[redirects]\n"})
