"""Log text from builds and containers, made safe and short for a person. Pure: text in, text out.

A container's output is untrusted bytes: escape sequences in it could move the cursor, retitle the
terminal or hide lines, so every line is cleaned before it is shown. A server that fails at start
writes one traceback per worker; :func:`first_error` finds the cause in them once, and
:func:`short_tail` folds each traceback into one line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

# ANSI/VT escape sequences: CSI (colours, cursor moves), OSC (titles, hyperlinks; ended by BEL or
# ST), other two-byte escapes, and the 8-bit C1 forms of CSI and OSC.
_ESCAPES = re.compile(
    r"""
    (?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?           # CSI ... final byte
    | (?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?  # OSC ... BEL or ST
    | \x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?    # DCS, SOS, PM, APC strings
    | \x1b[@-Z\\-_]?                          # two-byte escapes (and a lone ESC)
    """,
    re.VERBOSE,
)
# Every other C0 and C1 control character except tab; Unicode's line and paragraph separators
# (a terminal may break the line there); and bidi overrides and marks, which can make a line read
# differently from what it is.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# Where a task's output lines go (the terminal, a test's list, a log file).
LineSink = Callable[[str], None]
# A step's progress: what (a label), how far, out of how much (bytes or files; total 0: unknown yet).
Progress = Callable[[str, int, int], None]


def clean_line(line: str) -> str:
    """``line`` without escape sequences or control characters (tabs become spaces)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", line)).replace("\t", "    ")


def clean_lines(text: str) -> list[str]:
    """``text`` split into lines (``\\n``, ``\\r\\n`` and bare ``\\r``), each cleaned."""
    return [clean_line(line) for line in re.split(r"\r\n|\r|\n", text)]


class LineSplitter:
    """Turns a stream of byte chunks (which split lines and UTF-8 characters anywhere) into lines."""

    def __init__(self) -> None:
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""

    def feed(self, chunk: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(chunk)
        *complete, self._pending = re.split(r"\r\n|\r(?!$)|\n", text)
        return [clean_line(line) for line in complete]

    def close(self) -> list[str]:
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return [clean_line(rest.rstrip("\r"))] if rest.rstrip("\r") else []


@dataclass(frozen=True)
class Traceback:
    """A Python traceback found in a log: its innermost frames and the exception line."""

    start: int  # index of the line that opens it (``Traceback ...``)
    end: int  # index after its last line
    frames: tuple[tuple[str, int], ...]  # (file, line), outermost first
    exception: str  # e.g. ``SyntaxError: invalid syntax``


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning)\b.*|^[A-Z]\w+:")
_LIBRARY = ("/site-packages/", "/dist-packages/", "/lib/python3", "<frozen ")


def _tracebacks(lines: list[str]) -> Iterator[Traceback]:
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith("Traceback (most recent call last)"):
            i += 1
            continue
        start, i = i, i + 1
        frames: list[tuple[str, int]] = []
        exception = ""
        while i < len(lines):
            line = lines[i]
            frame = _FRAME.match(line)
            if frame:
                frames.append((frame["file"], int(frame["line"])))
            elif line and not line[0].isspace() and not line.startswith("During handling"):
                if line.startswith(("The above exception", "Traceback (most recent")):
                    break  # a chained exception: the first one is the cause
                exception = line.strip()
                i += 1
                break
            i += 1
        yield Traceback(start=start, end=i, frames=tuple(frames), exception=exception)


def _expand_json(lines: Iterable[str]) -> list[str]:
    """Lines with JSON log records replaced by their message and their traceback (``exc``)."""
    out: list[str] = []
    for line in lines:
        record = _json_record(line)
        if record is None:
            out.append(line)
            continue
        message = str(record.get("message") or record.get("msg") or "")
        level = str(record.get("level") or "").upper()
        out.append(f"[{level}] {message}" if level else message)
        for key in ("exc", "exc_info", "traceback", "stack"):
            value = record.get(key)
            if isinstance(value, str):
                out.extend(clean_lines(value))
    return out


def _json_record(line: str) -> dict[str, object] | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _relative(path: str, app_root: str) -> str:
    prefix = app_root.rstrip("/") + "/"
    return path.removeprefix(prefix)


def first_error(log: str, app_root: str = "/app", *, fallback: bool = True) -> str:
    """The first error in ``log`` as one line: ``file:line: Exception: message`` when a traceback
    names it (paths under ``app_root`` are shown relative to the project), else the first line
    that reads as an error, else (with ``fallback``) the last line. Empty when there is none.
    """
    lines = [line for line in _expand_json(clean_lines(log)) if line.strip()]
    for tb in _tracebacks(lines):
        if not tb.exception:
            continue
        own = [frame for frame in tb.frames if not any(part in frame[0] for part in _LIBRARY)]
        frames = own or list(tb.frames)
        # For a SyntaxError the innermost frame is the file that does not parse; otherwise the
        # innermost frame of the project's own code is where to look.
        if frames:
            file, number = frames[-1]
            return f"{_relative(file, app_root)}:{number}: {tb.exception}"
        return tb.exception
    for line in lines:
        if re.search(r"\[(ERROR|CRITICAL)\]|^(error|fatal)\b|^\S+\.py: ", line, re.IGNORECASE):
            # serve.py (the image's command) says which file, line or variable; its prefix is noise here.
            return re.sub(r"^(?:\[[^]]*\] \[\d+\] )?(?:\[[A-Z]+\] )?", "", line).strip().removeprefix("serve.py: ")
    return lines[-1].strip() if lines and fallback else ""


def short_tail(log: str, lines: int = 15) -> str:
    """The last ``lines`` lines of ``log``, cleaned, each traceback folded into one line."""
    text = clean_lines(log)
    folded: list[str] = []
    i = 0
    for tb in _tracebacks(text):
        folded.extend(text[i : tb.start])
        size = tb.end - tb.start
        folded.append(f"    (traceback, {size} lines: {tb.exception or 'no exception line'})")
        i = tb.end
    folded.extend(text[i:])
    while folded and not folded[-1].strip():
        folded.pop()
    # Workers failing alike write the same lines; show each once, with how often it came.
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for line in folded:
        key = _sans_pid(line)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, line)
    shown = [first[key] + (f"  (x{counts[key]})" if counts[key] > 1 else "") for key in first]
    return "\n".join(shown[-lines:])


def _sans_pid(line: str) -> str:
    return re.sub(r"^\[[^]]*\] \[\d+\] ", "", re.sub(r"pid:\s*\d+", "pid: N", line))
