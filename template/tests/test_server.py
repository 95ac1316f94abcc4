"""The app under real, stock gunicorn (``python serve.py``, as the image runs it): what it logs,
chunked bodies over the limit, and shutdown (gunicorn.conf.py's hooks, api/server.py).

Slow clients are not the app server's to bear: the proxy in front reads whole requests first
(the README's "Slow clients"); cnd-toolkit's tests show it on a deployed release.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANG = 30.0  # a client's socket timeout: only so that a broken test cannot hang for ever
SLOW_APP = """
import os
import time

from api import create_app

app = create_app()


@app.get("/api/slow")
def slow():
    open(os.environ["SLOW_STARTED"], "a").close()  # the test waits for this
    time.sleep(float(os.environ["SLOW_SECONDS"]))
    return {"slept": os.environ["SLOW_SECONDS"]}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    out: Path
    err: Path

    def stop(self, sig: int | None = signal.SIGTERM) -> list[dict[str, Any]]:
        """Stop gunicorn with ``sig`` (None: it was sent already); every line it wrote, each parsed
        as JSON (or the test fails)."""
        if sig is not None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        lines = self.out.read_text(errors="replace").splitlines() + self.err.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@contextmanager
def gunicorn(tmp_path: Path, *args: str, **env: str) -> Iterator[Server]:
    """``python serve.py`` on a free loopback port, output to files (a full pipe would stall it)."""
    port = free_port()
    out, err = tmp_path / f"out-{port}.log", tmp_path / f"err-{port}.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "serve.py", "--bind", f"127.0.0.1:{port}", *args],
            cwd=ROOT,
            env={**os.environ, "PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"m-{port}"), **env},
            stdout=stdout,
            stderr=stderr,
        )
    try:
        assert wait_for(
            lambda: status(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 200 or proc.poll() is not None
        )
        assert proc.poll() is None, err.read_text()[-2000:]
        yield Server(proc, port, out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(predicate: Callable[[], Any], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw(port: int, request: bytes, wait: float = HANG) -> Answer:
    """Send raw bytes and read one response (no client library fixes them up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> Answer:
    """One response with a Content-Length, and not a byte past it."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        piece = sock.recv(1)
        if not piece:
            raise ConnectionError(f"closed without a response: {head!r}")
        head += piece
    lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    body = b""
    while len(body) < int(headers.get("content-length", "0")):
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return Answer(int(lines[0].split()[1]), headers, body)


def status(port: int, request: bytes) -> int:
    """The status gunicorn answers raw bytes with (0 if it does not answer)."""
    try:
        return raw(port, request).status
    except OSError:
        return 0


HOSTILE = ['"', "\\", '\\"', '", "level": "fake', "}", "{", "%s", "%(h)s", "\t", "é", "日本", "\u2028", "\x85"]


def test_every_line_is_json_whatever_clients_send(tmp_path: Path) -> None:
    """Seeded User-Agents and queries with quotes, backslashes, format strings and unicode, with
    ACCESS_LOG=1: every line gunicorn and the app write is one JSON object carrying what was sent."""
    rng = random.Random(2024)
    sent = {}
    with gunicorn(tmp_path, ACCESS_LOG="1") as running:
        for n in range(60):
            agent = "".join(rng.choice(HOSTILE) if rng.random() < 0.5 else rng.choice("ab =;/") for _ in range(8))
            query = "".join(f"%{b:02X}" for b in agent.encode())
            head = f"GET /api/greeting?name={query} HTTP/1.1\r\nHost: t\r\nX-Request-ID: fuzz-{n}\r\nUser-Agent: "
            assert status(running.port, head.encode() + agent.encode() + b"\r\nConnection: close\r\n\r\n") == 200
            sent[f"fuzz-{n}"] = agent.encode().decode("latin-1").strip(" \t")
        entries = running.stop()
    access = {e["request_id"]: e for e in entries if e["logger"] == "gunicorn.access"}
    assert {key: access[key]["user_agent"] for key in sent} == sent
    assert {e["request_id"] for e in entries if e.get("msg") == "request"} >= set(sent)
    assert any("Booting worker" in e.get("msg", "") for e in entries)


@pytest.mark.parametrize("size", [1025, 4096, 1 << 20])
def test_a_chunked_body_over_the_limit_is_a_json_413(tmp_path: Path, size: int) -> None:
    """APP_MAX_REQUEST_BYTES=1024 and a chunked body (no Content-Length) past it: the app's 413."""
    body = b"[" + b"1," * (size // 2) + b"1]"
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 4000]), body[i : i + 4000]) for i in range(0, len(body), 4000)
    )
    head = b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    with gunicorn(tmp_path, APP_MAX_REQUEST_BYTES="1024") as running:
        answer = raw(running.port, head + chunks + b"0\r\n\r\n")
        running.stop()
    assert (answer.status, answer.json()["error"]["code"]) == (413, "request_entity_too_large")


def slow_request(
    tmp_path: Path, threads: str, sig: int, seconds: float, grace: str
) -> tuple[int, list[dict[str, Any]]]:
    """/api/slow (``seconds`` long) in flight, then ``sig``: its answer's status and the log lines."""
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    started = tmp_path / "slow.started"
    env = {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": threads, "GUNICORN_GRACEFUL_TIMEOUT": grace}
    env |= {"SLOW_STARTED": str(started), "SLOW_SECONDS": str(seconds), "APP_LOG_FLUSH_MS": "60000"}
    with gunicorn(tmp_path, "--pythonpath", str(tmp_path), "slowapp:app", **env) as running:
        for n in range(100):  # lines the app batches for a minute: SIGTERM must write them out
            assert status(running.port, b"GET /healthz HTTP/1.1\r\nX-Request-ID: n-%d\r\nHost: t\r\n\r\n" % n) == 200
        with socket.create_connection(("127.0.0.1", running.port), timeout=HANG) as held:
            held.sendall(b"GET /api/slow HTTP/1.1\r\nHost: t\r\nX-Request-ID: slow-1\r\nConnection: close\r\n\r\n")
            assert wait_for(started.exists), "the slow request did not start"
            running.proc.send_signal(sig)
            try:
                answered = read_answer(held).status
            except ConnectionError:  # closed with no answer
                answered = 0
        entries = running.stop(None)
    return answered, entries


@pytest.mark.parametrize("threads", ["2", "1"])
def test_sigterm_lets_a_request_in_flight_finish_and_loses_no_log_line(tmp_path: Path, threads: str) -> None:
    answered, entries = slow_request(tmp_path, threads, signal.SIGTERM, seconds=3, grace="20")
    assert answered == 200
    logged = {e.get("request_id") for e in entries if e["logger"] == "api.request"}
    assert {f"n-{n}" for n in range(100)} | {"slow-1"} <= logged
    assert not [e for e in entries if e.get("msg") == "aborted"]


@pytest.mark.parametrize(
    ("threads", "sig"), [("2", signal.SIGTERM), ("1", signal.SIGTERM), ("2", signal.SIGQUIT), ("1", signal.SIGINT)]
)
def test_a_request_the_worker_gives_up_on_is_logged_as_aborted(tmp_path: Path, threads: str, sig: int) -> None:
    """A request that would run for an hour, then SIGTERM with GUNICORN_GRACEFUL_TIMEOUT=2 (the
    worker is killed at 2 s) or SIGQUIT/SIGINT (it stops at once): one "aborted" line names it."""
    answered, entries = slow_request(tmp_path, threads, sig, seconds=3600, grace="2")
    assert answered in (0, 500)  # no answer, or (a sync worker stopped by SIGINT) gunicorn's own 500
    aborted = [e for e in entries if e.get("msg") == "aborted"]
    assert [(e["request_id"], e["path"], e["status"]) for e in aborted] == [("slow-1", "/api/slow", None)], entries
    assert {f"n-{n}" for n in range(100)} <= {e.get("request_id") for e in entries}


def test_the_health_check_passes_on_a_200_only(tmp_path: Path) -> None:
    """healthcheck.py, the image's HEALTHCHECK, run as the image runs it (``python -I -S``)."""

    def check(port: int) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-I", "-S", str(ROOT / "healthcheck.py")]
        return subprocess.run(command, env={**os.environ, "PORT": str(port)}, capture_output=True, text=True)

    with gunicorn(tmp_path) as server:
        assert check(server.port).returncode == 0
    refused = check(free_port())
    assert refused.returncode == 1 and refused.stderr.startswith("unhealthy: ConnectionRefusedError"), refused.stderr
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(HANG)
        answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        thread = threading.Thread(target=lambda: (conn := listener.accept()[0]).recv(1024) and conn.sendall(answer))
        thread.start()
        failing = check(listener.getsockname()[1])
        thread.join(HANG)
    assert failing.returncode == 1 and "'HTTP/1.1 503 Service Unavailable'" in failing.stderr, failing.stderr
