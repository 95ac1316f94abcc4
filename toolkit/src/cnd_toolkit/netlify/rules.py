"""The rules of a Netlify configuration, wherever they were written: redirects (and rewrites and
proxies) and header rules, each with the ``file:line`` it came from, and the problems found.

Standard library only (it runs in Netlify's build image).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote_plus

from cnd_toolkit.errors import brief, shown
from cnd_toolkit.netlify.urls import PathPattern, RequestPath, encode_url

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
VALID_STATUSES = frozenset({200, 404, 410, 451}) | REDIRECT_STATUSES
# Conditions Netlify evaluates on its CDN from data a local server does not have.
UNSUPPORTED_CONDITIONS = ("Country", "Language", "Role", "Cookie")


@dataclass(frozen=True)
class Origin:
    """Where something came from, for messages: ``public/_redirects:3``."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Problem:
    """Something wrong in the configuration: where, what, and what to do.

    Errors make ``inv check`` fail and stop the local edge from starting; warnings are printed.
    """

    origin: Origin
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        # A message quotes the file (a key, a rule): a control character in it is shown as its escape.
        return brief(shown(f"{self.origin}: {prefix}{self.message}"))


# ---------------------------------------------------------------------------------------------
# Rules


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
    # Whether the rule names its status (Netlify's merge tells "/a /b" from "/a /b 301").
    status_given: bool = field(default=True, repr=False, compare=False)
    pattern: PathPattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.pattern = PathPattern.compile(self.source)

    @property
    def is_proxy(self) -> bool:
        return self.to.startswith(("http://", "https://")) and self.status not in REDIRECT_STATUSES

    @property
    def is_redirect(self) -> bool:
        return self.status in REDIRECT_STATUSES

    @property
    def unsupported(self) -> list[str]:
        """What about this rule a local edge cannot evaluate (reported once at start-up)."""
        found = [f"{name} condition" for name in self.conditions]
        if self.signed:
            found.append("signed proxy")
        if self.source.startswith(("http://", "https://")):
            found.append("a domain in `from`")
        return found

    def match(self, path: RequestPath, query: Mapping[str, str]) -> dict[str, str] | None:
        """The placeholder values if this rule applies to ``path`` and ``query``, else None."""
        if self.unsupported:
            return None  # a condition we cannot evaluate is treated as not met
        values = self.pattern.match(path)
        if values is None:
            return None
        for key, expected in self.query.items():
            if key not in query:
                return None
            if expected.startswith(":") and len(expected) > 1:
                # Values from the query are form-encoded again: "cats dogs" -> cats+dogs, a/b -> a%2Fb.
                values[expected[1:]] = quote_plus(query[key], safe="")
            elif query[key] != expected:
                return None
        return values

    def target(self, values: Mapping[str, str], raw_query: str) -> str:
        """``to`` with placeholders filled and the request's query string passed on, URL-safe."""
        result = self.to
        if values:
            names = "|".join(re.escape(name) for name in sorted(values, key=len, reverse=True))
            result = re.sub(f":({names})", lambda m: values[m.group(1)], result)
        # Netlify passes the request's query string on when the target has none of its own.
        if raw_query and "?" not in result:
            result = f"{result}?{raw_query}"
        # A proxy forwards even an invalid escape as the client sent it; a Location gets %25.
        return encode_url(result, fix_escapes=not self.is_proxy)


@dataclass
class HeaderRule:
    origin: Origin
    source: str  # the ``for`` path pattern
    values: dict[str, str]  # name -> value (repeated names joined with ", ", as Netlify does)
    pattern: PathPattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Netlify's headers parser ignores empty segments and matches case-insensitively.
        cleaned = "/" + "/".join(part.rstrip() for part in self.source.split("/") if part.strip())
        self.pattern = PathPattern.compile(cleaned, case_sensitive=False)

    def matches(self, path: RequestPath) -> bool:
        compact = RequestPath(path.raw, *_without_empty(path))
        return self.pattern.match(compact) is not None


def _without_empty(path: RequestPath) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pairs = [(raw, text) for raw, text in zip(path.segments, path.decoded, strict=True) if raw]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
