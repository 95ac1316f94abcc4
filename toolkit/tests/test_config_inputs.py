"""The Netlify configuration under inputs sized and shaped to hurt: each is one problem at a line,
never a hang, a traceback or a quadratic wait. How the time grows with the input's size is the
benchmark's to measure (tools/bench_config.py); these check that the faster code reads the same
as the plain one, and that no shape of file stops a reader."""

from __future__ import annotations

import os
import random
import re
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cnd_toolkit.netlify import config
from cnd_toolkit.netlify.check import check_config
from cnd_toolkit.netlify.rule_files import parse_redirects_file
from cnd_toolkit.netlify.rules import Problem, Redirect
from cnd_toolkit.netlify.toml_shape import MAX_TOML_DEPTH, _indexed, deep_key_line, toml_key_lines


def merged_plainly(rules: list[Redirect], problems: list[Problem]) -> list[Redirect]:
    """The merge as first written (quadratic): the reference the fast one must agree with."""
    identity = config._identity
    last: dict[tuple[Any, ...], int] = {}
    for index, rule in enumerate(rules):
        last[identity(rule)] = index
    kept = []
    for index, rule in enumerate(rules):
        copy = last[identity(rule)]
        if copy == index:
            kept.append(rule)
            continue
        between = [r for r in rules[index + 1 : copy] if identity(r) != identity(rule) and last[identity(r)] < copy]
        if between:
            message = (
                f"{rule.source} is repeated at {rules[copy].origin}; Netlify keeps only that copy, so "
                f"{len(between)} rule(s) from {between[0].origin} on are tried before it; remove one copy"
            )
            problems.append(Problem(rule.origin, message, "warning"))
    return kept


@pytest.mark.parametrize("seed", range(40))
def test_the_merge_keeps_and_warns_as_the_plain_merge_does(seed: int) -> None:
    rng = random.Random(seed)
    pool = [
        f"/{rng.choice('abcdef')}/* /{rng.choice('xyz')}/:splat {rng.choice(['200', '301', '302!', ''])}"
        for _ in range(8)
    ]
    lines = [rng.choice(pool) for _ in range(rng.randint(0, 80))]
    rules = parse_redirects_file("\n".join(lines) + "\n", "public/_redirects", [])
    fast_problems: list[Problem] = []
    plain_problems: list[Problem] = []
    fast = config._merged(list(rules), fast_problems)
    plain = merged_plainly(list(rules), plain_problems)
    assert [r.origin for r in fast] == [r.origin for r in plain]
    assert [str(p) for p in fast_problems] == [str(p) for p in plain_problems]


def key_lines_plainly(text: str) -> dict[tuple[str, ...], int]:
    """toml_key_lines as first written (its patterns backtrack quadratically on long lines); the
    table indexing (``_indexed``) is unchanged and shared."""
    lines: dict[tuple[str, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
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


@pytest.mark.parametrize("seed", range(40))
def test_key_lines_are_those_the_plain_reader_finds(seed: int) -> None:
    rng = random.Random(seed)
    pieces = ["[build]", "[[redirects]]", "[[headers]]", "[headers.values]", "  [ a . b ]  # c", "[a]]", "[[x]",
              'from = "/a"', "a.b = 1", "'q.k' = 2", '"k=v" = 3', "a\t= 4", "a\tb = 5", "x  y = 6", "= 7", "[ ]",
              "[a b]", "k = [1, 2]", "# [not]", "status = 301 # =", "  indented = 1", "[a.'b.c']"]  # fmt: skip
    text = "\n".join(rng.choice(pieces) + " " * rng.randint(0, 3) for _ in range(rng.randint(0, 30)))
    assert toml_key_lines(text) == key_lines_plainly(text)


def limit(path: Path) -> int:
    return config.MAX_TOML_FILE if path.name == "netlify.toml" else config.MAX_CONFIG_FILE


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: os.mkfifo(path), "is not a regular file"),  # reading it would wait forever
        (lambda path: path.symlink_to("/dev/zero"), "link to a file outside the project"),
        (lambda path: os.truncate(path.open("w").name, limit(path) + 1), "bytes; Netlify's rule files"),
        (lambda path: path.mkdir(), "is a directory"),
    ],
    ids=["fifo", "device-link", "huge", "directory"],
)
@pytest.mark.parametrize("name", ["netlify.toml", "public/_redirects", "public/_headers"])
def test_a_rule_file_that_is_no_small_regular_file_is_one_problem(
    tmp_path: Path, name: str, make: Any, says: str
) -> None:
    (tmp_path / "public").mkdir()
    path = tmp_path / name
    make(path)
    if path.is_fifo():  # were it read, this lets the read end (with EOF) instead of hanging the run
        release = threading.Timer(30, lambda: os.close(os.open(path, os.O_WRONLY)))
        release.daemon = True
        release.start()
    site = config.load(tmp_path)
    assert [str(p) for p in site.problems if says in str(p)] and all(str(p).startswith(name) for p in site.problems)


def test_a_publish_folder_thousands_of_folders_deep_is_walked(tmp_path: Path) -> None:
    (tmp_path / "netlify.toml").write_text('[build]\npublish = "public"\n')
    deep = tmp_path / "public"
    deep.mkdir()
    for _ in range(1500):
        deep = deep / "d"
        deep.mkdir()
    (deep / "index.html").write_text("<p>deep</p>")
    os.mkfifo(tmp_path / "public" / "pipe")
    try:
        problems = check_config(config.load(tmp_path))
    finally:  # bottom up: pytest's clean-up (shutil.rmtree) recurses, and would fail on this tree
        while deep != tmp_path / "public":
            for child in deep.iterdir():
                child.unlink()
            deep.rmdir()
            deep = deep.parent
    assert [str(p) for p in problems if "pipe" in str(p) and "not a regular file" in str(p)], problems


@pytest.mark.parametrize(
    "text",
    [
        "[" + ".".join(["a"] * 5000) + "]\nb = 1\n",  # tables 5,000 levels deep
        ".".join(["a"] * 5000) + " = 1\n",  # a dotted key as deep
        "x = " + "[" * 100_000 + "]" * 100_000 + "\n",  # arrays nested past Python's parser
        "x = " + "{a = " * 100_000 + "1" + "}" * 100_000 + "\n",  # inline tables too
    ],
    ids=["tables", "dotted", "arrays", "inline-tables"],
)
def test_netlify_toml_nested_past_reason_is_one_problem(tmp_path: Path, text: str) -> None:
    (tmp_path / "netlify.toml").write_text(text)
    problems = check_config(config.load(tmp_path))
    reasons = ("too deeply", "levels deep", "dotted parts")
    assert [str(p) for p in problems if any(reason in str(p) for reason in reasons)], problems


def _toml_noise(rng: random.Random) -> str:
    """A line of valid TOML whose strings and comments hold dots and deep-looking keys."""
    deep = ".".join(["k"] * rng.randint(30, 60))
    return rng.choice([
        f'n{rng.randrange(10**6)} = "{deep} = 1 \\" {deep}"', f"n{rng.randrange(10**6)} = '{deep}\\'",
        f'n{rng.randrange(10**6)} = """\n{deep} = 1\n[{deep}]\n""""', f"n{rng.randrange(10**6)} = \'\'\'{deep}\n\'\'\'",
        f"# [{deep}] {deep} = 1", f"n{rng.randrange(10**6)} = [1.5, 'a.b', {{ x = \"{deep}\" }}]  # {deep}",
        f'n{rng.randrange(10**6)} = """a"{deep}\n"""', f"n{rng.randrange(10**6)} = [\'\'\'it's.{deep}\'\'\']",
        "",
    ])  # fmt: skip


def _nesting(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_nesting, value), default=0)
    return 0


def _toml_key(rng: random.Random, parts: int) -> str:
    names = [rng.choice(["k", "'q.k'", '"q.k"', '"q\\".k"', "k-1"]) for _ in range(parts)]
    return "".join(name + rng.choice([".", " . ", "\t."]) for name in names[:-1]) + names[-1]


@pytest.mark.parametrize("seed", range(60))
def test_a_key_of_too_many_parts_is_found_where_tomllib_finds_it(seed: int) -> None:
    """One probe key (bare, as a table, in an inline table) among strings and comments that look deep:
    found before tomllib exactly when tomllib reads it more than MAX_TOML_DEPTH levels deep."""
    rng = random.Random(seed)
    key = _toml_key(rng, rng.randint(MAX_TOML_DEPTH - 3, MAX_TOML_DEPTH + 3))
    # The probe, and the levels tomllib reads around its key: a table, an array of tables and its list.
    probe, around = rng.choice([(f"{key} = 1", 0), (f"[{key}]", 1), (f"[[{key}]]", 2), (f"probe = {{ {key} = 1 }}", 1)])
    before = [_toml_noise(rng) for _ in range(rng.randint(0, 6))]
    lines = [*before, probe, *(_toml_noise(rng) for _ in range(rng.randint(0, 6)))]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # the noise is valid TOML around the probe
    found = deep_key_line(text)
    if _nesting(tomllib.loads(probe)) - around > MAX_TOML_DEPTH:  # the oracle: the parts tomllib reads
        assert found == "\n".join([*before, probe]).count("\n") + 1, (text, found)
    else:
        assert found is None, (text, found)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: os.mkfifo(path), "is not a regular file"),
        (lambda path: path.symlink_to(path.parent.parent / "outside.txt"), "link to a file outside the project"),
        (lambda path: path.symlink_to("/dev/zero"), "link to a file outside the project"),
        (lambda path: os.truncate(path.open("w").name, config.MAX_CONFIG_FILE + 1), "bytes; Netlify's rule files"),
        (lambda path: path.write_bytes(b"/caf\xe9 /b 301\n"), "is not UTF-8"),
    ],
    ids=["fifo", "link-out", "device-link", "huge", "latin-1"],
)
def test_the_build_step_reads_redirects_as_inv_check_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], make: Any, says: str
) -> None:
    """Netlify's build command writes the API rule into public/_redirects: a file inv check
    refuses, it refuses too, and writes nothing anywhere (never through a link out)."""
    from cnd_toolkit.netlify import redirects

    (tmp_path / "public").mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("/x /y 301\n")
    path = tmp_path / "public" / "_redirects"
    make(path)
    if path.is_fifo():  # were it read, this lets the read end instead of hanging the run
        release = threading.Timer(30, lambda: os.close(os.open(path, os.O_WRONLY)))
        release.daemon = True
        release.start()
    monkeypatch.setenv("BACKEND_URL", "https://api.example.dev")
    assert redirects.main([str(tmp_path / "public")]) == 1
    assert says in capsys.readouterr().err
    assert outside.read_text() == "/x /y 301\n" and sorted(p.name for p in (tmp_path / "public").iterdir()) == [
        "_redirects"
    ]


@pytest.mark.parametrize("seed", range(8))
def test_numbers_and_names_thousands_long_are_one_short_problem_each(tmp_path: Path, seed: int) -> None:
    """Digits past Python's 4,300 (in netlify.toml, as a status, in hex) and paths, hosts and
    values tens of thousands long: each a problem at its line, each line of it a few hundred
    characters at most."""
    rng = random.Random(seed)
    (tmp_path / "public").mkdir()
    long = "".join(rng.choices("0123456789", k=rng.randint(4400, 9000)))
    word = "".join(rng.choices("abc/:.%-", k=rng.randint(5000, 30000)))
    toml_lines = ["[build]", 'publish = "public"', "[context.production.environment]"]
    if rng.random() < 0.5:
        toml_lines.append(f"X = {long}")
    (tmp_path / "netlify.toml").write_text("\n".join(toml_lines) + "\n")
    rules = [f"/a /b {long}", f"/h /b 0x{long}", f"/{word} /b 301", f"/c https://{word} 301", f"/d /e 301 X={word}"]
    rng.shuffle(rules)
    (tmp_path / "public" / "_redirects").write_text("\n".join(rules) + "\n")
    problems = check_config(config.load(tmp_path))
    where = {str(p).split(": ", 1)[0] for p in problems}
    assert {f"public/_redirects:{rules.index(rule) + 1}" for rule in rules if long in rule} <= where, problems
    if any(long in line for line in toml_lines):
        number = next(n for n, line in enumerate(toml_lines, 1) if long in line)
        assert f"netlify.toml:{number}" in where, problems
    assert all(len(str(p)) < 800 for p in problems), max(map(len, map(str, problems)))


@pytest.mark.parametrize("seed", range(6))
def test_inv_check_prints_the_first_problems_and_counts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int
) -> None:
    """Broken lines and repeated rules, from a handful to thousands: every problem while they fit
    on a screen or two; past MAX_SHOWN, the first in file order and one line counting the rest."""
    from cnd_toolkit.netlify import check

    rng = random.Random(seed)
    (tmp_path / "public").mkdir()
    (tmp_path / "netlify.toml").write_text('[build]\npublish = "public"\n')
    n = rng.choice([3, check.MAX_SHOWN - 1, check.MAX_SHOWN + 1, rng.randint(1000, 4000)])
    lines = [rng.choice(["/a", "/b /c 999", "/d nowhere", "/e /f 301 X"]) + f"{i}" for i in range(n)]
    (tmp_path / "public" / "_redirects").write_text("\n".join(lines) + "\n")
    problems = check.check_project(tmp_path)
    assert check.main([str(tmp_path)]) == 1
    printed = capsys.readouterr().err.splitlines()
    shown = min(len(problems), check.MAX_SHOWN)
    assert printed[:shown] == [str(p) for p in problems[:shown]]
    more = (
        [f"... and {len(problems) - shown:,} more like these; fix the ones above and run again"]
        if shown < len(problems)
        else []
    )
    errors = sum(p.severity == "error" for p in problems)
    assert printed[shown:] == [*more, f"{errors} error(s) in the Netlify configuration"], printed[shown:]
