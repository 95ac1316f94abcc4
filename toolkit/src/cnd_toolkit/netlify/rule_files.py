"""``_redirects`` and ``_headers``, read as Netlify's own parsers (``@netlify/redirect-parser``,
``@netlify/headers-parser``) read them: lines split and trimmed at JavaScript's whitespace, and a
line they would read otherwise than it looks (a stray ``=``, ``301x``, a control character) made a
problem here.

Standard library only (it runs in Netlify's build image).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlsplit

from cnd_toolkit.netlify.rules import HeaderRule, Origin, Problem, Redirect
from cnd_toolkit.netlify.urls import resolve_dots

PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# RFC 9110 field names are tokens; values may not hold control characters (a newline would
# split the header, and aiohttp refuses to send it).
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# JavaScript's whitespace (``\s``, ``trim()``), which Netlify's parsers split and trim with. Python's
# differs: it counts \x1c-\x1f and \x85 as whitespace and not the BOM (\ufeff).
JS_SPACE = "\t\n\v\f\r \xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
JS_SPACES = re.compile(f"[{JS_SPACE}]+")
JS_COMMA = re.compile(f"[{JS_SPACE}]*,[{JS_SPACE}]*")
# Headers that frame the message or describe the connection: set by the server for each response,
# never by a rule (a Content-Length from _headers would desynchronise a keep-alive connection).
FRAMING = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"}
)


# ---------------------------------------------------------------------------------------------
# _redirects and _headers, as Netlify's parsers read them


# What _js_int gives for a number of more than 20 digits: no status, and past what Python converts.
TOO_LARGE = 10**20


def _js_int(token: str) -> int | None:
    """JavaScript's ``parseInt(token)``, which Netlify's parser uses for statuses ("301!" -> 301)."""
    match = re.match(f"[{JS_SPACE}]*([+-]?)(?:0[xX]([0-9A-Fa-f]+)|([0-9]+))", token)
    if not match:
        return None
    sign = -1 if match.group(1) == "-" else 1
    digits = match.group(2) or match.group(3)
    if len(digits.lstrip("0")) > 20:
        return sign * TOO_LARGE
    return sign * (int(match.group(2), 16) if match.group(2) else int(match.group(3)))


COMMENT = re.compile(f"(?:^|(?<=[{JS_SPACE}]))#")


def js_trim(text: str) -> str:
    return text.strip(JS_SPACE)


def _line_problem(line: str, read: str) -> str:
    """What in a ``_redirects`` or ``_headers`` line (``read``: its part that is not a comment)
    Netlify would read differently from how it looks, or ""."""
    if "\r" in line.rstrip("\r"):
        # Netlify splits lines at LF only: a file with CR line ends is one long line to it.
        return "has a carriage return (CR) inside the line; save the file with LF (or CRLF) line ends"
    control = CONTROL.search(read.rstrip("\r"))
    if control:
        return f"has a control character (U+{ord(control.group()):04X}); remove it"
    return ""


def parse_redirects_file(text: str, file: str, problems: list[Problem]) -> list[Redirect]:
    """Parse ``_redirects``: ``from [key=value...] to [status[!]] [Cond=a,b...]`` per line.

    Lines, tokens and comments as Netlify's parser reads them (JavaScript's whitespace); what
    it would read differently from what the line seems to say is a problem at the line.
    """
    rules: list[Redirect] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        # A token starting with # ends the line (as in Netlify's parser); "#" inside a URL stays.
        comment = COMMENT.search(raw)
        read = raw[: comment.start()] if comment else raw
        tokens = JS_SPACES.split(trimmed) if (trimmed := js_trim(read)) else []
        origin = Origin(file, number)
        trouble = _line_problem(raw, read)
        if trouble:
            problems.append(Problem(origin, trouble))
            continue
        if not tokens:
            continue
        source, parts = tokens[0], tokens[1:]
        if not parts:
            problems.append(Problem(origin, f"rule for {source} has no destination; write `{source} /new-path 301`"))
            continue
        if _js_int(parts[0]) is not None:
            # A forward rule: "/app/* 200" goes to the same path.
            if not (source.endswith("/*") and 200 <= (_js_int(parts[0]) or 0) < 300):
                problems.append(
                    Problem(
                        origin, f"rule for {source} has a status but no destination; write `{source} /new-path 301`"
                    )
                )
                continue
            query_parts, to, rest = [], source[:-2] + "/:splat", parts
        else:
            index = next((i for i, p in enumerate(parts) if p.startswith(("/", "http://", "https://"))), None)
            if index is None:
                problems.append(
                    Problem(origin, f"rule for {source}: the destination must start with /, http:// or https://")
                )
                continue
            query_parts, to, rest = parts[:index], parts[index], parts[index + 1 :]
        status, force, status_given = 301, False, bool(rest)
        if rest:
            parsed = _js_int(rest[0])
            if parsed is None:
                problems.append(
                    Problem(origin, f"{rest[0]!r} after the destination is not a status; write e.g. `301` or `200!`")
                )
                continue
            if not re.fullmatch(r"[0-9]+!?", rest[0]):
                # Netlify reads the number it starts with ("301x" as 301, "200!!" as a forced 200).
                problems.append(Problem(origin, f"status {rest[0]!r} is not a number; write e.g. `301`, or `200!`"))
                continue
            if parsed >= TOO_LARGE:
                problems.append(Problem(origin, f"status {rest[0]} is no status Netlify supports; write e.g. `301`"))
                continue
            status, force = parsed, rest[0].endswith("!")
            rest = rest[1:]
        pairs = [_pair(token, origin, problems) for token in query_parts + rest]
        if None in pairs:
            continue
        query = dict(pair for pair in pairs[: len(query_parts)] if pair)
        named = dict(pair for pair in pairs[len(query_parts) :] if pair)
        signed = named.pop("signed", named.pop("Sign", ""))  # as Netlify's parser: signed wins over Sign
        conditions = conditions_of(named)
        rule = redirect_rule(origin, source, to, status, force, query, conditions, {}, signed, problems, status_given)
        if rule is not None:
            rules.append(rule)
    return rules


_CONDITION_CASE = {"country": "Country", "language": "Language", "role": "Role"}


def conditions_of(raw: Mapping[str, str | list[str]]) -> dict[str, list[str]]:
    """Conditions as Netlify normalises them: ``country`` is ``Country`` (and wins over it), and a
    string is a comma-separated list."""
    conditions: dict[str, list[str]] = {}
    for key, value in raw.items():
        if _CONDITION_CASE.get(key.lower()) == key and key.lower() in raw:
            continue  # "country" wins over "Country"
        conditions[_CONDITION_CASE.get(key, key)] = (
            JS_COMMA.split(js_trim(value)) if isinstance(value, str) else list(value)
        )
    return conditions


def _pair(token: str, origin: Origin, problems: list[Problem]) -> tuple[str, str] | None:
    """``key=value``; Netlify's parser reads ``a=b=c`` as a=b and ``a`` as no value, so those are problems."""
    pieces = token.split("=")
    if len(pieces) != 2 or not pieces[0]:
        why = "has no `=`" if len(pieces) == 1 else "has more than one `=`" if pieces[0] else "has no name before `=`"
        problems.append(Problem(origin, f"{token!r} {why}; write key=value (query and conditions are key=value)"))
        return None
    return pieces[0], pieces[1]


def parse_headers_file(text: str, file: str, problems: list[Problem]) -> list[HeaderRule]:
    """Parse ``_headers``: a path line, then ``Name: value`` lines (indented by convention).

    Lines are trimmed as Netlify's parser trims them (JavaScript's whitespace).
    """
    rules: list[HeaderRule] = []
    current: HeaderRule | None = None
    headed: set[int] = set()  # rules with header lines under them, applied or not
    for number, raw in enumerate(text.split("\n"), start=1):
        line = js_trim(raw)
        origin = Origin(file, number)
        # Control characters in a header line get a message naming the header (add_header).
        trouble = _line_problem(raw, raw if line.startswith("/") else "")
        if not trouble and (not line or line.startswith("#")):
            continue
        if line.startswith("/"):
            current = HeaderRule(origin, line, {})
            if trouble:
                problems.append(Problem(origin, trouble))
                headed.add(id(current))  # its header lines go with it, unused
            else:
                rules.append(current)
            continue
        if current is not None:
            headed.add(id(current))
        if trouble:
            problems.append(Problem(origin, trouble))
            continue
        name, sep, value = line.partition(":")
        if not sep:
            problems.append(Problem(origin, f"{line!r} is neither a path (starting with /) nor `Name: value`"))
            continue
        if current is None:
            problems.append(Problem(origin, "a header line before any path; start with a path such as `/*`"))
            continue
        if raw[0] not in JS_SPACE:
            # Netlify applies it, but it reads like a path typo: say so without failing.
            problems.append(
                Problem(origin, f"header line `{line}` is not indented under its path; indent it", "warning")
            )
        add_header(current, js_trim(name), js_trim(value), origin, problems)
    for rule in rules:
        if id(rule) not in headed:
            message = f"path {rule.source} has no header lines under it; Netlify ignores it"
            problems.append(Problem(rule.origin, message, "warning"))
    return [rule for rule in rules if rule.values]


def add_header(
    rule: HeaderRule, name: str, value: str, origin: Origin, problems: list[Problem], *, commas: bool = True
) -> None:
    """Add a header value as Netlify's parser normalises it (``commas``: "a ,b" is "a, b")."""
    if not HEADER_NAME.fullmatch(name):
        problems.append(Problem(origin, f"{name!r} is not a valid header name (letters, digits and -)"))
        return
    if name.lower() in FRAMING:
        problems.append(
            Problem(origin, f"{name} describes the connection, not the file; the server sets it: remove it")
        )
        return
    value = JS_COMMA.sub(", ", js_trim(value)) if commas else js_trim(value)
    if not value:
        problems.append(Problem(origin, f"header {name} has no value"))
        return
    if CONTROL.search(value):
        problems.append(Problem(origin, f"header {name} has a control character or newline in its value; remove it"))
        return
    rule.values[name] = f"{rule.values[name]}, {value}" if name in rule.values else value


def url_path(url: str) -> str | None:
    """The path of an http(s) URL with a plain host (and port), dot segments resolved; else None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
    except ValueError:
        return None
    if "@" in parts.netloc or not re.fullmatch(r"[\w.-]+|[0-9a-f:.]+", parts.hostname or ""):
        return None
    return resolve_dots(parts.path or "/")


def redirect_rule(
    origin: Origin,
    source: str,
    to: str,
    status: int,
    force: bool,
    query: dict[str, str],
    conditions: dict[str, list[str]],
    headers: dict[str, str],
    signed: str,
    problems: list[Problem],
    status_given: bool = True,
) -> Redirect | None:
    """A rule, or None (and a problem) when the edge could not apply it safely, or Netlify would
    reject it."""
    if not source.startswith(("/", "http://", "https://")):
        problems.append(
            Problem(origin, f"`from` {source!r} must start with / (or be a full URL for a domain redirect)")
        )
        return None
    if CONTROL.search(source) or " " in source:
        problems.append(Problem(origin, f"`from` {source!r} has a space or control character; percent-encode it"))
        return None
    # Netlify's parser rejects a `from` URL that does not parse (new URL(from) throws).
    path = url_path(source) if source.startswith(("http://", "https://")) else source
    if path is None:
        problems.append(Problem(origin, f"`from` {source!r} is not a valid URL; write e.g. https://example.com/*"))
        return None
    if path.startswith("/.netlify"):
        problems.append(Problem(origin, f"`from` {source!r}: paths under /.netlify are Netlify's own; pick another"))
        return None
    parts = source.split("?")[0].split("/")
    if any("*" in part and (index != len(parts) - 1 or part != "*") for index, part in enumerate(parts)):
        problems.append(Problem(origin, f"`from` {source!r} has a splat (*) that is not the whole last segment"))
        return None
    # Placeholders of the path, then of the query: each a name, and no name twice.
    tokens = [token for token in (*parts, *query.values()) if token.startswith(":") and len(token) > 1]
    for token in tokens:
        if not PLACEHOLDER.fullmatch(token[1:]):
            message = f"placeholder {token!r} in {source!r}: use letters, digits and _, not a digit first"
            problems.append(Problem(origin, message))
            return None
    names = [token[1:] for token in tokens]
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated or "splat" in names:
        problems.append(
            Problem(origin, f"placeholder :{(repeated or ['splat'])[0]} is used twice in {source!r}; rename one")
        )
        return None
    if CONTROL.search(to) or " " in to:
        problems.append(Problem(origin, f"`to` {to!r} has a space or control character; percent-encode it"))
        return None
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name) or CONTROL.search(value) or name.lower() in FRAMING:
            problems.append(Problem(origin, f"proxy header {name!r} is not a header a rule may set; fix or remove it"))
            return None
    return Redirect(origin, source, to, status, force, query, conditions, headers, signed, status_given)
