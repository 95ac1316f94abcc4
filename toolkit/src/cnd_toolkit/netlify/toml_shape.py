"""netlify.toml's shape: what each table and key must be, and the line each is on, so that every
problem names ``netlify.toml:line``.

Standard library only (it runs in Netlify's build image).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cnd_toolkit.netlify.rule_files import CONTROL, add_header, conditions_of, js_trim, redirect_rule
from cnd_toolkit.netlify.rules import HeaderRule, Origin, Problem, Redirect

# ---------------------------------------------------------------------------------------------
# netlify.toml: shapes and line numbers


_HEADER = re.compile(r"(\[\[?)\s*([^\[\]]*[^\[\]\s]|[^\[\]])\s*\]\]?(\s*#.*)?")
_KEY = re.compile(r"""[A-Za-z0-9_\-."' ]+""")
# Levels of tables and arrays netlify.toml may nest: Netlify's own keys go four deep. config.load
# refuses a file that nests deeper, so a dotted name of more parts than this gets no line here.
MAX_TOML_DEPTH = 32

# tomllib takes time quadratic in a key's parts (16,000 parts: 3.5 s), so a key or table name of
# more than MAX_TOML_DEPTH parts is looked for first. Strings (a key's quoted parts, values) and
# comments are passed over whole, so that dots in values do not count. To keep the scan linear in
# the text, every string pattern also takes an unclosed string (tomllib refuses it later), loops
# give nothing back, and a key is looked for only after a separator, before strings and comments.
_BASIC, _LITERAL = r'"(?:[^"\\\n]|\\.?)*+"?', r"'[^'\n]*+'?"
_MULTILINE = r'"""(?:[^\\"]|\\[\s\S]?|"(?!""))*+(?:"{3,5})?' r"|'''(?:[^']|'(?!''))*+(?:'{3,5})?"
# A multi-line string first: read as "" and then "a", the string in x = """a".b.c would end early.
_PART = rf"(?:[^=,{{}}\[\]\n\"'#.]|{_MULTILINE}|{_BASIC}|{_LITERAL})*+"
_DEEP_KEY = re.compile(
    rf"(?<![^=,{{}}\[\]\n])(?:{_PART}\.){{{MAX_TOML_DEPTH}}}|(?P<skip>{_MULTILINE}|{_BASIC}|{_LITERAL}|#[^\n]*)"
)


def deep_key_line(text: str) -> int | None:
    """The line of the first key or table name of more than MAX_TOML_DEPTH parts, if any."""
    for found in _DEEP_KEY.finditer(text):
        if found.group("skip") is None:
            return text.count("\n", 0, found.start()) + 1
    return None


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
        # Patterns that backtrack in one pass at most: a long line costs its length, not its square.
        header = _HEADER.fullmatch(line)
        if header and header.group(2).count(".") >= MAX_TOML_DEPTH:
            continue
        if header:
            names = tuple(part.strip().strip("\"'") for part in header.group(2).split("."))
            if header.group(1) == "[[":
                counts[names] = counts.get(names, -1) + 1
                table = (*_indexed(names[:-1], counts), names[-1], str(counts[names]))
            else:
                table = _indexed(names, counts)
            lines.setdefault(table, number)
            continue
        name = line[: line.find("=")].rstrip() if "=" in line else ""
        if name and _KEY.fullmatch(name) and name.count(".") < MAX_TOML_DEPTH:  # deeper: refused as a whole
            path = (*table, *(part.strip().strip("\"'") for part in name.split(".")))
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


class Shape:
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
            conditions = conditions_of(typed)
            headers = self._strings(("redirects", index, "headers"), entry.get("headers", {}))
            if query is None or headers is None:
                continue
            rule = redirect_rule(
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
            path = js_trim(entry["for"])  # trimmed as Netlify's parser trims it
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
                    add_header(rule, js_trim(name), value, where, self.problems)
                elif isinstance(value, list) and all(isinstance(item, str) for item in value):
                    # Netlify trims each item and joins them, without touching commas inside one.
                    joined = ", ".join(js_trim(item) for item in value)
                    add_header(rule, js_trim(name), joined, where, self.problems, commas=False)
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
