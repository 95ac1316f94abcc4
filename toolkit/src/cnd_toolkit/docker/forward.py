"""Reach a container's port from this machine through the Docker API alone (`kubectl port-forward`).

On a remote engine (``tcp://``, ``ssh://``) a container's port is not reachable from the machine
that runs `inv`, and a deploy must not publish it. :func:`forward` listens on 127.0.0.1 here;
each connection made to it runs a small relay in the container with ``docker exec`` (the image
has Python), and the bytes go both ways over the exec's hijacked stream. Nothing is published
and no port is opened on the engine's host: the smoke suite runs against a release on a remote
engine as it does locally.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.models.containers import Container

# Runs in the container: one TCP connection to the app, relayed to stdin and stdout.
RELAY = """\
import os, socket, sys, threading
app = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=600)
def upstream():
    while True:
        data = os.read(0, 65536)
        if not data:
            app.shutdown(socket.SHUT_WR)
            return
        app.sendall(data)
threading.Thread(target=upstream, daemon=True).start()
out = sys.stdout.buffer
while True:
    data = app.recv(65536)
    if not data:
        break
    out.write(data)
    out.flush()
"""
STDOUT, STDERR = 1, 2


def _exec_stream(client: docker.DockerClient, container: Container, port: int) -> tuple[socket.socket, Any]:
    """Start the relay in ``container``; return the exec's hijacked socket (and the response that owns it)."""
    api: Any = client.api  # private helpers below: the type stubs list only the public API
    created = api.exec_create(
        container.id, ["python", "-c", RELAY, str(port)], stdin=True, stdout=True, stderr=True, tty=False
    )
    # The SDK's own exec_start(socket=True) knows only its own transports; this works on any of
    # them, ours over ssh included: the connection is upgraded and its socket is the stream.
    response = api._post_json(
        api._url("/exec/{0}/start", created["Id"]),
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        data={"Tty": False, "Detach": False},
        stream=True,
    )
    api._raise_for_status(response)
    raw = response.raw._fp.fp.raw
    return getattr(raw, "_sock", raw), response


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _pump_in(local: socket.socket, stream: socket.socket) -> None:
    """This machine's client -> the relay's stdin; its end closes the relay's stdin."""
    with contextlib.suppress(OSError):
        while data := local.recv(65536):
            stream.sendall(data)
    with contextlib.suppress(OSError):
        stream.shutdown(socket.SHUT_WR)


def _pump_out(stream: socket.socket, local: socket.socket, errors: list[str]) -> None:
    """The relay's stdout (framed by the engine: 8-byte headers) -> this machine's client."""
    with contextlib.suppress(OSError):
        while header := _recv_exactly(stream, 8):
            kind, size = header[0], struct.unpack(">I", header[4:])[0]
            payload = _recv_exactly(stream, size) if size else b""
            if size and not payload:
                break
            if kind == STDOUT:
                local.sendall(payload)
            elif kind == STDERR and len(errors) < 20:
                errors.append(payload.decode("utf-8", "replace"))
    with contextlib.suppress(OSError):
        local.shutdown(socket.SHUT_RDWR)
    local.close()


@dataclass
class Forwarded:
    """Where :func:`forward` listens, and what its relays wrote to stderr (why a connection closed)."""

    url: str
    errors: list[str] = field(default_factory=list)

    def problems(self) -> str:
        return " ".join(" ".join(self.errors).split())[-500:]


@contextlib.contextmanager
def forward(client: docker.DockerClient, container: Container, port: int) -> Iterator[Forwarded]:
    """Listen on 127.0.0.1 here (``.url``); each connection is relayed to ``port`` inside ``container``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    forwarded = Forwarded(f"http://127.0.0.1:{listener.getsockname()[1]}")
    streams: list[socket.socket] = []

    def serve(local: socket.socket) -> None:
        try:
            stream, response = _exec_stream(client, container, port)
        except docker.errors.APIError as exc:
            forwarded.errors.append(str(exc.explanation or exc))
            local.close()
            return
        streams.append(stream)
        threading.Thread(target=_pump_in, args=(local, stream), daemon=True).start()
        _pump_out(stream, local, forwarded.errors)
        response.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                local, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            local.settimeout(None)
            threading.Thread(target=serve, args=(local,), daemon=True).start()

    acceptor = threading.Thread(target=accept, name="forward", daemon=True)
    acceptor.start()
    try:
        yield forwarded
    finally:
        stop.set()
        acceptor.join(2)
        listener.close()
        for stream in streams:
            with contextlib.suppress(OSError):
                stream.close()
