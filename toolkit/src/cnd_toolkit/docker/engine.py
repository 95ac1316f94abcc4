"""Reach a Docker engine: a local socket or ``tcp://`` through the Docker SDK, ``ssh://`` through
the system's ``ssh`` (:mod:`cnd_toolkit.docker.ssh`), negotiating the API version so that old engines
(20.10) work too. A failure to connect says why, in whole words, and what to do.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import urllib.parse
from collections.abc import Iterator

import docker
import docker.errors
import requests.exceptions

from cnd_toolkit.docker import ssh
from cnd_toolkit.errors import EngineUnavailable
from cnd_toolkit.settings import is_loopback

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
START_HINT = (
    "start one (Linux: `sudo systemctl start docker` or `sudo dockerd &`; macOS/Windows: open Docker Desktop), "
    "or point DOCKER_HOST at a reachable engine"
)

PULL_HINT = (
    "The base image could not be pulled. Build from an image the engine has or can reach: "
    "`inv build --base-image IMAGE` or BASE_IMAGE=IMAGE (see the README: builds behind a TLS proxy, or offline)."
)


def engine_address(address: str | None = None) -> str:
    """``address`` (a DOCKER_HOST setting), else $DOCKER_HOST, else the local socket."""
    return address or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def is_local(address: str | None = None) -> bool:
    """Is the engine at ``address`` on this machine, so that ports it publishes on 127.0.0.1 reach us?

    A unix socket is; a ``tcp://`` or ``ssh://`` engine is when its host is a loopback name or
    address. Anything else (another host) is not: its containers are probed through the engine.
    """
    parts = urllib.parse.urlsplit(engine_address(address))
    return parts.scheme in {"unix", "npipe"} or is_loopback(parts.hostname or "")


def client_is_local(client: docker.DockerClient) -> bool:
    """:func:`is_local` for a connected client: a unix socket, or tcp:// to a loopback address."""
    base = str(client.api.base_url)
    if base == ssh.BASE_URL:  # relayed over ssh: another machine, as far as ports go
        return False
    if base.startswith("http+docker://"):  # the SDK's name for a unix socket or named pipe
        return True
    return is_local(base.replace("https://", "tcp://").replace("http://", "tcp://"))


def connect(address: str | None = None, timeout: float = 60) -> docker.DockerClient:
    """A client for the engine at ``address`` (default: $DOCKER_HOST), or :class:`EngineUnavailable`.

    The error says why the engine did not answer, in whole words, and how to start one.
    """
    address = engine_address(address)
    if address.startswith(ssh.SCHEME):
        return ssh.connect(address, timeout)
    try:
        # The rest of the environment still applies (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH).
        client = docker.from_env(timeout=max(1, int(timeout)), environment={**os.environ, "DOCKER_HOST": address})
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:  # requests errors are OSErrors
        reason = unreachable_reason(exc, address, timeout)
        # An engine that refuses this user is running: starting one is not the fix.
        hint = "" if reason.startswith("permission denied") else f"; {START_HINT}"
        raise EngineUnavailable(f"No Docker engine answers at {address}: {reason}{hint}.") from None
    return client


# What the Docker SDK raises when the engine goes away or refuses a request mid-task: the task layer
# catches these (and turns them into :func:`lost`) without importing the SDK or requests.
LOST_ERRORS: tuple[type[Exception], ...] = (requests.exceptions.ConnectionError, docker.errors.DockerException)


def lost(exc: BaseException) -> EngineUnavailable:
    """The error for an engine that stopped answering in the middle of a task (not at connect),
    or that refused a request the task did not expect to fail (its reason, from the engine)."""
    refused = next((c for c in _causes(exc) if isinstance(c, docker.errors.APIError) and c.explanation), None)
    if refused is not None:  # the engine answered: something changed under the task
        status = getattr(getattr(refused, "response", None), "status_code", None) or "error"
        return EngineUnavailable(
            f"the Docker engine refused a request during the task: {_one_line(Exception(refused.explanation))} "
            f"(HTTP {status}; was something changed on the engine meanwhile, by hand or another task?). "
            "`inv status` shows what serves; a deploy cut short this way keeps its lock until `inv lock --release`"
        )
    reason = unreachable_reason(exc, engine_address(), 60)
    return EngineUnavailable(
        f"the Docker engine stopped answering during the task: {reason}. Once it answers, `inv status` shows what "
        "serves; a deploy cut short this way keeps its lock until `inv lock --release`"
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, and exceptions held in ``args``)."""
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        queue.extend(item for item in wrapped if isinstance(item, BaseException))


def unreachable_reason(exc: BaseException, address: str, timeout: float) -> str:
    """Why the engine at ``address`` did not answer, as a whole phrase (not a library's fragment)."""
    path = address.removeprefix("unix://") if address.startswith("unix://") else ""
    chain = list(_causes(exc))
    for cause in chain:
        if isinstance(cause, docker.errors.APIError) or cause.__class__.__name__ == "HTTPError":
            status = getattr(getattr(cause, "response", None), "status_code", None)
            return (
                f"it answered HTTP {status or 'with an error'}, so it is not a Docker engine's API "
                "(check the address, and HTTP_PROXY/NO_PROXY)"
            )
    for cause in chain:
        if isinstance(cause, socket.gaierror):
            return f"host name not found ({cause.strerror or cause})"
        if isinstance(cause, (TimeoutError, socket.timeout)) or "Timeout" in cause.__class__.__name__:
            return f"no answer within {timeout:g}s"
        if isinstance(cause, PermissionError):
            return f"permission denied on {path or address} (add your user to the `docker` group, or use sudo)"
        if isinstance(cause, FileNotFoundError):
            return f"no such socket: {path}" if path else "no such file"
        if isinstance(cause, ConnectionRefusedError):
            if path and os.path.isdir(path):
                return f"{path} is a directory, not a socket"
            if path and os.path.exists(path) and not stat.S_ISSOCK(os.stat(path).st_mode):
                return f"{path} is not a socket"
            return "connection refused (nothing listens there)"
        if isinstance(cause, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            return "the connection was closed without an answer (is it a Docker engine?)"
        if cause.__class__.__name__ in {"RemoteDisconnected", "BadStatusLine"}:
            return "the connection was closed without an answer (is it a Docker engine?)"
        if cause.__class__.__name__ == "SSLError":
            return f"TLS failed ({cause.__class__.__name__}: {_one_line(cause)})"
        if isinstance(cause, OSError) and cause.errno:
            return f"{os.strerror(cause.errno).lower()} (errno {cause.errno})"
    # Nothing underneath (a bad DOCKER_HOST, a missing TLS file): the SDK's own message is whole.
    innermost = chain[-1] if chain else exc
    return _one_line(innermost) or type(innermost).__name__


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.removeprefix("Error while fetching server API version: ")


def main() -> int:
    """``python -m cnd_toolkit.docker``: exit 0 if an engine answers, 3 (with the reason) if not."""
    try:
        client = connect(timeout=10)
    except EngineUnavailable as exc:
        print(exc, file=sys.stderr)
        return 3
    print(f"Docker engine {client.version().get('Version', '?')} at {engine_address()}")
    return 0
