"""Seeded fuzzing of the Netlify configuration: mutants of valid netlify.toml, ``_redirects`` and
``_headers`` files.

Every mutant must end one of two ways: ``inv check`` finds no error and the edge serves the
site (the router answers a set of probe requests sanely, and nothing it would send carries a
control character), or ``inv check`` and the edge's start-up both name the same ``file:line``.
Never a traceback.

Mutations are classes, not cases: bytes (encodings, control characters, line ends,
truncation), tokens (dropped, repeated, swapped; junk statuses, odd placeholders and splats,
encoded and unicode paths, stray ``=`` and ``#``, long lines) and TOML structure (a value of
another type, tables and arrays of tables swapped, required keys dropped, keys repeated or
unknown, nested arrays). ``CONFIG_FUZZ_SEED`` and ``CONFIG_FUZZ_COUNT`` change the run; a failure
names the seed and the mutant's index, which regenerate it exactly.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cnd_toolkit import project
from cnd_toolkit.edge.routing import Router
from cnd_toolkit.edge.server import load_site, serve_in_thread
from cnd_toolkit.errors import ConfigError
from cnd_toolkit.netlify.check import check_config
from cnd_toolkit.netlify.config import load
from cnd_toolkit.netlify.rule_files import CONTROL, JS_SPACE, parse_headers_file, parse_redirects_file
from cnd_toolkit.netlify.rules import VALID_STATUSES, Problem

ROOT = project.ROOT  # the project under test: a default render
SEED = int(os.environ.get("CONFIG_FUZZ_SEED", "20250611"))
COUNT = int(os.environ.get("CONFIG_FUZZ_COUNT", "600"))
FILES = ("netlify.toml", "public/_redirects", "public/_headers")
ERROR = re.compile(r"(netlify\.toml|public/_redirects|public/_headers):(\d+): \S")
SANE_STATUSES = VALID_STATUSES | {400, 405}  # 400: a raw backslash in a probe path

RICH_TOML = """\
[build]
  publish = "public"
  command = "python3 -m cnd_toolkit.netlify.redirects public"

[build.environment]
  PYTHON_VERSION = "3.12"
  BACKEND_URL = "https://api.example.com"

[context.production.environment]
  BACKEND_URL = "https://api.example.com"

[context.deploy-preview]
  command = "echo preview"

[[redirects]]
  from = "/old-toml"
  to = "/new-toml"
  status = 302

[[redirects]]
  from = "/shop/:category/:id"
  to = "/store/:category/item-:id"
  status = 301
  force = true

[[redirects]]
  from = "/find"
  to = "/results/:term"
  status = 302
  query = { q = ":term" }

[[redirects]]
  from = "/region"
  to = "/au"
  status = 302
  conditions = { Country = ["au", "nz"], Language = ["en"] }

[[redirects]]
  from = "/backend/*"
  to = "https://api.example.com/api/:splat"
  status = 200
  force = true
  [redirects.headers]
    X-From = "netlify"

[[redirects]]
  from = "/spa-toml/*"
  to = "/app.html"
  status = 200

[[headers]]
  for = "/*"
  [headers.values]
    X-Frame-Options = "DENY"
    Cache-Control = ["public", "max-age=60"]

[[headers]]
  for = "/assets/*"
  [headers.values]
    Cache-Control = "public, max-age=31536000, immutable"
"""

RICH_REDIRECTS = """\
# comments and blank lines are ignored

/old              /new                   301
/temp             /elsewhere             302
/news/:year/:slug /blog/:year-:slug      301
/docs/*           /manual/:splat         301
/search  q=:term  /find/:term            302
/lang    lang=en  /english               302
/spa/*            /app.html              200
/forced           /about.html            200!
/gone             /404.html              404
/outside          https://example.org/x  302
/geo              /au                    302   Country=au,nz
/app/*  200
/proxy/*          https://backend.example.com/:splat  200!   # an inline comment
/café             /cafe                  301
/caf%C3%A9/menu   /menu                  301
"""

RICH_HEADERS = """\
# header rules
/*
  X-Frame-Options: DENY
  X-Multi: one
  X-Multi: two
/assets/*
  Cache-Control: public, max-age=31536000
/blog/:slug
  Link: </style.css>; rel=preload; as=style
"""

STATIC = {
    "index.html": "home",
    "about.html": "about",
    "404.html": "not found",
    "app.html": "app",
    "assets/site.css": "body{}",
    "blog/post.html": "post",
}


class Directory:
    """A directory where the file should be."""

    def __repr__(self) -> str:
        return "(a directory)"


DIRECTORY = Directory()
Mutant = dict[str, bytes | Directory | None]  # file -> content (None: the file does not exist)


def corpus() -> list[Mutant]:
    """The valid inputs mutants start from: the project's own files and a richer set."""

    def read(name: str) -> bytes | None:
        path = ROOT / name
        return path.read_bytes() if path.exists() else None

    own = {name: read(name) for name in FILES}
    rich = {
        "netlify.toml": RICH_TOML.encode(),
        "public/_redirects": RICH_REDIRECTS.encode(),
        "public/_headers": RICH_HEADERS.encode(),
    }
    return [own, rich]


# ---------------------------------------------------------------------------------------------
# Mutations. Each takes the random source and a file's text (or bytes) and returns the mutant.

BAD_BYTES = [b"\xff", b"\xc3", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80"]
CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1c", "\x1f", "\x7f", "\x85", "\u2028", "\ufeff"]


def _at(rng: random.Random, data: bytes) -> int:
    return rng.randrange(len(data) + 1)


def as_directory(rng: random.Random, data: bytes) -> Directory:
    return DIRECTORY


def insert_invalid_utf8(rng: random.Random, data: bytes) -> bytes:
    i = _at(rng, data)
    return data[:i] + rng.choice(BAD_BYTES) + data[i:]


def add_bom(rng: random.Random, data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data


def insert_control(rng: random.Random, data: bytes) -> bytes:
    i = _at(rng, data)
    return data[:i] + rng.choice(CONTROLS).encode() + data[i:]


def control_in_token(rng: random.Random, data: bytes) -> bytes:
    """A control character glued to a token (not just anywhere), where it is easy to miss."""
    spots = [m.end() for m in re.finditer(rb"[^\s]+", data)]
    if not spots:
        return insert_control(rng, data)
    i = rng.choice(spots)
    return data[:i] + rng.choice(CONTROLS).encode() + data[i:]


ODD_SPACES = ["\xa0", "\u2003", "\u3000", "\u200b", "\x85", "\x1c", "\ufeff", "\v", "\f"]


def odd_space(rng: random.Random, data: bytes) -> bytes:
    """A space that is whitespace to JavaScript (Netlify's parsers) or Python, not always both."""
    spots = [m.start() for m in re.finditer(rb" ", data)]
    if not spots:
        return data
    i = rng.choice(spots)
    return data[:i] + rng.choice(ODD_SPACES).encode() + data[i + 1 :]


def crlf(rng: random.Random, data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", rng.choice([b"\r\n", b"\r", b"\n\r"]))


def tabs(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.5:
        return data.replace(b"  ", b"\t")
    i = _at(rng, data)
    return data[:i] + b"\t" + data[i:]


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: _at(rng, data)]


def no_final_newline(rng: random.Random, data: bytes) -> bytes:
    return data.rstrip(b"\n") if rng.random() < 0.5 else data + b"\n\n\n"


BYTE_MUTATIONS = [
    insert_invalid_utf8,
    add_bom,
    insert_control,
    control_in_token,
    odd_space,
    crlf,
    tabs,
    truncate,
    no_final_newline,
    as_directory,
]

# Junk by the role a token plays, so a status is replaced by a junk status as often as by anything.
STATUS_JUNK = [
    "30x", "200!!", "-1", "0", "99999999999999999999", "1e3", "0x12d", "3O1", "!", "301!", "200", "200!", "404",
    "299", "٣٠١", "+301", "301.5", "2OO",
]  # fmt: skip
PATH_JUNK = [
    "/*", "/a/*/b", "/*/x", "/a*", "/:1bad", "/:id/:id", "/:splat", "/:", "/:id/x/:id", "/café", "/caf%C3%A9",
    "/%zz", "/%00", "/%2e%2e/x", "/./a/../b", "//double", "/.netlify/functions/x", "/x?y=z", "/x#frag", "/\\x",
    "/€/∞", "/" + "a" * 3000, "api.example.com", "#", "#x", "/a\tb",
]  # fmt: skip
URL_JUNK = [
    "https://", "http://", "https://[::1", "https://[::1]:8080/x", "https://api.example.com/:splat", "ftp://x",
    "https://user@host/x", "https://host:99999/x", "https://host:port/x", "http://例え.jp/x", "https:///x",
    "https://.netlify.app/.netlify/x", "https://exa_mple.com/*",
]  # fmt: skip
PAIR_JUNK = [
    "=", "a=", "=b", "a==b", "a=b=c", "q=:term", "q=:1bad", "Country=", "Country=au,,nz", "Role=admin",
    "Language=en", "Sign=secret", "signed=x", "Contry=au", "country=nz", "q", "Cookie=a,b", "q=:splat",
]  # fmt: skip
HEADER_JUNK = ["X-A: b", "X-A:", ": v", "X A: v", "X-Ü: v", "X-A: a,,b", "X-A: , ", "Name value", "X-A: a ,b", "X-A::"]
JUNK_TOKENS = STATUS_JUNK + PATH_JUNK + URL_JUNK + PAIR_JUNK + HEADER_JUNK


def junk_like(rng: random.Random, token: str) -> str:
    """Junk of the same role as ``token`` (most of the time), or any junk."""
    if rng.random() < 0.2:
        return rng.choice(JUNK_TOKENS)
    if token.startswith(("http://", "https://")):
        return rng.choice(URL_JUNK)
    if token.startswith("/"):
        return rng.choice(PATH_JUNK + URL_JUNK[:4])
    if token[:1].isdigit():
        return rng.choice(STATUS_JUNK)
    if "=" in token:
        return rng.choice(PAIR_JUNK)
    return rng.choice(HEADER_JUNK + JUNK_TOKENS)


def _lines(rng: random.Random, text: str, predicate: Callable[[str], bool] = str.strip) -> int | None:
    lines = text.split("\n")
    candidates = [i for i, line in enumerate(lines) if predicate(line)]
    return rng.choice(candidates) if candidates else None


def _retokenize(rng: random.Random, text: str, change: Callable[[list[str]], list[str]]) -> str:
    lines = text.split("\n")
    index = _lines(rng, text, lambda line: bool(line.strip()) and not line.lstrip().startswith("#"))
    if index is None:
        return text
    indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
    tokens = lines[index].split()
    lines[index] = indent + " ".join(change(tokens))
    return "\n".join(lines)


def drop_token(rng: random.Random, text: str) -> str:
    def drop(tokens: list[str]) -> list[str]:
        del tokens[rng.randrange(len(tokens))]
        return tokens

    return _retokenize(rng, text, drop)


def duplicate_token(rng: random.Random, text: str) -> str:
    return _retokenize(rng, text, lambda t: t[: (i := rng.randrange(len(t))) + 1] + t[i:])


def swap_tokens(rng: random.Random, text: str) -> str:
    def swap(tokens: list[str]) -> list[str]:
        i, j = rng.randrange(len(tokens)), rng.randrange(len(tokens))
        tokens[i], tokens[j] = tokens[j], tokens[i]
        return tokens

    return _retokenize(rng, text, swap)


def replace_token(rng: random.Random, text: str) -> str:
    def replace(tokens: list[str]) -> list[str]:
        i = rng.randrange(len(tokens))
        tokens[i] = junk_like(rng, tokens[i])
        return tokens

    return _retokenize(rng, text, replace)


def insert_token(rng: random.Random, text: str) -> str:
    def insert(tokens: list[str]) -> list[str]:
        tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(JUNK_TOKENS))
        return tokens

    return _retokenize(rng, text, insert)


def edit_inside_token(rng: random.Random, text: str) -> str:
    """A character changed inside a token: a splat or placeholder mid-path, an encoding, an `=`."""

    def edit(tokens: list[str]) -> list[str]:
        i = rng.randrange(len(tokens))
        token = tokens[i]
        j = rng.randrange(len(token) + 1)
        piece = rng.choice(["*", ":", ":1", "=", "#", "%", "%2F", "%zz", "/", "!", ",", "é", "?", "\\", "..", ";"])
        tokens[i] = token[:j] + piece + token[j:]
        return tokens

    return _retokenize(rng, text, edit)


def long_line(rng: random.Random, text: str) -> str:
    rule = rng.choice(["/long /" + "x" * 20000 + " 301", "/" + "y/" * 5000 + " /z 302", "/a /b 301 " + "k=v " * 3000])
    lines = text.split("\n")
    lines.insert(rng.randrange(len(lines) + 1), rule)
    return "\n".join(lines)


def new_line(rng: random.Random, text: str) -> str:
    """A line of junk tokens: a rule or a header line as someone might mistype it."""
    line = " ".join(rng.choice(JUNK_TOKENS) for _ in range(rng.randint(1, 5)))
    if rng.random() < 0.5:
        line = "  " + line
    lines = text.split("\n")
    lines.insert(rng.randrange(len(lines) + 1), line)
    return "\n".join(lines)


def duplicate_line(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return "\n".join(lines)


def drop_line(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    index = _lines(rng, text)
    if index is not None:
        del lines[index]
    return "\n".join(lines)


TOKEN_MUTATIONS = [
    drop_token,
    duplicate_token,
    swap_tokens,
    replace_token,
    insert_token,
    edit_inside_token,
    long_line,
    new_line,
    duplicate_line,
    drop_line,
]

KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_\-.\"']+)(\s*=\s*)(.*)$")
TABLE_LINE = re.compile(r"^(\s*)(\[\[?)\s*([^\[\]]+?)\s*(\]\]?)\s*$")
TOML_VALUES = [
    '"x"', '""', '"/"', "1", "0", "-1", "301", "3.5", "true", "false", "[]", '["a"]', "[1, 2]", '[1, "a"]',
    "[[1], [2]]", '[["/a"]]', "{}", '{ a = "b" }', '{ from = "/x" }', "1979-05-27T07:32:00Z", "1979-05-27",
    "07:32:00", "inf", "nan", "99999999999999999999", '"""multi\nline"""', "'literal'", '"\\u0000"',
    '"a\\nb"', '"\\t/x"', '" /x "', '"/a b"', '"https://"', '"/:1bad"', '"/*/x"', '"/.netlify/x"',
    "[1.0, 2]", "9007199254740992", "-9007199254740993", "[1979-05-27, 1979-05-27T00:00:00Z]", '"https://[::1"',
]  # fmt: skip
UNKNOWN_KEYS = ["stauts = 301", "form = '/x'", "unknown_key = 1", "Force = true", "values = 1", "for = '/x'"]
EXTRA_BLOCKS = [
    "[context.production]\n  publish = 5\n",
    '[context.deploy-preview.environment]\n  BACKEND_URL = ["a", 1]\n',
    "[[context]]\n  x = 1\n",
    '[dev]\n  framework = "#static"\n',
    "[build.environment]\n  NESTED = { a = 1 }\n",
    'redirects = [{ from = "/inline", to = "/b" }]\n',
    'redirects = [{ from = "/inline", to = "/b", stauts = 302 }, { from = "/x" }]\n',
    'headers = [{ for = "/inline", values = { X-A = "b" } }]\n',
    'headers = [{ for = "/inline", vaules = { X-A = "b" } }]\n',
    "[[redirects]]\n",
    "[[headers]]\n",
    '[[redirects]]\n  from = "/x"\n',
    '[[headers]]\n  for = "/x"\n  values = { "" = "v" }\n',
    '[[headers]]\n  for = "/x"\n  [headers.values]\n    X-A = [["nested"]]\n',
    '[[redirects]]\n  from = "/q"\n  to = "/r"\n  query = { a = 1 }\n  conditions = { Country = 5 }\n',
    '[[redirects]]\n  from = "/h"\n  to = "https://x.example/"\n  status = 200\n  headers = { "X A" = "b" }\n',
    "[build]\n",
    "build.publish = 'public'\n",
    "[[redirects.headers]]\n",
    "[headers]\n",
]


def _toml_key_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.split("\n")) if KEY_LINE.match(line)]


def toml_value_like(rng: random.Random, key: str) -> str:
    """A value for ``key``: often junk of its own kind (a path for `from`, a number for `status`)."""
    if rng.random() < 0.5:
        return rng.choice(TOML_VALUES)
    if key in ("from", "to", "for"):
        junk = rng.choice(PATH_JUNK + URL_JUNK)
        return json.dumps(junk, ensure_ascii=rng.random() < 0.5)  # a JSON string is a TOML basic string
    if key == "status":
        return rng.choice(["301", "200", "0", "-1", "1000", "3.0", '"301"', '"200!"', "9007199254740992", "0x12d"])
    return json.dumps(rng.choice(HEADER_JUNK + PAIR_JUNK))


def change_value_type(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    candidates = _toml_key_lines(text)
    if not candidates:
        return text
    i = rng.choice(candidates)
    m = KEY_LINE.match(lines[i])
    assert m
    lines[i] = m.group(1) + m.group(2) + m.group(3) + toml_value_like(rng, m.group(2).strip("\"'"))
    return "\n".join(lines)


def flip_table_kind(rng: random.Random, text: str) -> str:
    """[x] <-> [[x]], so a table becomes an array of tables and back."""
    lines = text.split("\n")
    candidates = [i for i, line in enumerate(lines) if TABLE_LINE.match(line)]
    if not candidates:
        return text
    i = rng.choice(candidates)
    m = TABLE_LINE.match(lines[i])
    assert m
    name = m.group(3)
    lines[i] = m.group(1) + (f"[{name}]" if m.group(2) == "[[" else f"[[{name}]]")
    return "\n".join(lines)


def drop_key(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    candidates = _toml_key_lines(text)
    if candidates:
        del lines[rng.choice(candidates)]
    return "\n".join(lines)


def duplicate_key(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    candidates = _toml_key_lines(text)
    if candidates:
        i = rng.choice(candidates)
        lines.insert(i + 1, lines[i])
    return "\n".join(lines)


def unknown_key(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    candidates = [i for i, line in enumerate(lines) if TABLE_LINE.match(line)] or [-1]
    lines.insert(rng.choice(candidates) + 1, "  " + rng.choice(UNKNOWN_KEYS))
    return "\n".join(lines)


def nest_value(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    candidates = _toml_key_lines(text)
    if not candidates:
        return text
    i = rng.choice(candidates)
    m = KEY_LINE.match(lines[i])
    assert m
    value = m.group(4)
    wrapped = rng.choice([f"[{value}]", f"[[{value}]]", "{ v = " + value + " }", f"[{value}, {value}]"])
    lines[i] = m.group(1) + m.group(2) + m.group(3) + wrapped
    return "\n".join(lines)


def extra_block(rng: random.Random, text: str) -> str:
    block = rng.choice(EXTRA_BLOCKS)
    if block.startswith(("redirects =", "headers =", "build.")):
        return block + text  # top-level keys must come before the first table
    return text.rstrip("\n") + "\n\n" + block


def rename_key(rng: random.Random, text: str) -> str:
    """A key with odd quoting, case or a dot: `"from"`, `From`, `from.x`, `'for'`."""
    lines = text.split("\n")
    candidates = _toml_key_lines(text)
    if not candidates:
        return text
    i = rng.choice(candidates)
    m = KEY_LINE.match(lines[i])
    assert m
    key = m.group(2)
    new = rng.choice([f'"{key}"', f"'{key}'", key.capitalize(), f"{key}.x", f'"{key} "', f"{key}_", '""'])
    lines[i] = m.group(1) + new + m.group(3) + m.group(4)
    return "\n".join(lines)


TOML_MUTATIONS = [
    change_value_type,
    flip_table_kind,
    drop_key,
    duplicate_key,
    unknown_key,
    nest_value,
    extra_block,
    rename_key,
]


@dataclass
class Case:
    seed: int
    index: int
    files: Mutant
    applied: list[str] = field(default_factory=list)

    def describe(self) -> str:
        shown = []
        for name, data in self.files.items():
            if isinstance(data, bytes):
                text = repr(data if len(data) < 1500 else data[:1500] + b"...")
            else:
                text = "(absent)" if data is None else repr(data)
            shown.append(f"  {name}: {text}")
        return (
            f"seed {self.seed}, mutant #{self.index}: {', '.join(self.applied)} "
            f"(mutants(seed={self.seed}, count={self.index + 1})[-1] makes it again)\n" + "\n".join(shown)
        )


def mutant(seed: int, index: int, bases: list[Mutant]) -> Case:
    """Mutant ``index`` of ``seed``: one to three mutations of one or two files of a base."""
    rng = random.Random(f"{seed}/{index}")
    files = dict(rng.choice(bases))
    case = Case(seed, index, files)
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        name = rng.choice(FILES)
        current = files[name]
        data = current if isinstance(current, bytes) else b""
        kinds: list[Callable[..., object]] = list(BYTE_MUTATIONS)
        weights = [1.0] * len(kinds)
        text_kinds = TOML_MUTATIONS if name == "netlify.toml" else TOKEN_MUTATIONS
        kinds += text_kinds
        weights += [3.0] * len(text_kinds)
        operation = rng.choices(kinds, weights)[0]
        if operation in BYTE_MUTATIONS:
            data = operation(rng, data)
        else:
            # surrogateescape keeps earlier byte mutations (invalid UTF-8) through text edits
            text = data.decode("utf-8", "surrogateescape")
            data = str(operation(rng, text)).encode("utf-8", "surrogateescape")
        files[name] = data
        case.applied.append(f"{operation.__name__}({name})")
    return case


def mutants(seed: int = SEED, count: int = COUNT) -> list[Case]:
    bases = corpus()
    return [mutant(seed, index, bases) for index in range(count)]


# ---------------------------------------------------------------------------------------------
# The site a mutant is written into, and what must hold for it


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    for name, body in STATIC.items():
        (root / "public" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "public" / name).write_text(body)
    return root


def write(root: Path, files: Mutant) -> None:
    for name, data in files.items():
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        if isinstance(data, Directory):
            path.mkdir()
        elif data is not None:
            path.write_bytes(data)


FIXED_PROBES = [
    "/",
    "/api/x",
    "/api/x?q=1&q=2",
    "/api/%2e%2e/x",
    "/api/../index.html",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/a/./b/../c",
    "//double//slash/",
    "/caf%C3%A9",
    "/caf%c3%a9/menu",
    "/%ff%fe",
    "/x%00y",
    "/x%0d%0aSet-Cookie:%20a=b",
    "/search?q=cats+dogs%2Fbirds",
    "/?a=%&b",
    "/assets/site.css",
    "/about/",
    "/spa/deep/link",
    "/blog/post",
]


def probes(files: Mutant) -> list[str]:
    """Request targets: the fixed set plus a path for every rule the mutant might have."""
    found = set(FIXED_PROBES)
    for data in files.values():
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
        for token in re.findall(r"(?<![\w:])(/[^\s\"'#]*)", text):
            path = re.sub(r":[A-Za-z_]\w*", "value", token).replace("*", "a/b")
            if len(path) < 200:
                found.add(path)
                found.add(path + "?q=x&lang=en")
    return sorted(found)


def router_problems(root: Path, files: Mutant) -> list[str]:
    """What is wrong with the routing of a site that passed check (empty when nothing is)."""
    site = load_site(root)
    router = Router(site)
    wrong = []
    for rule in site.redirects:
        for name, value in rule.headers.items():
            if CONTROL.search(name + value):
                wrong.append(f"{rule.origin}: proxy header {name!r}: {value!r}")
    for target in probes(files):
        for method in ("GET", "POST"):
            decision = router.route(method, target)
            if decision.status not in SANE_STATUSES:
                wrong.append(f"{method} {target}: status {decision.status}")
            for name, value in decision.headers:
                if CONTROL.search(name) or CONTROL.search(value) or "\r" in value or "\n" in value:
                    wrong.append(f"{method} {target}: header {name!r}: {value!r}")
            if decision.location and not re.fullmatch(r"[\x21-\x7e]+", decision.location):
                wrong.append(f"{method} {target}: {decision.kind} to {decision.location!r}")
    return wrong


def unaccounted(files: Mutant, problems: list[Problem]) -> list[str]:
    """Lines of ``_redirects`` and ``_headers`` that became neither a rule nor a problem.

    Lines as a person sees them: a CR alone ends one in an editor, while Netlify's parsers
    read on to the next LF. A ``_headers`` path counts as read when a line of its block has a
    problem (its only header was bad, say).
    """
    wrong = []
    flagged = {(p.origin.file, p.origin.line) for p in problems}
    for name in ("public/_redirects", "public/_headers"):
        data = files[name]
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else ""
        except UnicodeDecodeError:
            continue
        seen = [
            (number, piece)
            for number, line in enumerate(text.split("\n"), start=1)
            for piece in (part.strip(JS_SPACE) for part in line.split("\r"))
            if piece and not piece.startswith("#") and (name, number) not in flagged
        ]
        if name.endswith("_redirects"):
            ruled = {rule.origin.line for rule in parse_redirects_file(text, name, [])}
            wrong += [
                f"{name}:{n}: {line[:80]!r} became neither a rule nor a problem" for n, line in seen if n not in ruled
            ]
            continue
        values = {rule.origin.line: set(rule.values) for rule in parse_headers_file(text, name, [])}
        lines = text.split("\n")
        paths = [n for n, line in enumerate(lines, start=1) if line.strip(JS_SPACE).startswith("/")]
        for number, line in seen:
            block = max([n for n in paths if n <= number], default=0)
            ends = min([n for n in paths if n > block], default=10**9)
            if any(f == name and block <= n < ends for f, n in flagged):
                continue  # a problem in the block accounts for it
            if line.startswith("/") and number in values:
                continue
            if not line.startswith("/") and line.partition(":")[0].strip(JS_SPACE) in values.get(block, set()):
                continue
            wrong.append(f"{name}:{number}: {line[:80]!r} became neither a rule nor a problem")
    return wrong


def verdict(root: Path, case: Case) -> tuple[bool, list[str]]:
    """Whether check found an error in a mutant, and everything wrong with how check and the
    edge treat it."""
    write(root, case.files)
    try:
        problems = check_config(load(root))
    except Exception as exc:  # the point: nothing may escape as a traceback
        return True, [f"check raised {type(exc).__name__}: {exc}"]
    wrong = [
        f"{problem} (line {problem.origin.line} < 1)" for problem in problems if problem.origin.line < 1
    ]  # every message must point at a line, warnings too
    wrong += unaccounted(case.files, problems)
    errors = [p for p in problems if p.severity == "error"]
    try:
        if not errors:
            return False, wrong + router_problems(root, case.files)
        load_site(root)
        return True, [*wrong, f"check found {errors[0]} but load_site started"]
    except ConfigError as exc:
        message = str(exc)
        if errors and str(errors[0]) in message:
            match = ERROR.match(message)
            if "\n" in message or not match or int(match.group(2)) < 1:
                wrong.append(f"load_site: not one `file:line: message` line: {message!r}")
        else:
            wrong.append(f"load_site raised {message!r} but check found {[str(p) for p in errors]}")
    except Exception as exc:
        wrong.append(f"load_site or the router raised {type(exc).__name__}: {exc}")
    return bool(errors), wrong


def test_the_corpus_is_valid_and_served(site: Path) -> None:
    """The inputs mutants start from must be clean, or the fuzzer only ever tests errors."""
    for files in corpus():
        write(site, files)
        assert [str(p) for p in check_config(load(site)) if p.severity == "error"] == []
        assert router_problems(site, files) == []


def test_mutants_are_checked_cleanly_or_named_by_file_and_line(site: Path) -> None:
    failures = []
    outcomes = {"clean": 0, "error": 0}
    for case in mutants():
        has_errors, wrong = verdict(site, case)
        outcomes["error" if has_errors else "clean"] += 1
        if wrong:
            failures.append(case.describe() + "\n  -> " + "\n  -> ".join(wrong[:5]))
    assert not failures, f"{len(failures)} of {COUNT} mutants failed:\n\n" + "\n\n".join(failures[:8])
    # Both outcomes must be common, or the mutator has stopped exploring one of them.
    assert min(outcomes.values()) > COUNT // 10, outcomes


def test_every_mutation_class_is_exercised() -> None:
    applied = {name.split("(")[0] for case in mutants() for name in case.applied}
    every = {f.__name__ for f in BYTE_MUTATIONS + TOKEN_MUTATIONS + TOML_MUTATIONS}
    assert every <= applied, f"never applied: {sorted(every - applied)}"


def test_mutants_are_reproducible() -> None:
    assert [c.files for c in mutants(count=20)] == [c.files for c in mutants(count=20)]
    assert [c.files for c in mutants(seed=SEED + 1, count=20)] != [c.files for c in mutants(count=20)]


def test_check_command_on_mutants(site: Path) -> None:
    """`python -m cnd_toolkit.netlify.check` exits 0 or 1 and never prints a traceback."""
    chosen: dict[bool, list[Case]] = {True: [], False: []}
    for case in mutants(count=200):
        write(site, case.files)
        has_errors = any(p.severity == "error" for p in check_config(load(site)))
        if len(chosen[has_errors]) < 3:
            chosen[has_errors].append(case)
    for has_errors, cases in chosen.items():
        for case in cases:
            write(site, case.files)
            done = subprocess.run(
                [sys.executable, "-m", "cnd_toolkit.netlify.check", str(site)], cwd=ROOT, capture_output=True, text=True
            )
            assert "Traceback" not in done.stderr, case.describe() + "\n" + done.stderr
            assert done.returncode == (1 if has_errors else 0), case.describe() + "\n" + done.stderr


def test_clean_mutants_are_served_by_the_edge(site: Path) -> None:
    """A few clean mutants through the real edge: what the router decides, aiohttp can send."""
    served = 0
    for case in mutants(count=300):
        if served == 6:
            break
        write(site, case.files)
        if any(p.severity == "error" for p in check_config(load(site))):
            continue
        config = load_site(site)
        router = Router(config)
        targets = [t for t in probes(case.files) if router.route("GET", t).kind != "proxy"][:12]
        with serve_in_thread(config) as edge, httpx.Client(base_url=edge.url, timeout=60) as http:
            for target in targets:
                response = http.get(target)
                assert response.status_code in SANE_STATUSES, case.describe() + f"\n  -> GET {target}"
        served += 1
    assert served == 6
