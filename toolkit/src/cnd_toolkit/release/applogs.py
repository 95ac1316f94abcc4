"""`inv logs`: the live and the previous release's logs (and the proxy's), merged in time order.

Read through the Docker API, so any ``DOCKER_HOST`` works: one host's release containers (the
two newest: the live one and the one before it), a swarm's task containers on that node (the
tasks of the two newest deploys), and the shared Caddy. Docker prefixes each line with its
time (``timestamps=True``); lines from every source are merged on it. The app writes JSON lines
(``api.observability``): they are shown as time, level, status, method, path, duration and
request id, or passed through as they are with ``--json``.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from cnd_toolkit import logs
from cnd_toolkit.errors import OpsError
from cnd_toolkit.release.backends import Backend

SERVICES = ("app", "proxy", "all")
_SINCE = re.compile(r"^(\d+)([smhd])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Line:
    ts: str  # when Docker read it: RFC 3339, UTC, nanoseconds, so it sorts as text
    source: str  # the container's name
    text: str  # the line as the container wrote it
    at: str = ""  # when the line says it happened (its JSON "ts"), in the same form; else ts
    entry: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # its JSON object, as split() read it

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.at or self.ts, self.ts, self.source)


def since_of(value: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """``10m``, ``2h``, ``1d``, ``45s`` ago, or an RFC 3339 time; empty: from the start."""
    value = value.strip()
    if not value:
        return None
    now = now or dt.datetime.now(dt.UTC)
    found = _SINCE.match(value)
    if found:
        try:
            return now - dt.timedelta(seconds=int(found[1]) * _UNITS[found[2]])
        except OverflowError:  # further back than datetime goes: everything there is
            return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise OpsError(
            f"--since {value!r} is neither a duration (30s, 10m, 2h, 1d) nor a time (2026-12-03T10:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _normal(ts: str) -> str:
    """Docker's RFC 3339 (UTC) with its fraction trimmed of zeros, as fixed-width text (9 digits)."""
    head, _, fraction = ts.rstrip("Z").partition(".")
    return f"{head}.{fraction.ljust(9, '0')[:9]}Z"


_APP_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z\Z")


def _entry(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        entry = json.loads(text)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _said_time(entry: dict[str, Any] | None) -> str:
    """The time a JSON line gives itself, normalised like Docker's: the app's ``ts`` (RFC 3339,
    UTC) or Caddy's (seconds since the epoch). Workers flush their lines in batches, so the order
    Docker reads them in is not the order the requests were answered in; this is."""
    if entry is None:
        return ""
    ts = entry.get("ts")
    if isinstance(ts, str) and _APP_TIME.match(ts):
        return _normal(ts)
    if isinstance(ts, int | float) and not isinstance(ts, bool) and 0 < ts < 32503680000:  # before 3000
        when = dt.datetime.fromtimestamp(ts, dt.UTC)
        return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond:06d}000Z"
    return ""


def split(raw: bytes, source: str) -> list[Line]:
    """Lines of ``docker logs --timestamps`` output.

    Split on newlines only: Docker ends each line with one, and ``str.splitlines`` would also split
    on characters a client can put in a logged value (U+2028, U+0085, \\x1c to \\x1e), letting it
    forge a line with a time of its choosing.
    """
    out: list[Line] = []
    for piece in raw.decode("utf-8", "replace").split("\n"):
        piece = piece.removesuffix("\r")
        if not piece:
            continue
        ts, _, text = piece.partition(" ")
        if ts[:1].isdigit():
            entry = _entry(text)
            out.append(Line(_normal(ts), source, text, _said_time(entry), entry))
        elif out:  # a continuation Docker did not stamp
            out.append(Line(out[-1].ts, source, piece, out[-1].at))
    return out


def read(containers: Iterable[Container], since: dt.datetime | None, lines: int) -> list[Line]:
    """The last ``lines`` lines of all of them, merged in time order."""
    per_source = []
    for container in containers:
        try:
            raw = container.logs(stdout=True, stderr=True, timestamps=True, since=since, tail=lines or "all")
        except docker.errors.NotFound:
            continue  # removed meanwhile
        per_source.append(split(raw, container.name or ""))
    merged = sorted((line for lines_of in per_source for line in lines_of), key=lambda line: line.key)
    return merged[-lines:] if lines else merged


def follow(
    find: Callable[[], list[Container]],
    since: dt.datetime | None,
    stop: threading.Event,
    lines: int = 0,
    settle: float = 0.5,
    refresh: float = 2.0,
) -> Iterator[Line]:
    """Lines as they come (history since ``since`` first, in time order), from the containers
    ``find()`` returns, asked again every ``refresh`` seconds: a deploy while this runs starts a
    new release, and its lines join in (with a line that says so) from its first one. A stream
    that ends (the container stopped or restarted, the engine went away) is taken up again once
    ``find()`` lists the container again, from the line after the last one shown."""
    waiting: queue.Queue[Line] = queue.Queue()
    followed: set[str] = set()  # container ids with a live stream
    seen: dict[str, str] = {}  # container id -> Docker's time of its last line

    def pump(container: Container, after: dt.datetime | float | None, tail: int | Literal["all"]) -> None:
        key = container.id or ""
        try:
            stream = container.logs(
                stdout=True, stderr=True, timestamps=True, since=after, stream=True, follow=True, tail=tail
            )
            pending = b""
            for chunk in cast(Iterator[bytes], stream):
                if stop.is_set():
                    return
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in split(b"\n".join(complete), container.name or ""):
                    if line.ts > seen.get(key, ""):  # a stream taken up again repeats its last second
                        seen[key] = line.ts
                        waiting.put(line)
        except (docker.errors.DockerException, OSError):
            pass
        finally:
            followed.discard(key)

    def start(containers: Iterable[Container], after: dt.datetime | None, tail: int | Literal["all"]) -> list[str]:
        names = []
        for container in containers:
            key = container.id or ""
            if key in followed:
                continue
            followed.add(key)
            if key in seen:  # followed before: from its last line on, and no announcement
                resume = _epoch(seen[key])
                threading.Thread(target=pump, args=(container, resume, "all"), daemon=True).start()
                continue
            names.append(container.name or "")
            threading.Thread(target=pump, args=(container, after, tail), daemon=True).start()
        return names

    start(find(), since, lines or "all")
    # The history arrives in a burst: gather it, then hand it over in time order.
    time.sleep(settle)
    first: list[Line] = []
    while not waiting.empty():
        first.append(waiting.get_nowait())
    first.sort(key=lambda line: line.key)
    yield from first[-lines:] if lines else first
    next_look = time.monotonic() + refresh
    lost = False
    while not stop.is_set():
        if time.monotonic() >= next_look:
            next_look = time.monotonic() + refresh
            try:
                joined = start(
                    [c for c in find() if c.status in {"running", "restarting"} or c.id not in seen], None, "all"
                )
                lost = False
            except (docker.errors.DockerException, OSError, requests.exceptions.RequestException):
                joined = []
                if not lost:  # once, not every refresh
                    lost = True
                    now = dt.datetime.now(dt.UTC)
                    stamp = f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond:06d}000Z"
                    yield Line(stamp, "inv logs", "the Docker engine does not answer; trying again every few seconds")
            for name in joined:
                now = dt.datetime.now(dt.UTC)
                stamp = f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond:06d}000Z"
                yield Line(stamp, "inv logs", f"now following {name} (a new release)")
        try:
            yield waiting.get(timeout=0.2)
        except queue.Empty:
            continue


def _epoch(ts: str) -> float:
    """Docker's fixed-width RFC 3339 time (nanoseconds) as seconds since the epoch, for ``since``."""
    head, _, fraction = ts.rstrip("Z").partition(".")
    whole = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC).timestamp()
    return whole + float(f"0.{fraction or 0}")


def show(line: Line, as_json: bool) -> str:
    """The line for a person (or, ``as_json``, the app's own JSON as it wrote it)."""
    entry = line.entry if line.entry is not None else _entry(line.text)  # a Line made elsewhere than split()
    if as_json:
        if isinstance(entry, dict):
            # The app writes ASCII JSON; anything else (raw C1 controls, bidi overrides) is
            # written again with every non-ASCII character escaped, so it cannot reach a terminal.
            return line.text if line.text.isascii() and line.text.isprintable() else json.dumps(entry)
        return json.dumps({"ts": line.ts, "source": line.source, "raw": logs.clean_line(line.text)})
    when = (line.at or line.ts)[11:23]  # the time lines are ordered by
    if not isinstance(entry, dict):
        return f"{when} {line.source}  {logs.clean_line(line.text)}"
    level = str(entry.get("level", "")).upper()[:5]
    found = entry.get("request")
    request: dict[str, Any] = found if isinstance(found, dict) else {}
    parts = [
        str(entry.get("status", "")),
        str(entry.get("method") or request.get("method") or ""),
        str(entry.get("path") or request.get("uri") or ""),
        f"{entry['duration_ms']} ms" if "duration_ms" in entry else "",
        str(entry.get("request_id", "")),
    ]
    for key in ("host", "error"):  # Caddy's reasons (an upstream that does not resolve, a refused dial)
        if isinstance(entry.get(key), str) and entry[key]:
            parts.append(f"{key}={entry[key]}")
    message = str(entry.get("msg", ""))
    detail = " ".join(p for p in parts if p)
    text = f"{message} {detail}" if detail and message not in {"request", ""} else (detail or message)
    extra = f"  {entry['exc'].splitlines()[-1]}" if isinstance(entry.get("exc"), str) and entry["exc"] else ""
    return logs.clean_line(f"{when} {line.source}  {level:<5} {text}{extra}")


def sources(backend: Backend, service: str) -> list[Container]:
    """The containers whose logs `inv logs --service` reads: the live and the previous release's
    (``app``), the shared proxy's (``proxy``), or both (``all``)."""
    if service not in SERVICES:
        raise OpsError(f"--service {service!r} is not one of {', '.join(SERVICES)}")
    found: list[Container] = []
    if service in {"app", "all"}:
        found += backend.log_containers()
    if service in {"proxy", "all"}:
        found_proxy = backend.proxy()
        if found_proxy is not None:
            found.append(found_proxy)
    return found
