"""Netlify's redirect and header rules: parse ``_redirects``, ``_headers`` and ``netlify.toml``,
and match requests against them with Netlify's documented semantics.

Order: rules from ``_redirects`` come before those in ``netlify.toml``, and the first rule that
matches wins. ``from`` may end in a splat (``/*`` -> ``:splat``) and use named placeholders
(``/:year/:slug``); query conditions bind placeholders too. Paths match with or without a
trailing slash. The request's query string passes on to redirect and rewrite targets.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
VALID_STATUSES = {200, 404, 410, 451} | REDIRECT_STATUSES
# Conditions Netlify evaluates on its CDN from data a local server does not have.
UNSUPPORTED_CONDITIONS = ("Country", "Language", "Role", "Cookie")


@dataclass(frozen=True)
class Origin:
    """Where a rule came from, for messages: ``public/_redirects:3``."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Redirect:
    origin: Origin
    source: str  # the ``from`` path pattern
    to: str
    status: int = 301
    force: bool = False
    query: dict[str, str] = field(default_factory=dict)
    conditions: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # sent to a proxy target
    signed: str = ""
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @property
    def is_proxy(self) -> bool:
        return self.to.startswith(("http://", "https://")) and self.status not in REDIRECT_STATUSES

    @property
    def unsupported(self) -> list[str]:
        """What about this rule a local edge cannot evaluate (reported once at start-up)."""
        found = [f"{name} condition" for name in self.conditions]
        if self.signed:
            found.append("signed proxy")
        return found

    def pattern(self) -> re.Pattern[str]:
        if self._pattern is None:
            self._pattern = compile_path(self.source)
        return self._pattern

    def match(self, path: str, query: Mapping[str, str]) -> dict[str, str] | None:
        """The placeholder values if this rule applies to ``path`` and ``query``, else None."""
        if self.unsupported and self.conditions:
            return None  # a condition we cannot evaluate is treated as not met, like a visitor outside it
        found = self.pattern().match(normalise(path))
        if found is None:
            return None
        values = {k: v or "" for k, v in found.groupdict().items()}
        for key, expected in self.query.items():
            if key not in query:
                return None
            if expected.startswith(":"):
                values[expected[1:]] = query[key]
            elif query[key] != expected:
                return None
        return values

    def target(self, values: Mapping[str, str], query_string: str) -> str:
        """``to`` with placeholders filled and the request's query string passed on."""
        result = self.to
        # Longest names first, so :splat does not eat the start of :splatter.
        for name in sorted(values, key=len, reverse=True):
            result = result.replace(f":{name}", values[name])
        # Netlify (and netlify dev) pass the request's query string on, even when it was matched.
        if query_string and "?" not in result:
            result = f"{result}?{query_string}"
        return result


@dataclass
class HeaderRule:
    origin: Origin
    source: str  # the ``for`` path pattern
    values: dict[str, list[str]]
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def matches(self, path: str) -> bool:
        if self._pattern is None:
            self._pattern = compile_path(self.source)
        return self._pattern.match(normalise(path)) is not None


@dataclass
class Problem:
    """Something wrong in a rules file: where, and what to do."""

    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


def normalise(path: str) -> str:
    """Netlify matches ``/about`` and ``/about/`` alike."""
    return path.rstrip("/") or "/"


def compile_path(pattern: str) -> re.Pattern[str]:
    """A regex for a ``from``/``for`` path: ``*`` (a splat, last) and ``:name`` segments."""
    pattern = normalise(pattern)
    parts: list[str] = []
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "*" and last:
            # "/blog/*" matches "/blog" and everything below it.
            if parts and parts[-1] == "/":
                parts.pop()
            parts.append("(?:/(?P<splat>.*))?")
            continue
        if index:
            parts.append("/")
        if segment.startswith(":") and len(segment) > 1:
            parts.append(f"(?P<{re.sub(r'[^A-Za-z0-9_]', '_', segment[1:])}>[^/]+)")
        elif "*" in segment:
            parts.append(".*".join(re.escape(piece) for piece in segment.split("*")))
        else:
            parts.append(re.escape(segment))
    body = "".join(parts)
    return re.compile(f"^{body or '/'}/?$" if body != "/" else "^/$")


def _status(token: str) -> tuple[int, bool] | None:
    match = re.fullmatch(r"(\d{3})(!?)", token)
    return (int(match.group(1)), bool(match.group(2))) if match else None


def parse_redirects_file(text: str, file: str) -> tuple[list[Redirect], list[Problem]]:
    """Parse Netlify's ``_redirects`` format: ``from [key=value...] to [status[!]] [Cond=a,b...]``."""
    rules: list[Redirect] = []
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        # A token starting with # ends the line (as in Netlify's parser); "#" inside a URL stays.
        comment = next((i for i, token in enumerate(tokens) if token.startswith("#")), len(tokens))
        tokens = tokens[:comment]
        if not tokens:
            continue
        origin = Origin(file, number)
        source, rest = tokens[0], tokens[1:]
        if rest and _status(rest[0]) and source.endswith("/*"):
            rest.insert(0, source[:-1] + ":splat")  # "/app/* 200": a forward rule to the same path
        query: dict[str, str] = {}
        while rest and "=" in rest[0] and not rest[0].startswith(("/", "http://", "https://")):
            key, _, value = rest.pop(0).partition("=")
            query[key] = value
        if not rest:
            problems.append(Problem(origin, f"rule for {source} has no destination; write `{source} /new-path 301`"))
            continue
        to = rest.pop(0)
        status, force = 301, False
        if rest and _status(rest[0]):
            status, force = _status(rest.pop(0))  # type: ignore[misc]
        conditions: dict[str, list[str]] = {}
        for token in rest:
            key, sep, value = token.partition("=")
            if not sep:
                problems.append(
                    Problem(origin, f"unexpected {token!r} after the destination; expected a status or Key=value")
                )
                continue
            conditions[key] = value.split(",")
        rules.append(Redirect(origin, source, to, status, force, query, conditions))
    return rules, problems


def parse_headers_file(text: str, file: str) -> tuple[list[HeaderRule], list[Problem]]:
    """Parse ``_headers``: a path line, then indented ``Name: value`` lines."""
    rules: list[HeaderRule] = []
    problems: list[Problem] = []
    current: HeaderRule | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        origin = Origin(file, number)
        if not raw[0].isspace():
            current = HeaderRule(origin, raw.strip(), {})
            rules.append(current)
            continue
        if current is None:
            problems.append(Problem(origin, "a header line before any path; start with a path such as `/*`"))
            continue
        name, sep, value = raw.strip().partition(":")
        if not sep or not name.strip():
            problems.append(Problem(origin, f"{raw.strip()!r} is not `Name: value`"))
            continue
        current.values.setdefault(name.strip(), []).append(value.strip())
    return rules, problems


def toml_table_lines(text: str, table: str) -> list[int]:
    """Line numbers where each ``[[table]]`` starts (tomllib keeps no positions)."""
    return [n for n, line in enumerate(text.splitlines(), start=1) if line.strip() == f"[[{table}]]"]


def parse_toml_rules(text: str, file: str) -> tuple[list[Redirect], list[HeaderRule]]:
    """The ``[[redirects]]`` and ``[[headers]]`` of a netlify.toml (raises tomllib.TOMLDecodeError)."""
    data = tomllib.loads(text)
    redirect_lines = toml_table_lines(text, "redirects")
    header_lines = toml_table_lines(text, "headers")
    redirects = []
    for index, entry in enumerate(data.get("redirects", [])):
        origin = Origin(file, redirect_lines[index] if index < len(redirect_lines) else 0)
        redirects.append(
            Redirect(
                origin,
                str(entry.get("from", "")),
                str(entry.get("to", "")),
                int(entry.get("status", 301)),
                bool(entry.get("force", False)),
                {str(k): str(v) for k, v in (entry.get("query") or {}).items()},
                {
                    str(k): [str(x) for x in (v if isinstance(v, list) else [v])]
                    for k, v in (entry.get("conditions") or {}).items()
                },
                {str(k): str(v) for k, v in (entry.get("headers") or {}).items()},
                str(entry.get("signed", "")),
            )
        )
    headers = []
    for index, entry in enumerate(data.get("headers", [])):
        origin = Origin(file, header_lines[index] if index < len(header_lines) else 0)
        values = {
            str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)]
            for k, v in (entry.get("values") or {}).items()
        }
        headers.append(HeaderRule(origin, str(entry.get("for", "")), values))
    return redirects, headers


@dataclass
class Site:
    """Everything the edge needs: the publish directory and the rules in Netlify's order."""

    root: Path
    publish: Path
    redirects: list[Redirect]
    headers: list[HeaderRule]
    problems: list[Problem]

    def unsupported(self) -> list[str]:
        return [
            f"{rule.origin}: {rule.source} uses {', '.join(rule.unsupported)}; the local edge skips it"
            for rule in self.redirects
            if rule.unsupported
        ]


def publish_dir(root: Path, toml_text: str | None = None) -> Path:
    """The publish directory netlify.toml names (``public`` when it names none)."""
    if toml_text is None:
        toml_path = root / "netlify.toml"
        toml_text = toml_path.read_text() if toml_path.is_file() else ""
    config = tomllib.loads(toml_text) if toml_text else {}
    return root / str(config.get("build", {}).get("publish", "public"))


def load_site(root: Path, redirects_text: str | None = None) -> Site:
    """Read netlify.toml, ``_redirects`` and ``_headers`` of the project at ``root``.

    ``redirects_text`` stands in for the ``_redirects`` file: ``inv dev`` passes the file with
    the API rule rendered for the local backend, without writing it.
    """
    toml_path = root / "netlify.toml"
    toml_text = toml_path.read_text() if toml_path.is_file() else ""
    publish = publish_dir(root, toml_text)
    redirects: list[Redirect] = []
    headers: list[HeaderRule] = []
    problems: list[Problem] = []
    redirects_file = publish / "_redirects"
    if redirects_text is None and redirects_file.is_file():
        redirects_text = redirects_file.read_text()
    if redirects_text:
        rules, found = parse_redirects_file(redirects_text, _relative(redirects_file, root))
        redirects += rules
        problems += found
    headers_file = publish / "_headers"
    if headers_file.is_file():
        header_rules, found = parse_headers_file(headers_file.read_text(), _relative(headers_file, root))
        headers += header_rules
        problems += found
    if toml_text:
        toml_redirects, toml_headers = parse_toml_rules(toml_text, "netlify.toml")
        redirects += toml_redirects
        headers += toml_headers
    return Site(root, publish, redirects, headers, problems)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
