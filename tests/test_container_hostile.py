"""The generated image on a real Docker engine under hostile input: gunicorn's refusals, log lines,
slow clients against the HEALTHCHECK, and bad settings at start-up."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

pytestmark = pytest.mark.docker

CONTAINER_PORT = "8080/tcp"  # the default answer for `port`


@contextmanager
def running(engine: Any, image: str, **env: str) -> Iterator[tuple[Any, int]]:
    container = engine.containers.run(image, detach=True, environment=env, ports={CONTAINER_PORT: ("127.0.0.1", None)})
    try:
        deadline = time.monotonic() + 120  # a poll's deadline: the first check runs after 10 s
        while True:
            container.reload()
            if container.status == "exited":
                pytest.fail(f"the container exited: {container.logs().decode()[-2000:]}")
            if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the container was not healthy within 120 s: {container.attrs['State']}")
            time.sleep(0.25)
        yield container, int(container.attrs["NetworkSettings"]["Ports"][CONTAINER_PORT][0]["HostPort"])
    finally:
        container.remove(force=True)


def exchange(port: int, request: bytes, wait: float = 60) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"closed without a response: {data!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return int(lines[0].split()[1]), headers, body


GET = b"GET /api/version HTTP/1.1\r\nHost: t\r\n"
REFUSED = [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (GET + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (GET + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
    (b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}", 400),
    (GET + b"X-A: a\x01b\r\n\r\n", 400),
    (b"NOT A REQUEST\r\n\r\n", 400),
]


def test_refusals_are_json_and_every_log_line_is_json(built: dict[str, Any], engine: Any) -> None:
    with running(engine, built["image"], ACCESS_LOG="1", APP_LOG_FLUSH_MS="0") as (container, port):
        ids = []
        for request, status in REFUSED:
            got, headers, body = exchange(port, request)
            assert got == status, body
            assert headers["content-type"] == "application/json"
            error = json.loads(body)["error"]
            assert error["status"] == status and error["request_id"] == headers["x-request-id"]
            ids.append(error["request_id"])
        rng = random.Random(11)
        agents = {}
        for n in range(40):
            agent = "".join(rng.choice(['"', "\\", "é", "}", '", "x": "', "\t", "a", " "]) for _ in range(12)).strip()
            agents[f"ua-{n}"] = agent
            head = f"GET /healthz?q=%22%5C%0A HTTP/1.1\r\nHost: t\r\nX-Request-ID: ua-{n}\r\nUser-Agent: "
            assert exchange(port, head.encode() + agent.encode() + b"\r\nConnection: close\r\n\r\n")[0] == 200
        container.stop(timeout=30)
        logs = container.logs(stdout=True, stderr=True).decode("utf-8").splitlines()
    entries = [json.loads(line) for line in logs]  # every line the image wrote
    rejected = {e["request_id"] for e in entries if e.get("msg") == "rejected"}
    assert set(ids) <= rejected
    access = {e["request_id"]: e for e in entries if e["logger"] == "gunicorn.access"}
    for request_id, agent in agents.items():
        assert access[request_id]["user_agent"] == agent.encode().decode("latin-1")
    assert any("Booting worker" in e.get("msg", "") for e in entries)


SLOW = {
    "head": [b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: "],
    # A body announced and sent a byte a second: by Content-Length and chunked.
    "body": [
        b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[",
        b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n186a0\r\n[",
    ],
}
BODY_BYTES = 100_000  # what both bodies announce (0x186a0)


def docker_time(text: str) -> dt.datetime:
    """A timestamp the engine wrote (RFC 3339 with nanoseconds), to the microsecond."""
    return dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00"))


def dropped(sock: socket.socket) -> bool:
    """Whether the server answered or closed a connection that has not finished its request."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(4096)  # an answer (a 408) or the close
    except BlockingIOError:
        return False
    except OSError:
        pass  # reset
    finally:
        sock.settimeout(timeout)
    return True


def rest_of_request(kind: str, opening: bytes, dripped: int) -> bytes:
    """What completes a stalled request: the end of its head, or the rest of its JSON body."""
    if kind == "head":
        return b"1\r\nConnection: close\r\n\r\n"
    rest = b" " * (BODY_BYTES - 1 - dripped - 1) + b"]"  # "[" + the dripped 1s + spaces + "]"
    return rest + (b"\r\n0\r\n\r\n" if b"chunked" in opening else b"")


@pytest.mark.parametrize("kind", sorted(SLOW))
def test_slow_clients_do_not_make_the_container_unhealthy(built: dict[str, Any], engine: Any, kind: str) -> None:
    """2 x workers x threads clients that send half a head, or a head and then a body a byte a
    second, stay connected until a HEALTHCHECK that started after they all were has finished:
    meanwhile /healthz keeps answering and the health checks pass.

    The head and body deadlines are the longest allowed (300 s), so no stalled client is dropped
    while the test runs: a worker whose threads they held would answer /healthz only when one
    was dropped, minutes later, and that check would fail. At the end every stalled client
    finishes its request and gets its answer: the server held all of them the whole time."""
    env = {"GUNICORN_HEADER_TIMEOUT": "300", "GUNICORN_BODY_TIMEOUT": "300"}
    with running(engine, built["image"], **env) as (container, port):
        config = engine.images.get(built["image"]).attrs["Config"]["Env"]
        env = dict(item.split("=", 1) for item in config)
        count = 2 * int(env["WEB_CONCURRENCY"]) * int(env["GUNICORN_THREADS"])
        openings = [SLOW[kind][n % len(SLOW[kind])] for n in range(count)]
        stalled: list[socket.socket] = []
        dripped = [0] * count
        try:
            for opening in openings:
                sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                sock.sendall(opening)
                stalled.append(sock)
            placed = dt.datetime.now(dt.UTC)  # every stalled client is connected from here on
            deadline = time.monotonic() + 120  # HEALTHCHECK --interval=10s: one starts well before
            while True:
                if kind == "body":
                    for n, sock in enumerate(stalled):
                        sock.sendall(b"1")
                        dripped[n] += 1
                status, _, _ = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                assert status == 200
                assert not [n for n, sock in enumerate(stalled) if dropped(sock)], "no stalled client is dropped"
                container.reload()
                health = container.attrs["State"]["Health"]
                during = [e for e in health["Log"] if docker_time(e["Start"]) > placed]
                if during:  # the engine logs a check when it has finished
                    break
                assert time.monotonic() < deadline, f"no health check ran with the clients stalled: {health}"
                time.sleep(0.5 if kind == "head" else 1)  # the pace of the hostile clients
            assert health["Status"] == "healthy"
            assert all(entry["ExitCode"] == 0 for entry in during), during
            for n, sock in enumerate(stalled):
                sock.sendall(rest_of_request(kind, openings[n], dripped[n]))
            for n, sock in enumerate(stalled):
                status, _, body = read_response(sock)
                assert status == 200, body
                if kind == "body":
                    assert json.loads(body)["echo"] == ([int("1" * dripped[n])] if dripped[n] else [])
        finally:
            for sock in stalled:
                sock.close()


@pytest.mark.parametrize(
    ("env", "code", "expected"),
    [
        ({"APP_MAX_REQUEST_BYTES": "abc"}, 2, "serve.py: APP_MAX_REQUEST_BYTES='abc' is not a whole number"),
        ({"APP_LOG_LEVEL": "loud"}, 2, "serve.py: APP_LOG_LEVEL='loud' is not a level"),
        ({"GUNICORN_HEADER_TIMEOUT": "soon"}, 2, "serve.py: gunicorn.conf.py: GUNICORN_HEADER_TIMEOUT='soon'"),
        ({"GUNICORN_BODY_TIMEOUT": "0"}, 2, "serve.py: gunicorn.conf.py: GUNICORN_BODY_TIMEOUT=0 is out of range"),
    ],
)
def test_a_bad_setting_stops_the_container_with_one_line(
    built: dict[str, Any], engine: Any, env: dict[str, str], code: int, expected: str
) -> None:
    container = engine.containers.run(built["image"], detach=True, environment=env)
    try:
        result = container.wait(timeout=120)
        logs = container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)
    assert result["StatusCode"] == code
    assert logs.splitlines() == [logs.strip()] and logs.startswith(expected), logs
