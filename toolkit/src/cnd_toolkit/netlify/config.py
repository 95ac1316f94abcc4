"""The project's Netlify configuration, parsed once: netlify.toml, ``_redirects`` and ``_headers``.

The model (:class:`NetlifyConfig`) and the files it is read from. The parts live by concern:
``urls`` (request paths and patterns), ``rules`` (redirects, header rules, problems),
``rule_files`` (the ``_redirects`` and ``_headers`` syntax) and ``toml_shape`` (netlify.toml's
tables and keys, with their lines).

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
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnd_toolkit.netlify.rule_files import parse_headers_file, parse_redirects_file
from cnd_toolkit.netlify.rules import HeaderRule, Origin, Problem, Redirect
from cnd_toolkit.netlify.toml_shape import MAX_TOML_DEPTH, Shape, deep_key_line, toml_key_lines

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
    toml_text = read_config_file(toml_path, "netlify.toml", problems, inside=root, limit=MAX_TOML_FILE)
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    if toml_text is not None:
        if toml_text.startswith("\ufeff"):
            message = "starts with a byte order mark (BOM), which Netlify's TOML parser rejects; save it without"
            problems.append(Problem(Origin("netlify.toml", 1), message))
            toml_text = toml_text[1:]
        deep_line = deep_key_line(toml_text)
        if deep_line is not None:  # found before tomllib, whose time grows with the square of a key's parts
            message = f"has a key or table name of more than {MAX_TOML_DEPTH} dotted parts; {_FEW}"
            problems.append(Problem(Origin("netlify.toml", deep_line), message))
        else:
            data = _parsed_toml(toml_text, problems)
        if _depth(data) > MAX_TOML_DEPTH:  # [a.a.a...] reads, and would exhaust every walk of it
            message = f"nests tables or arrays more than {MAX_TOML_DEPTH} levels deep; {_FEW}"
            problems.append(Problem(Origin("netlify.toml", 1), message))
            data = {}
        lines = toml_key_lines(toml_text)
    shape = Shape(data, lines, problems)
    publish_name = shape.publish()
    publish = root / publish_name
    _inside(root, publish, shape, problems)
    redirects: list[Redirect] = []
    headers: list[HeaderRule] = []
    redirects_file = publish / "_redirects"
    rel_redirects = _relative(redirects_file, root)
    redirects_text = read_config_file(redirects_file, rel_redirects, problems, inside=publish)
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
    headers_text = read_config_file(headers_file, rel_headers, problems, inside=publish)
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


def _inside(root: Path, publish: Path, shape: Shape, problems: list[Problem]) -> None:
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
    a ``_redirects`` rule repeated in netlify.toml counts from where netlify.toml has it. In
    O(n log n), whatever is repeated (:func:`_overtaking`).
    """
    identities = [_identity(rule) for rule in rules]
    last = {identity: index for index, identity in enumerate(identities)}
    kept_at = [last[identity] for identity in identities]  # where each rule's kept copy is
    moved = [(index, copy) for index, copy in enumerate(kept_at) if copy != index]
    for (index, copy), (count, first) in zip(moved, _overtaking(kept_at, moved), strict=True):
        if count:
            rule = rules[index]
            message = (
                f"{rule.source} is repeated at {rules[copy].origin}; Netlify keeps only that copy, so "
                f"{count} rule(s) from {rules[first].origin} on are tried before it; remove one copy"
            )
            problems.append(Problem(rule.origin, message, "warning"))
    return [rule for index, rule in enumerate(rules) if kept_at[index] == index]


def _overtaking(kept_at: list[int], moved: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each ``(index, copy)``: how many rules between the two end up before the kept copy
    (their own kept copy is before ``copy``; a copy of the same rule is kept at ``copy`` itself),
    and the first of them. Offline, with a Fenwick tree over positions: the spans by their end,
    the rules by where they are kept, each rule counted once every span past it asks."""
    size = len(kept_at)
    tree = [0] * (size + 1)

    def add(position: int) -> None:
        position += 1
        while position <= size:
            tree[position] += 1
            position += position & -position

    def before(position: int) -> int:  # how many counted rules are at positions < position
        total = 0
        while position > 0:
            total += tree[position]
            position -= position & -position
        return total

    def nth(rank: int) -> int:  # the position of the rank-th counted rule (1-based)
        position, step = 0, 1 << size.bit_length()
        while step:
            if position + step <= size and tree[position + step] < rank:
                position += step
                rank -= tree[position]
            step >>= 1
        return position

    by_kept = sorted(range(size), key=kept_at.__getitem__)
    found: dict[tuple[int, int], tuple[int, int]] = {}
    counted = 0
    for index, copy in sorted(moved, key=lambda span: span[1]):
        while counted < size and kept_at[by_kept[counted]] < copy:
            add(by_kept[counted])
            counted += 1
        count = before(copy) - before(index + 1)
        found[index, copy] = (count, nth(before(index + 1) + 1) if count else -1)
    return [found[span] for span in moved]


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


def _parsed_toml(text: str, problems: list[Problem]) -> dict[str, Any]:
    """netlify.toml's data, or {} and a problem at its line when tomllib cannot read it."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # "(at end of document)" names no line: the last one is where the document ended.
        line = re.search(r"line (\d+)", str(exc))
        number = int(line.group(1)) if line else text.rstrip().count("\n") + 1
        problems.append(Problem(Origin("netlify.toml", number), f"not valid TOML: {exc}"))
    except ValueError:  # not TOMLDecodeError: a number of more digits than Python converts (4,300)
        long = re.search(r"[0-9_]{4000,}", text)
        number = text.count("\n", 0, long.start()) + 1 if long else 1
        message = "has a number of thousands of digits; no key takes one"
        problems.append(Problem(Origin("netlify.toml", number), message))
    except RecursionError:  # arrays or inline tables nested thousands deep: Python's parser gives up
        message = "nests arrays or tables too deeply to be read; netlify.toml never needs more than a few levels"
        problems.append(Problem(Origin("netlify.toml", 1), message))
    return {}


_FEW = "netlify.toml never needs more than a few (nothing in it was read)"


def publish_dir(root: Path) -> Path:
    """The publish directory netlify.toml names (``public`` when it names none)."""
    return load(root).publish


def _depth(data: object) -> int:
    """How deep tables and arrays nest in ``data`` (without recursion; stops past the limit)."""
    deepest, stack = 0, [(data, 0)]
    while stack and deepest <= MAX_TOML_DEPTH:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return deepest


# Bytes of netlify.toml, _redirects or _headers read at most: 10,000 rules take half a megabyte.
MAX_CONFIG_FILE = 8 * 1024 * 1024
# netlify.toml's cap is lower: tomllib reads about a megabyte in a second or two, and 5,000
# [[redirects]] tables take a quarter of one.
MAX_TOML_FILE = 1024 * 1024


def read_config_file(
    path: Path, name: str, problems: list[Problem], *, inside: Path, limit: int = MAX_CONFIG_FILE
) -> str | None:
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
        found = path.stat()
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(found.st_mode):  # reading a FIFO would wait forever, a device never end
            problems.append(
                Problem(Origin(name, 1), "is not a regular file (a FIFO, socket or device); make it a file")
            )
            return None
        if found.st_size > limit:
            message = f"is {found.st_size:,} bytes; Netlify's rule files are far smaller (at most {limit:,})"
            problems.append(Problem(Origin(name, 1), message))
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
