"""The project's Netlify configuration, parsed once: netlify.toml, ``_redirects`` and ``_headers``.

One model serves the local edge, ``inv check``, the build step and the deploy. Parsing never
raises on file content: whatever is wrong becomes a :class:`Problem` naming ``file:line``, and
a rule that cannot be used is left out of the model, as Netlify leaves it out of a deploy.

The rule syntax follows Netlify's own parsers (``@netlify/redirect-parser`` and
``@netlify/headers-parser``): ``_redirects`` rules come before netlify.toml's, and the first
rule that matches wins; header rules all apply, a later value replacing an earlier one. Lines
are split and trimmed at JavaScript's whitespace, as those parsers do, and of identical rules
only the last copy stays, as their merge leaves it. A line they would read otherwise than it
looks (a stray ``=``, ``301x``, a control character) is a problem here.

Standard library only (it runs in Netlify's build image).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
VALID_STATUSES = frozenset({200, 404, 410, 451}) | REDIRECT_STATUSES
# Conditions Netlify evaluates on its CDN from data a local server does not have.
UNSUPPORTED_CONDITIONS = ("Country", "Language", "Role", "Cookie")
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
# Characters a URL may carry as they are; everything else is percent-encoded on the way out.
URL_SAFE = "!#$%&'()*+,/:;=?@[]~-._"


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
        return f"{self.origin}: {prefix}{self.message}"


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


# ---------------------------------------------------------------------------------------------
# The model


@dataclass
class NetlifyConfig:
    """Everything the edge, ``inv check``, the build step and the deploy need, parsed once."""

    root: Path
    publish: Path
    data: dict[str, Any]  # netlify.toml as parsed ({} when absent or invalid)
    redirects: list[Redirect]
    headers: list[HeaderRule]
    problems: list[Problem]
    toml_lines: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def build(self) -> dict[str, Any]:
        build = self.data.get("build")
        return build if isinstance(build, dict) else {}

    def unsupported(self) -> list[str]:
        return [
            f"{rule.origin}: {rule.source} uses {', '.join(rule.unsupported)}; the local edge skips it"
            for rule in self.redirects
            if rule.unsupported
        ]

    def line_of(self, *key: str | int) -> int:
        """The netlify.toml line of a key path such as ("redirects", 0, "status"), else of the
        nearest key around it (an inline table's line), else 1."""
        path = tuple(str(k) for k in key)
        while path and path not in self.toml_lines:
            path = path[:-1]
        return self.toml_lines.get(path, 1)


def load(root: Path, api_rule: str = "") -> NetlifyConfig:
    """Parse the project at ``root``.

    ``api_rule`` (``_redirects`` syntax) stands in for the rule of the block the build step
    writes into ``_redirects``, where that block is (or first, when the file has none): ``inv
    dev`` points the API at the local backend this way, without writing the file, and every
    rule keeps its place and line number.
    """
    problems: list[Problem] = []
    toml_path = root / "netlify.toml"
    toml_text = _read(toml_path, "netlify.toml", problems, inside=root)
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    if toml_text is not None:
        if toml_text.startswith("\ufeff"):
            message = "starts with a byte order mark (BOM), which Netlify's TOML parser rejects; save it without"
            problems.append(Problem(Origin("netlify.toml", 1), message))
            toml_text = toml_text[1:]
        try:
            data = tomllib.loads(toml_text)
        except tomllib.TOMLDecodeError as exc:
            # "(at end of document)" names no line: the last one is where the document ended.
            line = re.search(r"line (\d+)", str(exc))
            number = int(line.group(1)) if line else toml_text.rstrip().count("\n") + 1
            problems.append(Problem(Origin("netlify.toml", number), f"not valid TOML: {exc}"))
        except RecursionError:  # arrays or inline tables nested thousands deep: Python's parser gives up
            message = "nests arrays or tables too deeply to be read; netlify.toml never needs more than a few levels"
            problems.append(Problem(Origin("netlify.toml", 1), message))
        lines = toml_key_lines(toml_text)
    shape = _Shape(data, lines, problems)
    publish_name = shape.publish()
    publish = root / publish_name
    _inside(root, publish, shape, problems)
    redirects: list[Redirect] = []
    headers: list[HeaderRule] = []
    redirects_file = publish / "_redirects"
    rel_redirects = _relative(redirects_file, root)
    redirects_text = _read(redirects_file, rel_redirects, problems, inside=publish)
    try:
        generated_blocks((redirects_text or "").split("\n"))
    except BrokenBlock as exc:  # the build step would refuse the file
        message = str(exc).split(": ", 1)[1]
        problems.append(Problem(Origin(rel_redirects, exc.line), f"{message} (the Netlify build step would fail)"))
    if api_rule:
        redirects_text, placed = with_generated_rule(redirects_text or "", api_rule)
        if not placed:
            redirects += parse_redirects_file(api_rule, "(the local API rule)", problems)
    if redirects_text:
        redirects += parse_redirects_file(redirects_text, rel_redirects, problems)
    headers_file = publish / "_headers"
    rel_headers = _relative(headers_file, root)
    headers_text = _read(headers_file, rel_headers, problems, inside=publish)
    if headers_text:
        headers += parse_headers_file(headers_text, rel_headers, problems)
    redirects += shape.redirects()
    headers += shape.headers()
    return NetlifyConfig(root, publish, data, _merged(redirects, problems), headers, problems, lines)


# The block the build step (cnd_toolkit.netlify.redirects) writes into _redirects for each deploy.
GENERATED_BEGIN = "# BEGIN cnd_toolkit.netlify.redirects"
GENERATED_END = "# END cnd_toolkit.netlify.redirects"
# Older templates' markers (the build step as ops/redirects.py, then ops.netlify.redirects, before the
# tooling was the cnd_toolkit package): a project updated by copier still has them.
OLD_BEGINS = ("# BEGIN ops/redirects.py", "# BEGIN ops.netlify.redirects")
OLD_ENDS = ("# END ops/redirects.py", "# END ops.netlify.redirects")


class BrokenBlock(ValueError):
    """A generated block without its END line (or with a second BEGIN inside it)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line  # 1-based


def generated_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """The (BEGIN, END) line indexes of each block the build step wrote, older markers too."""
    blocks: list[tuple[int, int]] = []
    start: int | None = None
    for index, line in enumerate(lines):
        if line.startswith((GENERATED_BEGIN, *OLD_BEGINS)):
            if start is not None:
                raise BrokenBlock(f"_redirects:{index + 1}: a second BEGIN line before the END of the block", index + 1)
            start = index
        elif line.startswith((GENERATED_END, *OLD_ENDS)) and start is not None:
            blocks.append((start, index))
            start = None
    if start is not None:
        raise BrokenBlock(
            f"_redirects: the block that starts {GENERATED_BEGIN!r} has no {GENERATED_END!r} line; restore it",
            start + 1,
        )
    return blocks


def with_generated_rule(text: str, rule: str) -> tuple[str, bool]:
    """``text`` with the generated blocks' rule lines replaced by ``rule`` (in the first block),
    as the build step would, keeping the number of lines (so every other rule keeps its line
    number); and whether there was a block. A broken block counts as none: the build refuses it."""
    lines = text.split("\n")
    try:
        blocks = generated_blocks(lines)
    except BrokenBlock:
        return text, False
    for number, (begin, end) in enumerate(blocks):
        inner = [""] * (end - begin - 1)
        if number == 0 and inner:
            inner[0] = rule
        elif number == 0:  # an empty block: the rule takes the END line's place
            inner, end = [rule], end + 1
        lines[begin + 1 : end] = inner
    return "\n".join(lines), bool(blocks)


def _inside(root: Path, publish: Path, shape: _Shape, problems: list[Problem]) -> None:
    """A publish directory that resolves outside the project (a symlink) would serve its target."""
    try:
        real, project = publish.resolve(), root.resolve()
    except (OSError, RuntimeError):
        return
    if real != project and project not in real.parents:
        message = f"publish directory {publish.name!r} resolves to {real}, outside the project; point it inside"
        problems.append(Problem(shape.at("build", "publish"), message))


def _merged(rules: list[Redirect], problems: list[Problem]) -> list[Redirect]:
    """The rules as Netlify's merge leaves them: of identical rules, only the last copy.

    That moves a rule after every rule between its copies, so those are tried first (say so):
    a ``_redirects`` rule repeated in netlify.toml counts from where netlify.toml has it.
    """
    last: dict[tuple[Any, ...], int] = {}
    for index, rule in enumerate(rules):
        last[_identity(rule)] = index
    kept = []
    for index, rule in enumerate(rules):
        identity = _identity(rule)
        copy = last[identity]
        if copy == index:
            kept.append(rule)
            continue
        # the rules that end up between this copy's place and the kept one's
        between = [r for r in rules[index + 1 : copy] if _identity(r) != identity and last[_identity(r)] < copy]
        if between:
            message = (
                f"{rule.source} is repeated at {rules[copy].origin}; Netlify keeps only that copy, so "
                f"{len(between)} rule(s) from {between[0].origin} on are tried before it; remove one copy"
            )
            problems.append(Problem(rule.origin, message, "warning"))
    return kept


def _identity(rule: Redirect) -> tuple[Any, ...]:
    """What Netlify's merge compares (an unnamed status differs from a named 301)."""
    return (
        rule.source,
        rule.to,
        rule.status if rule.status_given else None,
        rule.force,
        tuple(sorted(rule.query.items())),
        tuple(sorted((name, tuple(values)) for name, values in rule.conditions.items())),
        rule.signed,
        tuple(sorted(rule.headers.items())),
    )


def publish_dir(root: Path) -> Path:
    """The publish directory netlify.toml names (``public`` when it names none)."""
    return load(root).publish


def _read(path: Path, name: str, problems: list[Problem], *, inside: Path) -> str | None:
    """A file's text (a BOM kept, as Netlify's parsers keep it); a missing file is None.

    A file that cannot be read or is not UTF-8 is a problem at its line (line 1 for the whole
    file: every message points at a line). A link that leads out of ``inside`` is a problem and
    is never read: its target is not the project's (``/proc/self/environ``, a key file), and what
    it holds would reach error messages.
    """
    try:
        if path.is_symlink() and not path.resolve().is_relative_to(inside.resolve()):
            problems.append(
                Problem(Origin(name, 1), "is a link to a file outside the project; replace the link with a real file")
            )
            return None
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        problems.append(Problem(Origin(name, 1), "is a directory, not a file; remove or rename it"))
        return None
    except OSError as exc:
        problems.append(Problem(Origin(name, 1), f"cannot be read ({exc.strerror or exc})"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.append(
            Problem(
                Origin(name, line),
                f"is not UTF-8 (byte 0x{data[exc.start]:02x} at line {line}); save the file as UTF-8",
            )
        )
        return None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# _redirects and _headers, as Netlify's parsers read them


def _js_int(token: str) -> int | None:
    """JavaScript's ``parseInt(token)``, which Netlify's parser uses for statuses ("301!" -> 301)."""
    match = re.match(f"[{JS_SPACE}]*([+-]?)(?:0[xX]([0-9A-Fa-f]+)|([0-9]+))", token)
    if not match:
        return None
    sign = -1 if match.group(1) == "-" else 1
    return sign * (int(match.group(2), 16) if match.group(2) else int(match.group(3)))


COMMENT = re.compile(f"(?:^|(?<=[{JS_SPACE}]))#")


def _js_trim(text: str) -> str:
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
        tokens = JS_SPACES.split(trimmed) if (trimmed := _js_trim(read)) else []
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
            status, force = parsed, rest[0].endswith("!")
            rest = rest[1:]
        pairs = [_pair(token, origin, problems) for token in query_parts + rest]
        if None in pairs:
            continue
        query = dict(pair for pair in pairs[: len(query_parts)] if pair)
        named = dict(pair for pair in pairs[len(query_parts) :] if pair)
        signed = named.pop("signed", named.pop("Sign", ""))  # as Netlify's parser: signed wins over Sign
        conditions = _conditions(named)
        rule = _rule(origin, source, to, status, force, query, conditions, {}, signed, problems, status_given)
        if rule is not None:
            rules.append(rule)
    return rules


_CONDITION_CASE = {"country": "Country", "language": "Language", "role": "Role"}


def _conditions(raw: Mapping[str, str | list[str]]) -> dict[str, list[str]]:
    """Conditions as Netlify normalises them: ``country`` is ``Country`` (and wins over it), and a
    string is a comma-separated list."""
    conditions: dict[str, list[str]] = {}
    for key, value in raw.items():
        if _CONDITION_CASE.get(key.lower()) == key and key.lower() in raw:
            continue  # "country" wins over "Country"
        conditions[_CONDITION_CASE.get(key, key)] = (
            JS_COMMA.split(_js_trim(value)) if isinstance(value, str) else list(value)
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
        line = _js_trim(raw)
        origin = Origin(file, number)
        # Control characters in a header line get a message naming the header (_add_header).
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
        _add_header(current, _js_trim(name), _js_trim(value), origin, problems)
    for rule in rules:
        if id(rule) not in headed:
            message = f"path {rule.source} has no header lines under it; Netlify ignores it"
            problems.append(Problem(rule.origin, message, "warning"))
    return [rule for rule in rules if rule.values]


def _add_header(
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
    value = JS_COMMA.sub(", ", _js_trim(value)) if commas else _js_trim(value)
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


def _rule(
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
    repeated = sorted({name for name in names if names.count(name) > 1})
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


# ---------------------------------------------------------------------------------------------
# netlify.toml: shapes and line numbers


def toml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line numbers of tables and keys: ("build",), ("redirects", "0"), ("redirects", "0", "from").

    tomllib keeps no positions; this reads the common layouts (tables, arrays of tables,
    dotted keys) well enough to point at the right line.
    """
    lines: dict[tuple[str, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    # Lines as TOML counts them: a U+2028 or U+0085 inside a string does not end one.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        header = re.fullmatch(r"(\[\[?)\s*([^\[\]]+?)\s*\]\]?(\s*#.*)?", line)
        if header:
            names = tuple(part.strip().strip("\"'") for part in header.group(2).split("."))
            if header.group(1) == "[[":
                counts[names] = counts.get(names, -1) + 1
                table = (*_indexed(names[:-1], counts), names[-1], str(counts[names]))
            else:
                table = _indexed(names, counts)
            lines.setdefault(table, number)
            continue
        key = re.match(r"""([A-Za-z0-9_\-."' ]+?)\s*=""", line)
        if key:
            path = (*table, *(part.strip().strip("\"'") for part in key.group(1).split(".")))
            lines.setdefault(path, number)
            for depth in range(len(table) + 1, len(path)):
                lines.setdefault(path[:depth], number)
    return lines


def _indexed(names: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> tuple[str, ...]:
    """("headers", "values") inside the 2nd [[headers]] -> ("headers", "1", "values")."""
    out: list[str] = []
    for depth in range(1, len(names) + 1):
        out.append(names[depth - 1])
        if names[:depth] in counts:
            out.append(str(counts[names[:depth]]))
    return tuple(out)


class _Shape:
    """Reads netlify.toml's data by the shape Netlify expects, reporting what is off."""

    def __init__(self, data: dict[str, Any], lines: dict[tuple[str, ...], int], problems: list[Problem]) -> None:
        self.data, self.lines, self.problems = data, lines, problems

    def at(self, *key: str | int) -> Origin:
        path = tuple(str(k) for k in key)
        while path and path not in self.lines:
            path = path[:-1]
        return Origin("netlify.toml", self.lines.get(path, 1))

    def wrong(self, key: tuple[str | int, ...], expected: str, value: object) -> None:
        if len(key) > 1 and isinstance(key[1], int):
            inner = ".".join(str(k) for k in key[2:])
            name = f"`{inner}` in [[{key[0]}]] #{key[1] + 1}" if inner else f"[[{key[0]}]] #{key[1] + 1}"
        else:
            name = "`" + ".".join(str(k) for k in key) + "`"
        self.problems.append(Problem(self.at(*key), f"{name} must be {expected}, not {_kind(value)}"))

    def table(self, *key: str | int) -> dict[str, Any]:
        value: Any = self.data
        for part in key:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.wrong(key, "a table ([" + ".".join(str(k) for k in key) + "])", value)
            return {}
        return value

    def publish(self) -> str:
        build = self.table("build")
        for key in ("publish", "command", "base"):
            if key in build and not isinstance(build[key], str):
                self.wrong(("build", key), "a string", build[key])
        for key, value in self.table("build", "environment").items():
            if not isinstance(value, str | int | float | bool):
                self.wrong(("build", "environment", key), "a string", value)
        publish = build.get("publish", "public")
        if not isinstance(publish, str) or not publish.strip():
            return "public"
        if "\x00" in publish or ".." in Path(publish).parts or Path(publish).is_absolute():
            self.problems.append(
                Problem(self.at("build", "publish"), f"publish = {publish!r} must be a folder inside the project")
            )
            return "public"
        return publish

    def entries(self, key: str) -> list[tuple[int, dict[str, Any]]]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.wrong((key,), f"an array of tables ([[{key}]])", value)
            return []
        found = []
        for index, entry in enumerate(value):
            if isinstance(entry, dict):
                found.append((index, entry))
            else:
                self.wrong((key, index), f"a table ([[{key}]])", entry)
        return found

    def redirects(self) -> list[Redirect]:
        rules = []
        for index, entry in self.entries("redirects"):
            origin = self.at("redirects", index)
            fields = self._fields(
                "redirects",
                index,
                entry,
                {"from": str, "to": str, "status": int, "force": bool, "signed": str, "query": dict},
            )
            if fields is None:
                continue
            source = entry.get("from")
            if source is None:
                self.problems.append(
                    Problem(origin, 'redirect has no `from`; add the path it applies to, e.g. from = "/old"')
                )
                continue
            status = entry.get("status", 301)
            to = entry.get("to")
            if to is None:
                if not (source.endswith("/*") and 200 <= status < 300):
                    self.problems.append(Problem(origin, f"redirect for {source} has no `to`; add the destination"))
                    continue
                to = source[:-2] + "/:splat"
            query = self._strings(("redirects", index, "query"), entry.get("query", {}))
            raw_conditions = entry.get("conditions", {})
            if not isinstance(raw_conditions, dict):
                self.wrong(("redirects", index, "conditions"), "a table", raw_conditions)
                continue
            typed: dict[str, str | list[str]] = {}
            for name, value in raw_conditions.items():
                items = value if isinstance(value, list) else [value]
                if not all(isinstance(item, str) for item in items):
                    self.wrong(("redirects", index, "conditions", name), "a string or a list of strings", value)
                    continue
                typed[str(name)] = value
            conditions = _conditions(typed)
            headers = self._strings(("redirects", index, "headers"), entry.get("headers", {}))
            if query is None or headers is None:
                continue
            rule = _rule(
                origin, source, to, status, bool(entry.get("force", False)), query, conditions, headers,
                entry.get("signed", ""), self.problems, "status" in entry,
            )  # fmt: skip
            if rule is not None:
                rules.append(rule)
        return rules

    def headers(self) -> list[HeaderRule]:
        rules = []
        for index, entry in self.entries("headers"):
            origin = self.at("headers", index)
            fields = self._fields("headers", index, entry, {"for": str, "values": dict})
            if fields is None:
                continue
            if "for" not in entry:
                self.problems.append(Problem(origin, '[[headers]] has no `for` path; add e.g. for = "/*"'))
                continue
            path = _js_trim(entry["for"])  # trimmed as Netlify's parser trims it
            if CONTROL.search(path):
                self.problems.append(
                    Problem(self.at("headers", index, "for"), f"`for` {path!r} has a control character")
                )
                continue
            if not entry.get("values"):
                message = f"[[headers]] for {path} has no values; Netlify ignores it"
                self.problems.append(Problem(origin, message, "warning"))
            rule = HeaderRule(origin, path, {})
            for name, value in entry.get("values", {}).items():
                where = self.at("headers", index, "values", name)
                if isinstance(value, str):
                    _add_header(rule, _js_trim(name), value, where, self.problems)
                elif isinstance(value, list) and all(isinstance(item, str) for item in value):
                    # Netlify trims each item and joins them, without touching commas inside one.
                    joined = ", ".join(_js_trim(item) for item in value)
                    _add_header(rule, _js_trim(name), joined, where, self.problems, commas=False)
                else:
                    self.wrong(("headers", index, "values", name), "a string or a list of strings", value)
            if rule.values:
                rules.append(rule)
        return rules

    def _fields(self, table: str, index: int, entry: dict[str, Any], types: dict[str, type]) -> dict[str, Any] | None:
        ok = True
        for key, kind in types.items():
            value = entry.get(key)
            if key in entry and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                expected = {str: "a string", int: "a number", bool: "true or false", dict: "a table"}[kind]
                self.wrong((table, index, key), expected, entry[key])
                ok = False
        return entry if ok else None

    def _strings(self, key: tuple[str | int, ...], value: object) -> dict[str, str] | None:
        if not isinstance(value, dict):
            self.wrong(key, "a table", value)
            return None
        bad = [k for k, v in value.items() if not isinstance(v, str)]
        if bad:
            self.wrong((*key, bad[0]), "a string", value[bad[0]])
            return None
        return {str(k): v for k, v in value.items()}


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, int | float):
        return f"{value} (a number)"
    return f"{value!r}" if isinstance(value, str) else type(value).__name__
