"""Differential: the generated project's Netlify config model against Netlify's own parsers.

The sites are the generated project's own config fuzzer's mutants (its tests/test_config_fuzz.py:
valid netlify.toml, ``_redirects`` and ``_headers`` files under seeded byte, token and TOML
structure mutations) and files of rule lines from a small grammar (:func:`grammar_site`: valid
tokens, and the fuzzer's junk in every place). All of them go through
``@netlify/redirect-parser`` and ``@netlify/headers-parser`` in one node process
(tests/netlify_parsers.mjs), and:

- a ``_redirects`` line our model reads without an error gives the rule Netlify's parser gives
  (from, to, status, force, query, conditions, signed); a line Netlify's parser rejects is an
  error in ours, at that line; a rule line ours leaves out has a problem at that line;
- a ``_headers`` block (a path and its header lines) ours reads without an error gives Netlify's
  rule (for, values); an error Netlify reports is an error of ours at that line or in that block;
- a netlify.toml that Netlify's parsers cannot read, or whose ``[[redirects]]`` or
  ``[[headers]]`` they reject, has an error in ours;
- a site ours finds no error in has Netlify's rules in Netlify's order, both files together.

Ours may be stricter, never laxer. The differences kept on purpose are :data:`DELIBERATE`, each
with a test that it still occurs. ``PARSER_DIFF_SEED``, ``PARSER_DIFF_COUNT`` (mutants) and
``PARSER_DIFF_GRAMMAR`` (generated sites) change the run.

The netlify.toml a deploy uploads (``cnd_toolkit.netlify.publish.served_config``: the served part of the
project's, written again by tomli-w) is held to the same parsers: for every mutant and every
generated netlify.toml (:func:`toml_site`, ``PARSER_DIFF_UPLOADED`` of them) that a deploy
accepts, Netlify's parsers read the same redirects and headers, with the same errors, from the
uploaded file as from the project's, and nothing of the build settings is in it.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tests.helpers import unavailable
from tools.generated import REPO, TOOLKIT, render

NODE_MODULES = REPO / ".cache/netlify-tools/node_modules"
SCRIPT = Path(__file__).with_name("netlify_parsers.mjs")
SEED = int(os.environ.get("PARSER_DIFF_SEED", "20250611"))
COUNT = int(os.environ.get("PARSER_DIFF_COUNT", "600"))
GRAMMAR_COUNT = int(os.environ.get("PARSER_DIFF_GRAMMAR", "300"))
UPLOADED_COUNT = int(os.environ.get("PARSER_DIFF_UPLOADED", "300"))
REDIRECTS, HEADERS, TOML = "public/_redirects", "public/_headers", "netlify.toml"

# Where ours reads a rule differently from Netlify's parsers on purpose: name -> (why, a site
# that shows it). The comparison allows for each; test_deliberate_differences_still_occur
# checks that each still differs.
DELIBERATE: dict[str, tuple[str, dict[str, bytes | None]]] = {
    "identical header rules": (
        "Netlify's merge keeps only the last of identical header rules; the model keeps every copy, "
        "which no request can tell apart (every matching rule applies and the later value wins)",
        {HEADERS: b"/*\n  X-A: b\n/x\n  X-B: c\n/*\n  X-A: b\n"},
    ),
    "comma lists in any condition": (
        "Netlify's parser makes lists of Country, Language and Role only and leaves e.g. "
        "Cookie=a,b a string; the model keeps every condition as a list (the edge evaluates none "
        "of them: it skips rules with conditions and says so)",
        {REDIRECTS: b"/a /b 302 Cookie=a,b\n"},
    ),
}
DIFFERS: dict[str, Callable[[Ours, dict[str, Any]], bool]] = {
    "identical header rules": lambda us, them: len(us.config.headers) != len(them["all"]["headers"]),
    "comma lists in any condition": lambda us, them: (
        us.config.redirects[0].conditions != them["all"]["redirects"][0]["conditions"]
    ),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A default render, the toolkit's config model and check, and its config fuzzer (by path: the
    toolkit's ``tests`` package is not this repository's)."""
    project = render(tmp_path_factory.mktemp("parsers") / "svc", git=False)
    config = importlib.import_module("cnd_toolkit.netlify.config")
    check = importlib.import_module("cnd_toolkit.netlify.check")
    publish = importlib.import_module("cnd_toolkit.netlify.publish")
    errors = importlib.import_module("cnd_toolkit.errors")
    spec = importlib.util.spec_from_file_location("generated_config_fuzz", TOOLKIT / "tests/test_config_fuzz.py")
    assert spec and spec.loader
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fuzz  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(fuzz)
    finally:
        del sys.modules[spec.name]  # needed only while it loads
    yield SimpleNamespace(project=project, config=config, check=check, fuzz=fuzz, publish=publish, errors=errors)


def netlify(sites: list[dict[str, bytes | None]]) -> list[dict[str, Any]]:
    """Netlify's parsers on every site, in one node process."""
    if shutil.which("node") is None or not (NODE_MODULES / "@netlify/headers-parser").is_dir():
        unavailable("node and @netlify/redirect-parser, @netlify/headers-parser are needed (.ci/run installs them)")
    encode = {name: key for key, name in (("redirects", REDIRECTS), ("headers", HEADERS), ("toml", TOML))}
    batch = [
        {encode[name]: None if data is None else base64.b64encode(data).decode() for name, data in site.items()}
        for site in sites
    ]
    done = subprocess.run(
        ["node", str(SCRIPT), str(NODE_MODULES)],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


# ---------------------------------------------------------------------------------------------
# Rules in one shape, ours and Netlify's


def their_redirect(rule: dict[str, Any]) -> tuple[Any, ...]:
    conditions = {
        # DELIBERATE["comma lists in any condition"]
        key: value if isinstance(value, list) else re.split(r"\s*,\s*", value.strip())
        for key, value in rule.get("conditions", {}).items()
    }
    return (
        rule["from"],
        rule["to"],
        rule.get("status", 301),
        rule["force"],
        rule.get("query", {}),
        conditions,
        rule.get("signed", ""),
    )


def our_redirect(rule: Any) -> tuple[Any, ...]:
    return (rule.source, rule.to, rule.status, rule.force, rule.query, rule.conditions, rule.signed)


def their_header(rule: dict[str, Any]) -> tuple[Any, ...]:
    return (rule["for"], rule["values"])


def our_header(rule: Any) -> tuple[Any, ...]:
    return (rule.source, rule.values)


def deduplicated(rules: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Header rules as Netlify's merge leaves them: of identical rules, the last copy only
    (DELIBERATE["identical header rules"])."""
    seen: list[tuple[Any, ...]] = []
    for rule in reversed(rules):
        if rule not in seen:
            seen.append(rule)
    return seen[::-1]


@dataclass
class Ours:
    """Our model of one site: every problem check reports, and the rules each file gives."""

    problems: list[Any]
    config: Any
    file_redirects: list[Any] | None  # per line, before merging with netlify.toml; None: unreadable
    file_headers: list[Any] | None

    def errors(self, file: str, first: int = 0, last: int = 10**9) -> list[str]:
        return [
            str(p)
            for p in self.problems
            if p.severity == "error" and p.origin.file == file and first <= p.origin.line <= last
        ]

    def problems_at(self, file: str, line: int) -> list[str]:
        return [str(p) for p in self.problems if p.origin.file == file and p.origin.line == line]


def ours(generated: SimpleNamespace, root: Path, site: dict[str, bytes | None]) -> Ours:
    config_module = generated.config
    config = config_module.load(root)
    problems = generated.check.check_config(config)

    def parsed(name: str, parse: Any) -> list[Any] | None:
        data = site[name]
        if data is None:
            return []
        try:
            text = data.decode("utf-8")  # a BOM stays, as in load()
        except UnicodeDecodeError:
            return None
        return list(parse(text, name, []))

    return Ours(
        problems,
        config,
        parsed(REDIRECTS, config_module.parse_redirects_file),
        parsed(HEADERS, config_module.parse_headers_file),
    )


def short(value: object, limit: int = 240) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...)"


def differences(us: Ours, them: dict[str, Any]) -> list[str]:
    """Where our model is laxer than Netlify's parsers, or reads a rule differently."""
    found: list[str] = []
    toml_errors = ([] if them["toml"]["ok"] else [them["toml"]["error"]]) + them["toml"]["errors"]
    if toml_errors and not us.errors(TOML):
        found.append(f"{TOML}: Netlify: {short(toml_errors[0])}; ours: no error")
    if us.config.publish.resolve() != (us.config.root / "public").resolve():
        return found  # a mutated publish: ours reads other files than the ones Netlify's parsers got
    # _redirects, line by line
    read_lines = set()
    for entry in them["lines"]:
        line = entry["line"]
        read_lines.add(line)
        errors = us.errors(REDIRECTS, line, line)
        if us.file_redirects is None:
            continue  # not UTF-8: ours rejects the whole file
        if entry["errors"] and not errors:
            found.append(f"{REDIRECTS}:{line}: Netlify: {short(entry['errors'][0])}; ours: no error")
        if errors:
            continue
        mine = [our_redirect(r) for r in us.file_redirects if r.origin.line == line]
        theirs = [their_redirect(r) for r in entry["rules"]]
        if mine and mine != theirs:
            found.append(f"{REDIRECTS}:{line}: ours {short(mine)}, Netlify {short(theirs)}")
        if not mine and theirs and not us.problems_at(REDIRECTS, line):
            found.append(f"{REDIRECTS}:{line}: Netlify reads {short(theirs)}; ours leaves the line out silently")
    for rule in us.file_redirects or []:
        if rule.origin.line not in read_lines:
            found.append(f"{rule.origin}: ours reads {short(our_redirect(rule))}; Netlify's parser skips the line")
    # _headers, block by block
    for block in them["blocks"]:
        first, last = block["start"], block["end"]
        errors = us.errors(HEADERS, first, last)
        if us.file_headers is None:
            continue
        for error in block["errors"]:
            at = re.search(r"line (\d+)", error)
            covered = us.errors(HEADERS, int(at.group(1)), int(at.group(1))) if at else errors
            if not covered:
                found.append(f"{HEADERS}:{at.group(1) if at else first}: Netlify: {short(error)}; ours: no error")
        if errors:
            continue
        mine = [our_header(r) for r in us.file_headers if first <= r.origin.line <= last]
        theirs = [their_header(r) for r in block["rules"]]
        if mine != theirs:
            found.append(f"{HEADERS}:{first}-{last}: ours {short(mine)}, Netlify {short(theirs)}")
    # a site without errors: Netlify's rules, in Netlify's order
    if not [p for p in us.problems if p.severity == "error"]:
        mine = [our_redirect(r) for r in us.config.redirects]
        theirs = [their_redirect(r) for r in them["all"]["redirects"]]
        if mine != theirs:
            found.append(f"redirects in order: ours {short(mine, 600)}, Netlify {short(theirs, 600)}")
        mine_headers = deduplicated([our_header(r) for r in us.config.headers])
        theirs_headers = [their_header(r) for r in them["all"]["headers"]]
        if mine_headers != theirs_headers:
            found.append(f"headers in order: ours {short(mine_headers, 600)}, Netlify {short(theirs_headers, 600)}")
    return found


def grammar_site(fuzz: ModuleType, rng: random.Random) -> dict[str, bytes | None]:
    """A site of generated rule lines: mostly valid tokens, some of the fuzzer's junk in each place."""

    def pick(valid: list[str], junk: list[str]) -> str:
        return rng.choice(junk if rng.random() < 0.15 else valid)

    def space() -> str:
        return rng.choice(fuzz.ODD_SPACES) if rng.random() < 0.1 else rng.choice([" ", "  ", "\t"])

    paths = ["/old", "/news/:year/:slug", "/docs/*", "/app/*", "/", "/café", "/a%20b", "/shop/:id", "/x/"]
    targets = ["/new", "/blog/:year-:slug", "/manual/:splat", "/find/:term", "https://api.example.com/:splat"]
    statuses = ["301", "302", "200", "200!", "404", "301!", "410", "307"]
    pairs = ["q=:term", "lang=en", "page=1", "id=:id"]
    conditions = ["Country=au,nz", "Language=en", "Role=admin", "Cookie=session", "country=us", "Country=au"]
    path_junk = fuzz.PATH_JUNK + fuzz.URL_JUNK
    redirects = []
    for _ in range(rng.randint(1, 12)):
        tokens = [pick(paths, path_junk)] + [pick(pairs, fuzz.PAIR_JUNK) for _ in range(rng.choice([0, 0, 0, 1, 2]))]
        if rng.random() < 0.9:
            tokens.append(pick(targets, path_junk))
        if rng.random() < 0.7:
            tokens.append(pick(statuses, fuzz.STATUS_JUNK))
        tokens += [pick(conditions, fuzz.PAIR_JUNK) for _ in range(rng.choice([0, 0, 0, 1, 2]))]
        if rng.random() < 0.1:
            tokens.append(rng.choice(["# a comment", "#", "#x y"]))
        redirects.append(rng.choice(["", "", " ", "\t"]) + "".join(token + space() for token in tokens).rstrip(" "))
    names = ["X-A", "x-a", "Cache-Control", "Link", "X-Frame-Options"]
    values = ["a", "a, b", "a ,b", "max-age=0", "a:b", " x ", "</a>; rel=preload", "é", "a\u00a0", "b\t"]
    headers = []
    for _ in range(rng.randint(1, 5)):
        headers.append(pick(paths, fuzz.PATH_JUNK[:12]) + (space() if rng.random() < 0.2 else ""))
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            colon = rng.choice([":", ": ", " : ", ":\t"])
            line = pick(names, ["X A", "", "X-Ü"]) + colon + pick(values, ["", ",", "a,,b"])
            if rng.random() < 0.05:
                line = rng.choice(fuzz.HEADER_JUNK)
            headers.append(rng.choice(["  ", "  ", "\t", "", " \u00a0"]) + line)
    return {
        TOML: b'[build]\n  publish = "public"\n',
        REDIRECTS: "\n".join(redirects).encode(),
        HEADERS: "\n".join(headers).encode(),
    }


@dataclass
class Compared:
    kind: str  # mutant | grammar | deliberate
    label: str
    files: dict[str, bytes | None]
    ours: Ours
    theirs: dict[str, Any]
    found: list[str]


@pytest.fixture(scope="module")
def compared(generated: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> list[Compared]:
    """Every site (mutants, generated rule lines, the deliberate differences) through both
    parsers: Netlify's in one node process."""
    fuzz = generated.fuzz
    sites: list[tuple[str, str, dict[str, bytes | None]]] = []
    for case in fuzz.mutants(SEED, COUNT):
        # Mutants that put a directory where a file should be are the fuzzer's own business.
        if all(isinstance(data, bytes | None) for data in case.files.values()):
            sites.append(("mutant", case.describe(), case.files))
    rng = random.Random(SEED)
    for index in range(GRAMMAR_COUNT):
        files = grammar_site(fuzz, rng)
        sites.append(("grammar", f"seed {SEED}, generated site #{index}:\n  {files!r}", files))
    for name, (_, files) in DELIBERATE.items():
        full = {TOML: b'[build]\n  publish = "public"\n', REDIRECTS: None, HEADERS: None, **files}
        sites.append(("deliberate", name, full))
    results = netlify([files for _, _, files in sites])
    root = tmp_path_factory.mktemp("site")
    (root / "public").mkdir()
    out = []
    for (kind, label, files), them in zip(sites, results, strict=True):
        fuzz.write(root, files)
        us = ours(generated, root, files)
        out.append(Compared(kind, label, files, us, them, differences(us, them)))
    return out


def failures(compared: list[Compared], kind: str) -> str:
    found = [c for c in compared if c.kind == kind and c.found]
    shown = [c.label + "\n  -> " + "\n  -> ".join(c.found[:4]) for c in found[:8]]
    total = sum(c.kind == kind for c in compared)
    return f"{len(found)} of {total} differ:\n\n" + "\n\n".join(shown) if found else ""


def test_mutants_read_as_netlify_reads_them(compared: list[Compared]) -> None:
    assert not failures(compared, "mutant")


def test_generated_rule_lines_read_as_netlify_reads_them(compared: list[Compared]) -> None:
    assert not failures(compared, "grammar")


def test_the_comparison_sees_rules_and_errors(compared: list[Compared]) -> None:
    """Most sites have rules both parsers read and errors Netlify's parser reports: a
    differential that compared nothing would pass too."""
    mutants = [c for c in compared if c.kind != "deliberate"]
    rules = sum(bool(entry["rules"]) for c in mutants for entry in c.theirs["lines"])
    errors = sum(bool(entry["errors"]) for c in mutants for entry in c.theirs["lines"])
    clean = sum(not any(c.ours.errors(name) for name in (TOML, REDIRECTS, HEADERS)) for c in mutants)
    assert rules > 1000 and errors > 300 and clean > len(mutants) // 10, (rules, errors, clean)


@pytest.mark.parametrize("name", DELIBERATE)
def test_deliberate_differences_still_occur(compared: list[Compared], name: str) -> None:
    """If Netlify's parsers come to agree, drop the entry (and the allowance for it)."""
    [site] = [c for c in compared if c.kind == "deliberate" and c.label == name]
    assert site.found == []  # allowed for: nothing else differs
    assert DIFFERS[name](site.ours, site.theirs), f"{name}: Netlify's parsers now read it as ours does"


# ---------------------------------------------------------------------------------------------
# The netlify.toml a deploy uploads: the rules Netlify reads from it are the project's


# What TOML must quote or escape, and characters rules carry: in paths, and (with spaces) in values.
PATH_PIECES = ['"', "\\", "'", "#", "=", "[x]", "{y}", "é", "😀", ";", ":", "%20", "'''", '"""']
VALUE_PIECES = [*PATH_PIECES, "\t", "\u2028", "a, b", " ,", " "]
SECRET_PREFIX = "nfp_build_secret_"


def toml_site(rng: random.Random, index: int) -> bytes:
    """A generated netlify.toml: build settings holding secrets, and [[redirects]] and
    [[headers]] with strings TOML must escape, in the layouts TOML allows (tables, sub-tables,
    inline tables, dotted keys), its sections in any order."""

    def text(base: str, pieces: list[str] = VALUE_PIECES) -> str:
        return base + "".join(rng.choice(pieces) for _ in range(rng.choice([0, 0, 1, 2, 3])))

    def path(base: str) -> str:
        return base if base.endswith("*") else text(base, PATH_PIECES)  # a splat ends the path

    def string(value: str) -> str:
        """``value`` as a TOML string: literal where it can be, else basic with escapes (non-ASCII
        escaped too, half the time)."""
        if rng.random() < 0.3 and not any(c in value for c in "'\t\u2028"):
            return f"'{value}'"
        ascii_only = rng.random() < 0.5
        out = ""
        for char in value:
            if char in '"\\':
                out += "\\" + char
            elif ord(char) < 0x20 or ord(char) == 0x7F or (ascii_only and ord(char) > 0x7E):
                out += f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
            else:
                out += char
        return f'"{out}"'

    def value(item: str | list[str]) -> str:
        return "[" + ", ".join(string(x) for x in item) + "]" if isinstance(item, list) else string(item)

    def pairs(values: dict[str, Any], prefix: str = "") -> str:
        return "".join(f"  {prefix}{json.dumps(k)} = {value(v)}\n" for k, v in values.items())

    def inline(name: str, values: dict[str, Any]) -> str:
        return f"  {name} = {{" + ", ".join(f"{json.dumps(k)} = {value(v)}" for k, v in values.items()) + "}\n"

    def some(values: dict[str, Any], name: str, table: str) -> str:
        layout = rng.choice(["inline", "table", "dotted"])
        if layout == "inline":
            return inline(name, values)
        if layout == "dotted":
            return pairs(values, f"{name}.")
        return f"  [{table}.{name}]\n" + pairs(values)

    secrets = [f"{SECRET_PREFIX}{index}_{n}" for n in range(4)]
    blocks = [
        f'[build]\n  publish = "public"\n  command = "make --token={secrets[0]}"\n'
        f'[build.environment]\n  API_TOKEN = "{secrets[1]}"\n',
        f'[[plugins]]\n  package = "./plugins/x"\n  [plugins.inputs]\n    key = "{secrets[2]}"\n',
        f'[context.production.environment]\n  DB_PASSWORD = "{secrets[3]}"\n',
        '[dev]\n  framework = "#static"\n',
    ]
    sources = ["/old", "/news/:year/:slug", "/docs/*", "/app/*", "/", "/café", "/a%20b", "/shop/:id/"]
    targets = ["/new", "/blog/:year-:slug", "/manual/:splat", "https://api.example.com/:splat", "/index.html"]
    for _ in range(rng.randint(0, 6)):
        body = f"  from = {string(path(rng.choice(sources)))}\n  to = {string(path(rng.choice(targets)))}\n"
        if rng.random() < 0.7:
            body += f"  status = {rng.choice([200, 301, 302, 404, 410])}\n"
        if rng.random() < 0.4:
            body += f"  force = {rng.choice(['true', 'false'])}\n"
        tables = ""
        for name, values in (
            ("query", {"id": ":id", "lang": text("en")}),
            ("conditions", {"Country": ["au", "nz"], "Language": text("en")}),
            ("headers", {"X-From": text("Netlify")}),
        ):
            if rng.random() < 0.25:
                part = some(values, name, "redirects")
                if part.startswith("  ["):
                    tables += part  # a sub-table ends the entry's own keys
                else:
                    body += part
        blocks.append("[[redirects]]\n" + body + tables)
    names = ["X-A", "x-a", "Cache-Control", "Link", "X-Frame-Options"]
    for _ in range(rng.randint(0, 4)):
        values: dict[str, Any] = {}
        for _ in range(rng.randint(1, 3)):
            one = text(rng.choice(["DENY", "max-age=0", "a ,b", "</a>; rel=preload"]))
            values[rng.choice(names)] = [text("v"), text("w")] if rng.random() < 0.2 else one
        blocks.append(f"[[headers]]\n  for = {string(path(rng.choice(sources)))}\n" + some(values, "values", "headers"))
    if rng.random() < 0.3:
        blocks.append('[images]\n  remote_images = ["https://cdn\\\\.example\\\\.org/.*"]\n')
    rng.shuffle(blocks)
    return "\n".join(blocks).encode()


@dataclass
class Uploaded:
    label: str
    project: bytes
    uploaded: bytes | None  # None: nothing of netlify.toml is served, so no file is uploaded
    theirs: dict[str, Any] = field(default_factory=dict)  # Netlify's parsers on the project's file
    theirs_uploaded: dict[str, Any] = field(default_factory=dict)  # and on the uploaded one


@pytest.fixture(scope="module")
def uploaded(generated: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Uploaded], int]:
    """Every mutant and generated netlify.toml a deploy accepts, with the file it would upload,
    both through Netlify's parsers (one node process); and how many sites were tried."""
    fuzz, publish = generated.fuzz, generated.publish
    tried: list[tuple[str, dict[str, bytes | None]]] = []
    for case in fuzz.mutants(SEED, COUNT):
        if all(isinstance(data, bytes | None) for data in case.files.values()):
            tried.append((case.describe(), case.files))
    rng = random.Random(SEED)
    for index in range(UPLOADED_COUNT):
        site = {TOML: toml_site(rng, index), REDIRECTS: None, HEADERS: None}
        tried.append((f"seed {SEED}, generated netlify.toml #{index}:\n{site[TOML]!r}", site))
    root = tmp_path_factory.mktemp("uploaded")
    (root / "public").mkdir()
    accepted: list[Uploaded] = []
    for label, files in tried:
        fuzz.write(root, files)
        (root / "public" / "index.html").write_text("<h1>home</h1>")
        try:
            deployed = publish.site_files(root, "https://api.example.com")
        except generated.errors.ConfigError:
            continue  # a deploy refuses it: nothing is uploaded
        if files[TOML] is not None:
            accepted.append(Uploaded(label, files[TOML], deployed.bodies.get("netlify.toml")))
    both = [{TOML: toml, REDIRECTS: None, HEADERS: None} for case in accepted for toml in (case.project, case.uploaded)]
    results = netlify(both)
    for number, case in enumerate(accepted):
        case.theirs, case.theirs_uploaded = results[2 * number], results[2 * number + 1]
    return accepted, len(tried)


def test_netlify_reads_the_uploaded_netlify_toml_as_it_reads_the_projects(uploaded: tuple[list[Uploaded], int]) -> None:
    cases, _ = uploaded
    differ = [
        f"{case.label}\n  uploaded: {case.uploaded!r}\n  project's: {short(case.theirs['all'], 600)}\n"
        f"  uploaded's: {short(case.theirs_uploaded['all'], 600)}"
        for case in cases
        if not case.theirs_uploaded["toml"]["ok"] or case.theirs["all"] != case.theirs_uploaded["all"]
    ]
    assert not differ, f"{len(differ)} of {len(cases)} differ:\n\n" + "\n\n".join(differ[:5])


def test_no_build_setting_reaches_the_uploaded_netlify_toml(uploaded: tuple[list[Uploaded], int]) -> None:
    cases, _ = uploaded
    shipped = [case for case in cases if case.uploaded is not None]
    leaked = [case.label for case in shipped if SECRET_PREFIX.encode() in (case.uploaded or b"")]
    assert not leaked, leaked[:3]
    for case in shipped:
        keys = set(tomllib.loads((case.uploaded or b"").decode()))
        assert keys and keys <= {"redirects", "headers", "images"}, (case.label, keys)


def test_the_uploaded_comparison_sees_rules(uploaded: tuple[list[Uploaded], int]) -> None:
    """Most generated files are accepted and carry rules and headers both ways: a comparison of
    empty files would pass too."""
    cases, tried = uploaded
    redirects = sum(len(case.theirs_uploaded["all"]["redirects"]) for case in cases)
    headers = sum(len(case.theirs_uploaded["all"]["headers"]) for case in cases)
    generated = sum(case.label.startswith(f"seed {SEED}, generated") for case in cases)
    assert len(cases) > tried // 3 and generated > UPLOADED_COUNT // 2, (len(cases), tried, generated)
    assert redirects > UPLOADED_COUNT and headers > UPLOADED_COUNT // 2, (redirects, headers)
