"""cnd_toolkit/logs.py: container and build output made safe for a terminal, and a failed start made short.

The inputs are generated (seeded): escape sequences of every family mixed into text, byte streams
cut at random places, and real tracebacks that Python itself writes for broken modules.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cnd_toolkit import logs

SEEDS = range(200)
# Families of sequences a hostile or colourful process may write: SGR colours, cursor moves,
# screen clears, OSC titles and hyperlinks (BEL and ST ended), DCS strings, 8-bit C1 CSI,
# lone ESC, bare C0 controls, DEL, C1 controls, line and paragraph separators, bidi overrides and marks.
SEQUENCES = [
    "\x1b[31m",
    "\x1b[0m",
    "\x1b[1;38;5;196m",
    "\x1b[2J",
    "\x1b[H",
    "\x1b[10A",
    "\x1b[?25l",
    "\x1b]0;owned\x07",
    "\x1b]8;;https://evil.example/\x1b\\",
    "\x1bP1$r0m\x1b\\",
    "\x9b31m",
    "\x1b",
    "\x1bc",
    "\x07",
    "\x08",
    "\x00",
    "\x0b",
    "\x0c",
    "\x7f",
    "\x85",
    "\u202e",
    "\u2066",
    "\u2028",
    "\u2029",
    "\u200f",
    "\u061c",
]
UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
WORDS = ["ok", "Listening at: http://0.0.0.0:8080", "naïve", "日本", "\t", "[", "]", ";", "m", "31m", "💥"]


def hostile_line(rng: random.Random) -> tuple[str, list[str]]:
    """A line of words with sequences between them, and the words in order."""
    words: list[str] = []
    parts: list[str] = []
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.5:
            # A space after it: a lone ESC followed by a letter is a (two-byte) escape to a terminal too.
            parts.append(rng.choice(SEQUENCES) + " ")
        word = rng.choice(WORDS)
        words.append(word)
        parts.append(word)
        parts.append(" ")  # a separator, so a sequence's final byte never fuses with a word
    return "".join(parts), words


@pytest.mark.parametrize("seed", SEEDS)
def test_clean_line_removes_every_control_and_keeps_the_text(seed: int) -> None:
    line, words = hostile_line(random.Random(seed))
    cleaned = logs.clean_line(line)
    assert not UNSAFE.search(cleaned), repr(cleaned)
    assert "\x1b" not in cleaned
    position = 0
    for word in words:  # every word survives, in order (tabs become spaces)
        expected = word.replace("\t", "    ")
        found = cleaned.find(expected, position)
        assert found >= 0, (line, cleaned, word)
        position = found + len(expected)


def test_clean_line_on_the_builders_colouring() -> None:
    assert logs.clean_line("\x1b[91museradd warning: uid 10001\x1b[0m") == "useradd warning: uid 10001"
    assert logs.clean_lines("one\r\ntwo\rthree\nfour") == ["one", "two", "three", "four"]


@pytest.mark.parametrize("seed", range(100))
def test_line_splitter_gives_the_same_lines_however_the_stream_is_cut(seed: int) -> None:
    """The engine's log stream splits lines, and UTF-8 characters, at arbitrary bytes."""
    rng = random.Random(seed)
    lines = [hostile_line(rng)[0] for _ in range(rng.randint(1, 20))]
    ending = rng.choice(["\n", "\r\n"])
    data = ending.join(lines).encode() + (ending.encode() if rng.random() < 0.5 else b"")
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 30))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    splitter = logs.LineSplitter()
    got = [line for chunk in chunks for line in splitter.feed(chunk)] + splitter.close()
    assert got == [logs.clean_line(line) for line in lines]


# Broken modules, each with where Python will say the error is (line) and what it says.
BROKEN = {
    "syntax": ("def ok():\n    return 1\n\ndef broken(:\n    pass\n", 4, "SyntaxError: invalid syntax"),
    "name": ("import os\n\nVALUE = undefined_name + 1\n", 3, "NameError: name 'undefined_name' is not defined"),
    "imports": ("import json\nfrom json import no_such_thing\n", 2, "ImportError: cannot import name 'no_such_thing'"),
    "runtime": ("def f():\n    return 1 / 0\n\n\nf()\n", 2, "ZeroDivisionError: division by zero"),
    "indent": ("def f():\nreturn 1\n", 2, "IndentationError: expected an indented block"),
    "chained": (
        "try:\n    {}['k']\nexcept KeyError as exc:\n    raise RuntimeError('config missing') from exc\n",
        2,  # the first traceback printed is the cause's
        "KeyError: 'k'",
    ),
}


def real_traceback(tmp_path: Path, name: str) -> str:
    source, _, _ = BROKEN[name]
    package = tmp_path / "app" / "api"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / f"{name}.py").write_text(source)
    result = subprocess.run(
        [sys.executable, "-c", f"import importlib; importlib.import_module('api.{name}')"],
        cwd=tmp_path / "app",
        capture_output=True,
        text=True,
    )
    assert "Traceback" in result.stderr
    return result.stderr


def gunicorn_like(traceback: str, workers: int, rng: random.Random) -> str:
    """A failed gunicorn start as it looks in `docker logs`: each worker prints the traceback."""
    lines = ["[2026-01-01 00:00:00 +0000] [1] [INFO] Starting gunicorn 27.0.1"]
    for pid in range(8, 8 + workers):
        lines.append(f"[2026-01-01 00:00:00 +0000] [{pid}] [INFO] Booting worker with pid: {pid}")
    for pid in rng.sample(range(8, 8 + workers), workers):
        lines.append(f"[2026-01-01 00:00:00 +0000] [{pid}] [ERROR] Exception in worker process")
        lines.extend(traceback.rstrip("\n").splitlines())
        lines.append(f"[2026-01-01 00:00:00 +0000] [{pid}] [INFO] Worker exiting (pid: {pid})")
    lines += [
        "[2026-01-01 00:00:01 +0000] [1] [ERROR] Worker (pid:8) exited with code 3",
        "[2026-01-01 00:00:01 +0000] [1] [ERROR] Reason: Worker failed to boot.",
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(BROKEN))
@pytest.mark.parametrize("workers", [1, 4])
def test_first_error_names_file_line_and_exception_once(tmp_path: Path, name: str, workers: int) -> None:
    _, line, message = BROKEN[name]
    log = gunicorn_like(real_traceback(tmp_path, name), workers, random.Random(workers))
    error = logs.first_error(log, app_root=str(tmp_path / "app"))
    assert error.startswith(f"api/{name}.py:{line}: "), error
    assert message in error
    assert "\n" not in error
    tail = logs.short_tail(log)
    assert "Traceback (most recent call last)" not in tail
    assert len(tail.splitlines()) <= 15
    if workers > 1:
        assert f"(x{workers})" in tail  # each worker's copy is folded into one line


def test_first_error_in_json_log_records(tmp_path: Path) -> None:
    """The image logs JSON lines: a traceback arrives inside a record's ``exc`` field."""
    traceback = real_traceback(tmp_path, "name")
    records = [
        {"level": "info", "msg": "Booting worker with pid: 8"},
        {"level": "error", "msg": "Exception in worker process", "exc": traceback},
    ]
    log = "\n".join(json.dumps(record) for record in records)
    error = logs.first_error(log, app_root=str(tmp_path / "app"))
    assert error == "api/name.py:3: NameError: name 'undefined_name' is not defined"


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        # serve.py's own one-line reports (the image's command), with and without a timestamp
        ("serve.py: api/routes.py:12: SyntaxError: invalid syntax", "api/routes.py:12: SyntaxError: invalid syntax"),
        ("serve.py: APP_LOG_LEVEL='loud' is not a level", "APP_LOG_LEVEL='loud' is not a level"),
        ("gunicorn.conf.py: PORT='x' is not a whole number; use 1..65535", "gunicorn.conf.py: PORT='x'"),
        ("[2026] [1] [INFO] Starting\n[2026] [1] [ERROR] Connection in use: ('0.0.0.0', 80)", "Connection in use"),
        ('{"level": "critical", "msg": "Reason: Worker failed to boot."}', "Reason: Worker failed to boot."),
        ("just a last line\x1b[31m", "just a last line"),
        ("", ""),
    ],
)
def test_first_error_without_a_traceback(log: str, expected: str) -> None:
    error = logs.first_error(log)
    assert error.startswith(expected) if expected else error == ""
    assert "\x1b" not in error


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ('{"level": "INFO", "message": "request", "status": 200}\n', ""),
        ("[2026-01-01 00:00:00 +0000] [1] [INFO] Booting worker with pid: 7\n", ""),
        ("[INFO] Listening\n[ERROR] Worker failed to boot.\n", "Worker failed to boot."),
        ("", ""),
    ],
)
def test_without_fallback_only_an_error_is_named(log: str, expected: str) -> None:
    """A health gate that timed out quotes the log only when it holds an error: the last access
    line of a slow but healthy start is not a reason."""
    assert logs.first_error(log, fallback=False) == expected
