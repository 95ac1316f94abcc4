"""Request paths and path patterns as Netlify matches them: segments, dot segments,
percent-encoding, queries, ``:placeholder`` and ``*`` splats.

Standard library only (it runs in Netlify's build image).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_plus

# Characters a URL may carry as they are; everything else is percent-encoded on the way out.
URL_SAFE = "!#$%&'()*+,/:;=?@[]~-._"


# ---------------------------------------------------------------------------------------------
# Paths: segments, dot segments, percent-encoding


def split_target(target: str) -> tuple[str, str]:
    """A request-target's raw path and raw query (a fragment is never sent, but drop one)."""
    target = target.partition("#")[0]
    path, _, query = target.partition("?")
    return path or "/", query


def resolve_dots(raw_path: str) -> str:
    """``raw_path`` with ``.`` and ``..`` segments resolved (RFC 3986 5.2.4), encoded ones too.

    ``%2e%2e`` counts as ``..``, as in browsers and on Netlify; the other segments keep the
    client's encoding. Nothing can climb above ``/``.
    """
    segments = raw_path.split("/")[1:] if raw_path.startswith("/") else raw_path.split("/")
    out: list[str] = []
    trailing = False
    for segment in segments:
        dots = unquote(segment) if "%" in segment else segment
        if dots == ".":
            trailing = True
        elif dots == "..":
            if out:
                out.pop()
            trailing = True
        else:
            out.append(segment)
            trailing = False
    path = "/" + "/".join(out)
    if trailing and not path.endswith("/"):
        path += "/"
    return path


def encode_url(value: str, *, fix_escapes: bool = True) -> str:
    """``value`` with spaces, controls and non-ASCII percent-encoded; valid escapes kept, and a
    "%" that starts no valid escape encoded too (unless ``fix_escapes`` is false)."""
    if fix_escapes:
        value = re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", value)
    return quote(value, safe=URL_SAFE)


def parse_query(raw_query: str) -> dict[str, str]:
    """``key=value`` pairs as Netlify's matcher reads them: values form-decoded, keys as sent.

    A repeated key keeps its last value; a key without ``=`` sets nothing.
    """
    values: dict[str, str] = {}
    for part in raw_query.split("&"):
        key, sep, value = part.partition("=")
        if sep:
            values[key] = unquote_plus(value)
    return values


@dataclass(frozen=True)
class RequestPath:
    """A request path after dot segments are resolved: raw segments and their decoded form."""

    raw: str  # as the client encoded it (dot segments resolved)
    segments: tuple[str, ...]  # raw segments; a trailing slash leaves a last empty one
    decoded: tuple[str, ...]  # each segment decoded on its own: %2F stays inside its segment

    @classmethod
    def parse(cls, raw_path: str) -> RequestPath:
        resolved = resolve_dots(raw_path)
        segments = tuple(resolved.split("/")[1:])
        return cls(resolved, segments, tuple(unquote(s, errors="replace") for s in segments))

    @property
    def trailing_slash(self) -> bool:
        return len(self.segments) > 1 and self.segments[-1] == ""

    @property
    def text(self) -> str:
        """The decoded path, for messages and header rules."""
        return "/" + "/".join(self.decoded)


@dataclass(frozen=True)
class PathPattern:
    """A ``from``/``for`` path: literal segments, ``:name`` segments and a final ``*`` splat.

    Segments compare decoded, so ``/café`` matches ``/caf%C3%A9``; values come back as the
    client encoded them. A trailing slash is optional on both sides.
    """

    source: str
    parts: tuple[str, ...]  # decoded literal segments, ":name", or "*" (a splat, last only)
    case_sensitive: bool = True

    @classmethod
    def compile(cls, source: str, *, case_sensitive: bool = True) -> PathPattern:
        raw = source.split("?")[0]
        parts = [unquote(p) for p in raw.split("/")[1:]]
        if parts and parts[-1] == "" and len(parts) > 1:
            parts.pop()  # "/page/" matches like "/page"
        if parts == [""]:
            parts = []
        return cls(source, tuple(parts), case_sensitive)

    @property
    def splat(self) -> bool:
        return bool(self.parts) and self.parts[-1] == "*"

    def match(self, path: RequestPath) -> dict[str, str] | None:
        """Placeholder values (raw, the client's encoding) if ``path`` matches, else None.

        As Netlify's matcher: literal segments follow each other with one slash, a placeholder
        may follow several ("/news//2024/x" is /news/:year/:slug), one trailing slash is
        optional, and a splat takes the rest as it was sent ("/old//x" gives splat "/x").
        """
        raw, decoded = path.segments, path.decoded
        if raw == ("",):
            raw, decoded = (), ()
        parts = self.parts[:-1] if self.splat else self.parts
        values: dict[str, str] = {}
        index = 0
        for part in parts:
            placeholder = len(part) > 1 and part.startswith(":")
            if placeholder:
                while index < len(raw) - 1 and raw[index] == "":
                    index += 1
            if index >= len(raw):
                return None
            segment, text = raw[index], decoded[index]
            index += 1
            if placeholder:
                if not segment:
                    return None
                values[part[1:]] = segment
            elif "*" in part:
                if not _glob(part, text, self.case_sensitive):
                    return None
            elif part != text if self.case_sensitive else part.lower() != text.lower():
                return None
        rest = raw[index:]
        if self.splat:
            values["splat"] = "/".join(rest)
        elif rest not in ((), ("",)):
            return None
        return values


def _glob(part: str, text: str, case_sensitive: bool) -> bool:
    """Whether ``text`` matches ``part``, where each ``*`` stands for any characters.

    Greedy with one backtrack point, so linear in practice: a regex of ".*" pieces takes
    exponential time on "/*a*a*a*a*a*a*ab"-like rules, and one request would stall the edge.
    """
    if not case_sensitive:
        part, text = part.lower(), text.lower()
    pieces = part.split("*")
    if len(pieces) == 1:
        return part == text
    first, *middle, last = pieces
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    at, end = len(first), len(text) - len(last)
    for piece in middle:
        found = text.find(piece, at, end)
        if found < 0:
            return False
        at = found + len(piece)
    return True
