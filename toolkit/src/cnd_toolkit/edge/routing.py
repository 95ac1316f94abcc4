"""What Netlify's CDN does with one request: pure decisions, no I/O beyond looking up files.

The order is Netlify's: dot segments (encoded ones too) are resolved first, so a path that
resolves outside a proxied prefix never reaches the backend; then the rules are tried in order
(``_redirects`` before netlify.toml), a rule without ``force`` giving way to an existing file
(shadowing); then the file itself, with pretty URLs; then the site's 404 page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cnd_toolkit.netlify.check import deployed_name
from cnd_toolkit.netlify.config import NetlifyConfig
from cnd_toolkit.netlify.rules import Redirect
from cnd_toolkit.netlify.urls import RequestPath, parse_query, split_target

STATIC_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Decision:
    kind: str  # static | rewrite | redirect | proxy | not-found | method-not-allowed | bad-request
    status: int
    path: RequestPath
    file: Path | None = None  # the file to send (static, rewrite, not-found)
    location: str = ""  # Location of a redirect, or the URL a proxy forwards to
    rule: Redirect | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)  # header rules for the path

    @property
    def detail(self) -> str:
        where = f" ({self.rule.origin})" if self.rule else ""
        return f"-> {self.location}{where}" if self.location else where.strip()


class Router:
    """Routes requests for one site the way Netlify would."""

    def __init__(self, config: NetlifyConfig) -> None:
        self.config = config
        self.publish = config.publish.resolve()
        self.rules = [rule for rule in config.redirects if not rule.unsupported]

    def file_for(self, path: RequestPath) -> Path | None:
        """The published file for a path (index files, pretty URLs), never outside publish/.

        What a deploy uploads is what it serves: ``_redirects`` and ``_headers`` too (public files on
        Netlify after a deploy), dotfiles and ``__MACOSX`` never (Netlify's deploy filter)."""
        names = [name for name in path.decoded if name]
        if not all(map(deployed_name, names)) or any(c in name for name in names for c in "/\\\x00"):
            return None  # not deployed, or a name no file can have
        base = self.publish.joinpath(*names)
        if not names:
            candidates = [base / "index.html"]
        elif path.trailing_slash:
            # "/about/" is about/index.html, else about.html (Netlify serves both under either URL).
            candidates = [base / "index.html", base.with_name(base.name + ".html")]
        else:
            candidates = [base, base.with_name(base.name + ".html"), base / "index.html"]
        for candidate in candidates:
            try:
                if not candidate.is_file():
                    continue
                real = candidate.resolve()
            except (OSError, ValueError):
                continue
            if real == self.publish or self.publish in real.parents:
                return real
        return None

    def header_values(self, path: RequestPath) -> list[tuple[str, str]]:
        """Header rules for a path: every matching rule applies, a later value replaces an earlier."""
        values: dict[str, tuple[str, str]] = {}
        for rule in self.config.headers:
            if rule.matches(path):
                for name, value in rule.values.items():
                    values[name.lower()] = (name, value)
        return list(values.values())

    def route(self, method: str, raw_target: str) -> Decision:
        raw_path, raw_query = split_target(raw_target)
        path = RequestPath.parse(raw_path)
        if not raw_path.startswith("/") or "\\" in raw_path:
            # Not an origin-form path, or a raw backslash, which browsers turn into "/" and
            # servers do not: "/api/..\\..\\x" must not reach the backend as /api/ anything.
            return Decision("bad-request", 400, path)
        query = parse_query(raw_query)
        file: Path | None = None
        looked = False
        for rule in self.rules:
            values = rule.match(path, query)
            if values is None:
                continue
            if not rule.force:
                if not looked:
                    file, looked = self.file_for(path), True
                if file is not None:
                    continue  # shadowing: an existing file wins over a rule without force (!)
            target = rule.target(values, raw_query)
            if rule.is_redirect:
                return Decision("redirect", rule.status, path, location=target, rule=rule)
            if rule.is_proxy:
                return Decision("proxy", rule.status, path, location=target, rule=rule)
            if rule.to.startswith(("http://", "https://")):
                continue  # a 404/410 "to" another host: nothing local to serve
            rewritten = self.file_for(RequestPath.parse(split_target(target)[0]))
            return self.static(method, path, rewritten, rule.status, "rewrite", rule)
        if not looked:
            file = self.file_for(path)
        if file is None:
            return self.static(method, path, None, 404, "not-found")
        return self.static(method, path, file, 200, "static")

    def static(
        self, method: str, path: RequestPath, file: Path | None, status: int, kind: str, rule: Redirect | None = None
    ) -> Decision:
        headers = self.header_values(path)
        if method not in STATIC_METHODS:
            return Decision("method-not-allowed", 405, path, rule=rule, headers=headers)
        if file is None:
            status = 404 if status == 200 else status
            file = self.file_for(RequestPath.parse("/404.html"))
        return Decision(kind, status, path, file=file, rule=rule, headers=headers)
