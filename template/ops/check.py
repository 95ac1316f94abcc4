"""``inv check``: validate netlify.toml, ``_redirects`` and ``_headers`` more strictly than Netlify.

Netlify's parser keeps unknown keys and typos silently and only warns about bad rules, so a
misspelt ``stauts`` or a proxy to ``htps://`` ships and fails in production. Every message here
names the file and line and says what would be valid. Standard library only.
"""

from __future__ import annotations

import difflib
import re
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ops.edge.rules import (
    VALID_STATUSES,
    Origin,
    Problem,
    Redirect,
    parse_headers_file,
    parse_redirects_file,
    parse_toml_rules,
    toml_table_lines,
)

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


def _key_lines(text: str) -> dict[tuple[str, int, str], int]:
    """(table, index, key) -> line number, for keys inside [[table]] entries and [table] sections."""
    lines: dict[tuple[str, int, str], int] = {}
    table, counts = "", {"redirects": -1, "headers": -1}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.fullmatch(r"\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]?\]", line)
        if header:
            table = header.group(1)
            if line.startswith("[[") and table in counts:
                counts[table] += 1
            continue
        key = re.match(r"([A-Za-z0-9_\-]+)\s*=", line)
        if key:
            index = counts.get(table.split(".")[0], 0)
            lines.setdefault((table, index, key.group(1)), number)
    return lines


def check_redirect(rule: Redirect) -> list[Problem]:
    problems = []
    where = rule.origin
    if not rule.source:
        problems.append(Problem(where, 'redirect has no `from`; add the path it applies to, e.g. from = "/old"'))
    elif not rule.source.startswith(("/", "http://", "https://")):
        problems.append(
            Problem(where, f"`from` {rule.source!r} must start with / (or be a full URL for a domain redirect)")
        )
    if "*" in rule.source and not rule.source.endswith("*"):
        problems.append(
            Problem(where, f"`from` {rule.source!r} has a splat (*) before the end; a splat may only end the path")
        )
    elif rule.source.count("*") > 1:
        problems.append(Problem(where, f"`from` {rule.source!r} has more than one splat (*); only one, at the end"))
    if not rule.to:
        problems.append(Problem(where, f"redirect for {rule.source or '?'} has no `to`; add the destination"))
    elif rule.to.startswith(("http://", "https://")):
        parts = urlsplit(rule.to)
        if not parts.netloc or " " in rule.to:
            problems.append(Problem(where, f"`to` {rule.to!r} is not a valid URL"))
    elif not rule.to.startswith("/"):
        kind = "proxy" if rule.status == 200 else "redirect"
        problems.append(
            Problem(
                where, f"`to` {rule.to!r} must start with / or http(s)://; a {kind} to another host needs the full URL"
            )
        )
    if ":splat" in rule.to and "*" not in rule.source:
        problems.append(Problem(where, f"`to` uses :splat but `from` {rule.source!r} has no * to capture it"))
    placeholders = set(re.findall(r":([A-Za-z_][A-Za-z0-9_]*)", rule.source)) | {
        v[1:] for v in rule.query.values() if v.startswith(":")
    }
    for name in re.findall(
        r"(?<![A-Za-z0-9]):([A-Za-z_][A-Za-z0-9_]*)", urlsplit(rule.to).path if "://" in rule.to else rule.to
    ):
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


def check_toml(path: Path) -> tuple[list[Problem], dict[str, Any]]:
    text = path.read_text()
    name = path.name
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        return [Problem(Origin(name, int(line.group(1)) if line else 0), f"not valid TOML: {exc}")], {}
    lines = _key_lines(text)
    problems: list[Problem] = []

    def at(table: str, index: int, key: str) -> Origin:
        return Origin(name, lines.get((table, index, key), 0))

    for key in data:
        if key not in KNOWN_TOP:
            problems.append(
                Problem(Origin(name, _table_line(text, key)), f"unknown section [{key}]{_suggest(key, KNOWN_TOP)}")
            )
    build = data.get("build", {})
    for key in build if isinstance(build, dict) else []:
        if key not in KNOWN_BUILD:
            problems.append(Problem(at("build", 0, key), f"unknown key {key!r} in [build]{_suggest(key, KNOWN_BUILD)}"))
    for index, entry in enumerate(data.get("redirects", [])):
        for key in entry:
            if key not in KNOWN_REDIRECT:
                problems.append(
                    Problem(
                        at("redirects", index, key),
                        f"unknown key {key!r} in [[redirects]]{_suggest(key, KNOWN_REDIRECT)}",
                    )
                )
        status = entry.get("status", 301)
        if not isinstance(status, int):
            problems.append(
                Problem(at("redirects", index, "status"), f"status {status!r} must be a number such as 301 or 200")
            )
    for index, entry in enumerate(data.get("headers", [])):
        for key in entry:
            if key not in KNOWN_HEADER:
                problems.append(
                    Problem(
                        at("headers", index, key), f"unknown key {key!r} in [[headers]]{_suggest(key, KNOWN_HEADER)}"
                    )
                )
        if "for" not in entry:
            starts = toml_table_lines(text, "headers")
            start = starts[index] if index < len(starts) else 0
            problems.append(Problem(Origin(name, start), "[[headers]] has no `for` path"))
    try:
        redirects, _ = parse_toml_rules(text, name)
    except (TypeError, ValueError):
        redirects = []
    for rule in redirects:
        problems += check_redirect(rule)
    return problems, data


def _table_line(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*\[\[?\s*{re.escape(key)}\b", line) or re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return 0


def check_project(root: Path) -> list[Problem]:
    """Every problem in the project's Netlify configuration, in file order."""
    problems: list[Problem] = []
    toml_path = root / "netlify.toml"
    data: dict[str, Any] = {}
    if toml_path.is_file():
        found, data = check_toml(toml_path)
        problems += found
    publish_name = str(data.get("build", {}).get("publish", "public"))
    publish = root / publish_name
    if not publish.is_dir():
        problems.append(
            Problem(
                Origin(
                    "netlify.toml",
                    _key_lines(toml_path.read_text()).get(("build", 0, "publish"), 0) if toml_path.is_file() else 0,
                ),
                f"publish directory {publish_name!r} does not exist; create it or fix [build] publish",
            )
        )
        return problems
    redirects_file = publish / "_redirects"
    if redirects_file.is_file():
        rel = str(redirects_file.relative_to(root))
        rules, found = parse_redirects_file(redirects_file.read_text(), rel)
        problems += found
        for rule in rules:
            problems += check_redirect(rule)
    headers_file = publish / "_headers"
    if headers_file.is_file():
        _, found = parse_headers_file(headers_file.read_text(), str(headers_file.relative_to(root)))
        problems += found
    return sorted(problems, key=lambda p: (p.origin.file != "netlify.toml", p.origin.file, p.origin.line))


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else Path.cwd()
    problems = check_project(root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in the Netlify configuration", file=sys.stderr)
        return 1
    print("netlify.toml, _redirects and _headers: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
