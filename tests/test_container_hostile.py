"""The generated image on a real Docker engine under hostile input: gunicorn's refusals, log lines,
and bad settings at start-up. (Slow clients are the proxy's: cnd-toolkit's test_slow_clients
sends them to a deployed release through the shared Caddy.)"""

from __future__ import annotations

import json
import random
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


def test_refusals_get_their_status_and_every_log_line_is_json(built: dict[str, Any], engine: Any) -> None:
    """gunicorn's own refusals (its short HTML page; nothing here reaches the app), and seeded
    hostile User-Agents: every line the image writes is one JSON object."""
    with running(engine, built["image"], ACCESS_LOG="1", APP_LOG_FLUSH_MS="0") as (container, port):
        for request, status in REFUSED:
            got, _, body = exchange(port, request)
            assert got == status, body
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
    access = {e["request_id"]: e for e in entries if e["logger"] == "gunicorn.access"}
    for request_id, agent in agents.items():
        assert access[request_id]["user_agent"] == agent.encode().decode("latin-1")
    assert any("Booting worker" in e.get("msg", "") for e in entries)


@pytest.mark.parametrize(
    ("env", "code", "expected"),
    [
        ({"APP_MAX_REQUEST_BYTES": "abc"}, 2, "serve.py: APP_MAX_REQUEST_BYTES='abc' is not a whole number"),
        ({"APP_LOG_LEVEL": "loud"}, 2, "serve.py: APP_LOG_LEVEL='loud' is not a level"),
        ({"GUNICORN_TIMEOUT": "soon"}, 2, "serve.py: gunicorn.conf.py: GUNICORN_TIMEOUT='soon'"),
        (
            {"GUNICORN_GRACEFUL_TIMEOUT": "0"},
            2,
            "serve.py: gunicorn.conf.py: GUNICORN_GRACEFUL_TIMEOUT=0 is out of range",
        ),
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
