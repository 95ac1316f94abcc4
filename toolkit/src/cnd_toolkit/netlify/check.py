"""``inv check``: the Netlify configuration, more strictly than Netlify reads it.

Netlify's parser keeps unknown keys and typos silently and only warns about bad rules, so a
misspelt ``stauts`` or a proxy to ``htps://`` ships and fails in production. Every message here
names the file and line and says what would be valid. The local edge refuses to start on any
error found here, so what passes ``inv check`` is what the edge serves. Standard library only.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

from cnd_toolkit.netlify.config import NetlifyConfig, load
from cnd_toolkit.netlify.redirects import BackendUrlError, check_backend_url
from cnd_toolkit.netlify.rule_files import url_path
from cnd_toolkit.netlify.rules import VALID_STATUSES, Origin, Problem, Redirect

KNOWN_TOP = {
    "build",
    "context",
    "redirects",
    "headers",
    "functions",
    "edge_functions",
    "dev",
    "plugins",
    "template",
    "images",
}
KNOWN_BUILD = {"base", "publish", "command", "functions", "edge_functions", "environment", "processing", "ignore"}
KNOWN_REDIRECT = {"from", "to", "status", "force", "query", "conditions", "headers", "signed"}
KNOWN_HEADER = {"for", "values"}
KNOWN_CONDITIONS = {"Country", "Language", "Role", "Cookie"}


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"


def check_redirect(rule: Redirect) -> list[Problem]:
    """What Netlify would accept but not do as meant (the model already dropped unusable rules)."""
    problems = []
    where = rule.origin
    if not rule.to:
        problems.append(Problem(where, f"redirect for {rule.source or '?'} has no `to`; add the destination"))
    elif rule.to.startswith(("http://", "https://")):
        if url_path(rule.to) is None:
            problems.append(Problem(where, f"`to` {rule.to!r} is not a valid URL"))
    elif not rule.to.startswith("/"):
        kind = "proxy" if rule.status == 200 else "redirect"
        problems.append(
            Problem(
                where, f"`to` {rule.to!r} must start with / or http(s)://; a {kind} to another host needs the full URL"
            )
        )
    if ":splat" in rule.to and not rule.pattern.splat:
        problems.append(Problem(where, f"`to` uses :splat but `from` {rule.source!r} has no * to capture it"))
    placeholders = {p[1:] for p in rule.pattern.parts if p.startswith(":")} | {
        v[1:] for v in rule.query.values() if v.startswith(":")
    }
    target = (url_path(rule.to) or "") if "://" in rule.to else rule.to
    for name in re.findall(r"(?<![A-Za-z0-9]):([A-Za-z_][A-Za-z0-9_]*)", target):
        if name != "splat" and name not in placeholders:
            problems.append(Problem(where, f"`to` uses :{name} but `from` and the query define no :{name}"))
    if rule.status not in VALID_STATUSES:
        problems.append(
            Problem(
                where,
                f"status {rule.status} is not one Netlify supports: {', '.join(map(str, sorted(VALID_STATUSES)))}",
            )
        )
    for condition in rule.conditions:
        if condition not in KNOWN_CONDITIONS:
            problems.append(Problem(where, f"unknown condition {condition!r}{_suggest(condition, KNOWN_CONDITIONS)}"))
    return problems


def check_keys(config: NetlifyConfig) -> list[Problem]:
    """Unknown sections and keys in netlify.toml, with the likely intended one."""
    data = config.data
    problems: list[Problem] = []

    def suggest(key: str, known: set[str]) -> str:  # past MAX_SHOWN, no one reads the suggestion
        return _suggest(key, known) if len(problems) < MAX_SHOWN else ""

    def unknown(where: tuple[str | int, ...], key: str, known: set[str], label: str) -> None:
        message = f"unknown key {key!r} in {label}{suggest(key, known)}"
        problems.append(Problem(Origin("netlify.toml", config.line_of(*where, key)), message))

    for key in data:
        if key not in KNOWN_TOP:
            line = config.line_of(key)
            problems.append(Problem(Origin("netlify.toml", line), f"unknown section [{key}]{suggest(key, KNOWN_TOP)}"))
    for key in config.build:
        if key not in KNOWN_BUILD:
            unknown(("build",), key, KNOWN_BUILD, "[build]")
    contexts = data.get("context")
    for name, context in (contexts if isinstance(contexts, dict) else {}).items():
        # [context.production] takes the keys of [build]; a typo there is as silent as one in [build].
        for key in context if isinstance(context, dict) else []:
            if key not in KNOWN_BUILD:
                unknown(("context", name), key, KNOWN_BUILD, f"[context.{name}]")
    for table, known in (("redirects", KNOWN_REDIRECT), ("headers", KNOWN_HEADER)):
        entries = data.get(table)
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            for key in entry if isinstance(entry, dict) else []:
                if key not in known:
                    unknown((table, index), key, known, f"[[{table}]]")
    return problems


# Netlify reads netlify.toml with @iarna/toml (TOML 0.5) and then through JSON: it rejects what
# TOML 1.0 (tomllib) allows in these ways, and the whole file is lost (build and rules alike).
JS_SAFE_INTEGER = 2**53 - 1


def _kind(value: object) -> str:
    if isinstance(value, datetime):
        return "datetime" if value.tzinfo else "local datetime"
    names = {bool: "boolean", int: "integer", float: "float", str: "string", date: "date", time: "time"}
    return names.get(type(value), "array" if isinstance(value, list) else "table")


def check_toml_for_netlify(config: NetlifyConfig) -> list[Problem]:
    """Values tomllib reads and Netlify's TOML parser does not: mixed arrays, huge integers."""
    problems: list[Problem] = []

    def at(path: tuple[str | int, ...]) -> tuple[str, Origin]:
        """A key's dotted name and line: looked up for a problem only (a big file has many keys)."""
        return ".".join(str(part) for part in path), Origin("netlify.toml", config.line_of(*path))

    def visit(value: object, path: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                visit(item, (*path, key))
        elif isinstance(value, list):
            kinds = sorted({_kind(item) for item in value})
            if len(kinds) > 1:
                name, where = at(path)
                message = f"`{name}` mixes {' and '.join(kinds)} in one array; Netlify's TOML parser rejects that"
                problems.append(Problem(where, message))
            for index, item in enumerate(value):
                visit(item, (*path, index))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > JS_SAFE_INTEGER:
            name, where = at(path)
            problems.append(Problem(where, f"`{name}` = {value} is too large for Netlify's TOML parser; quote it"))
        elif isinstance(value, float) and not math.isfinite(value):
            name, where = at(path)
            problems.append(Problem(where, f"`{name}` = {value} is read as null by Netlify; write a number"))

    visit(config.data, ())
    return problems


def check_backend_urls(config: NetlifyConfig) -> list[Problem]:
    """Every BACKEND_URL netlify.toml sets, by the rule the build step applies to it: one the
    check passes must not fail the Netlify build, in any deploy context."""
    problems: list[Problem] = []
    places: list[tuple[tuple[str, ...], object]] = []
    environment = config.build.get("environment")
    if isinstance(environment, dict) and "BACKEND_URL" in environment:
        places.append((("build", "environment", "BACKEND_URL"), environment["BACKEND_URL"]))
    contexts = config.data.get("context")
    for name, context in (contexts if isinstance(contexts, dict) else {}).items():
        environment = context.get("environment") if isinstance(context, dict) else None
        if isinstance(environment, dict) and "BACKEND_URL" in environment:
            places.append((("context", name, "environment", "BACKEND_URL"), environment["BACKEND_URL"]))
    for path, value in places:
        try:
            check_backend_url(str(value))
        except BackendUrlError as exc:
            where = Origin("netlify.toml", config.line_of(*path))
            problems.append(Problem(where, f"{exc} (in [{'.'.join(path[:-1])}]); the Netlify build would fail"))
    return problems


def check_open_redirects(rule: Redirect) -> list[Problem]:
    """``to = "/:splat"`` redirects /go//evil.com to //evil.com: another site, to a browser."""
    if rule.is_redirect and re.match(r"/:[A-Za-z_]", rule.to):
        value = rule.to[1:].split("/")[0]
        message = (
            f"`to` {rule.to!r} starts with {value}: a request whose value starts with / "
            f"(/go//evil.example) redirects to another site; put a fixed first segment before it"
        )
        return [Problem(rule.origin, message, "warning")]
    return []


# ---------------------------------------------------------------------------------------------
# The publish directory's files, as a deploy reads them (cnd_toolkit.netlify.publish uses the same walk)


def deployed_name(name: str) -> bool:
    """Whether Netlify's deploy filter (and netlify-cli's) keeps a file or folder of this name: not
    dotfiles (but .well-known), not macOS archive folders."""
    return not ((name.startswith(".") and name != ".well-known") or name.startswith("__MACOSX"))


def shown(text: str) -> str:
    """``text`` on one line: control and other unprintable characters (and backslashes) escaped
    as Python would write them, everything else as it is."""
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)


def unservable(relative: str) -> list[str]:
    """What in the path ``relative`` Netlify cannot serve: # and ? end the URL's path, a backslash
    is a separator to some clients, control characters and bytes that are not UTF-8 have no URL."""
    found = []
    if any(unicodedata.category(c) == "Cc" for c in relative):
        found.append("a control character")
    if any(unicodedata.category(c) == "Cs" for c in relative):
        found.append("bytes that are not UTF-8")
    found += [name for mark, name in (("\\", "a backslash"), ("#", "#"), ("?", "?")) if mark in relative]
    return found


@dataclass(frozen=True)
class PublishTree:
    """What a deploy of the publish directory would send, and what must stop it.

    ``files`` maps each deployed path (posix, no leading slash) to the file to read: a link to a
    file inside the directory is deployed as that file. ``links`` are the links that must not be
    deployed (path, why), ``names`` the paths Netlify cannot serve (path, what is wrong).
    """

    files: dict[str, Path] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)
    names: list[tuple[str, str]] = field(default_factory=list)


def publish_tree(publish: Path) -> PublishTree:
    """Walk ``publish`` as a deploy does. Links are followed only while they stay inside it:
    a link (to a file or a folder, or dangling) that resolves outside would publish whatever it
    points at (``ln -s ../.env public/x`` publishes the token), so it is listed in ``links``."""
    tree = PublishTree()
    try:
        top = publish.resolve(strict=True)
    except (OSError, RuntimeError):
        return tree

    def inside(path: Path) -> bool:
        return path == top or top in path.parents

    def listing(directory: Path) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as found:
                return iter(sorted(found, key=lambda entry: entry.name))
        except OSError:
            return iter(())

    # Depth first, in name order, with a stack of open folders rather than recursion: a tree
    # thousands of folders deep is walked like any other.
    folders = [(listing(publish), publish, "", top, frozenset({top}))]
    while folders:
        entries, directory, prefix, real, stack = folders[-1]
        entry = next(entries, None)
        if entry is None:
            folders.pop()
            continue
        if not deployed_name(entry.name):
            continue
        relative = prefix + entry.name
        path = directory / entry.name
        if entry.is_symlink():
            try:
                target = path.resolve()
                pointed = os.readlink(path)
            except (OSError, RuntimeError):  # a loop of links: it resolves nowhere
                tree.links.append((relative, "a link that loops back on itself"))
                continue
            if not inside(target):
                tree.links.append((relative, f"a link to {pointed!r}, outside {publish.name}/"))
            elif not all(deployed_name(part) for part in target.relative_to(top).parts):
                tree.links.append((relative, f"a link to {pointed!r}, a file Netlify does not deploy"))
            elif target.is_dir():
                if target in stack:
                    tree.links.append((relative, "a link to a folder that contains it (a loop)"))
                else:
                    folders.append((listing(path), path, relative + "/", target, stack | {target}))
            elif target.is_file():
                _add_file(tree, relative, path)
            elif target.exists():  # (a link to nothing is not deployed, as Netlify's CLI skips it)
                tree.names.append((relative, "a link to something that is not a file (a FIFO, socket or device)"))
        elif entry.is_dir(follow_symlinks=False):
            inner = real / entry.name
            folders.append((listing(path), path, relative + "/", inner, stack | {inner}))
        elif entry.is_file(follow_symlinks=False):
            _add_file(tree, relative, path)
        else:
            tree.names.append((relative, "not a regular file (a FIFO, socket or device)"))
    return tree


def _add_file(tree: PublishTree, relative: str, path: Path) -> None:
    wrong = unservable(relative)
    if wrong:
        tree.names.append((relative, " and ".join(wrong)))
    else:
        tree.files[relative] = path


def check_publish_files(config: NetlifyConfig) -> list[Problem]:
    """Links out of the publish directory and file names Netlify cannot serve: each would make
    the deploy publish what it must not, or fail half-way."""
    if not config.publish.is_dir():
        return []
    try:
        folder = config.publish.relative_to(config.root).as_posix()
    except ValueError:
        folder = config.publish.name
    tree = publish_tree(config.publish)
    problems = [
        Problem(
            Origin(f"{folder}/{shown(path)}", 1),
            f"{why}: a deploy refuses it; replace the link with a real file, or remove it",
        )
        for path, why in tree.links
    ]
    for path, what in tree.names:
        origin = Origin(f"{folder}/{shown(path)}", 1)
        if not what.startswith("not a regular file"):
            problems.append(Problem(origin, f"Netlify cannot serve a file name with {what}; rename it"))
        elif path not in {"_redirects", "_headers"}:  # the rule files say so as they are read
            problems.append(Problem(origin, f"is {what}; a deploy cannot publish it"))
    return problems


def check_config(config: NetlifyConfig) -> list[Problem]:
    """Every problem in the configuration, errors and warnings, in file order."""
    problems = list(config.problems) + check_keys(config) + check_toml_for_netlify(config)
    problems += check_backend_urls(config) + check_publish_files(config)
    if not config.publish.is_dir():
        name = config.build.get("publish", "public")
        problems.append(
            Problem(
                Origin("netlify.toml", config.line_of("build", "publish")),
                f"publish directory {name!r} does not exist; create it or fix [build] publish",
            )
        )
    for rule in config.redirects:
        problems += check_redirect(rule) + check_open_redirects(rule)
    return sorted(problems, key=lambda p: (p.origin.file != "netlify.toml", p.origin.file, p.origin.line))


def check_project(root: Path) -> list[Problem]:
    return check_config(load(root))


# Problems printed at most, in file order; then how many more there are.
MAX_SHOWN = 100


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else Path.cwd()
    problems = check_project(root)
    errors = [p for p in problems if p.severity == "error"]
    for problem in problems[:MAX_SHOWN]:
        print(problem, file=sys.stderr)
    if len(problems) > MAX_SHOWN:  # a file of thousands of broken lines is not a screen of thousands
        more = len(problems) - MAX_SHOWN
        print(f"... and {more:,} more like these; fix the ones above and run again", file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s) in the Netlify configuration", file=sys.stderr)
        return 1
    print("netlify.toml, _redirects and _headers: OK" + (f" ({len(problems)} warning(s))" if problems else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
