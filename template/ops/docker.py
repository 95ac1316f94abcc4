"""The Docker engine: connect, build, run, wait for health, stop. Docker SDK, no shell strings.

Works with any engine the Docker SDK reaches through ``DOCKER_HOST`` (local socket, ``tcp://``,
``ssh://``), negotiating the API version, so old engines (20.10) work too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
from docker.models.containers import Container

from ops.errors import BuildFailed, EngineUnavailable, NeverHealthy

LineSink = Callable[[str], None]
MANAGED_LABEL = "dev.copier-netlify-docker.managed"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
START_HINT = (
    "start one (Linux: `sudo systemctl start docker` or `sudo dockerd &`; macOS/Windows: open Docker Desktop), "
    "or point DOCKER_HOST at a reachable engine"
)

PULL_HINT = (
    "The base image could not be pulled. Build from an image the engine has or can reach: "
    "`inv build --base-image IMAGE` or BASE_IMAGE=IMAGE (see the README: builds behind a TLS proxy, or offline)."
)


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def connect(timeout: float = 60) -> docker.DockerClient:
    """A client for the engine at DOCKER_HOST, or :class:`EngineUnavailable` saying how to start one."""
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as exc:
        reason = str(exc).split("(", 1)[0].strip() or type(exc).__name__
        raise EngineUnavailable(f"No Docker engine answers at {engine_address()} ({reason}); {START_HINT}.") from None
    except Exception as exc:  # requests/urllib3 connection errors surface here on some SDK versions
        raise EngineUnavailable(f"No Docker engine answers at {engine_address()} ({exc}); {START_HINT}.") from None
    return client


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tags: list[str]
    seconds: float


def build_image(
    client: docker.DockerClient,
    context: Path,
    tags: list[str],
    buildargs: Mapping[str, str] | None = None,
    *,
    nocache: bool = False,
    labels: Mapping[str, str] | None = None,
    on_line: LineSink | None = None,
    tail_lines: int = 40,
) -> BuildResult:
    """Build ``context`` and tag the image with every name in ``tags``, streaming the log to ``on_line``.

    On failure raises :class:`BuildFailed` with the tail of the build log, so the error is
    readable without scrolling back through the whole build.
    """
    started = time.perf_counter()
    tail: deque[str] = deque(maxlen=tail_lines)
    image_id = ""
    try:
        stream: Iterable[dict[str, Any]] = client.api.build(
            path=str(context),
            tag=tags[0],
            buildargs=dict(buildargs or {}),
            labels=dict(labels or {}),
            nocache=nocache,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        tail.append(line)
                        if on_line:
                            on_line(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk or "errorDetail" in chunk:
                message = chunk.get("error") or chunk["errorDetail"].get("message", "unknown error")
                if tail and " FROM " in tail[-1]:
                    message = f"{message.strip()}\n{PULL_HINT}"
                raise BuildFailed(f"docker build failed: {message.strip()}", detail="\n".join(tail))
    except docker.errors.APIError as exc:
        raise BuildFailed(f"docker build failed: {exc.explanation or exc}", detail="\n".join(tail)) from None
    if not image_id:
        raise BuildFailed("docker build finished without producing an image", detail="\n".join(tail))
    for name in tags[1:]:
        repository, _, tag = name.rpartition(":")
        client.api.tag(image_id, repository, tag)
    return BuildResult(image_id=image_id, tags=list(tags), seconds=time.perf_counter() - started)


@dataclass
class Running:
    """A container started by :func:`run_container`, published on ``127.0.0.1:host_port``."""

    container: Container
    host_port: int
    container_port: int
    started_at: float = field(default_factory=time.perf_counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"


def run_container(
    client: docker.DockerClient,
    image: str,
    *,
    container_port: int,
    host_port: int | None = None,
    environment: Mapping[str, str] | None = None,
    name: str | None = None,
    volumes: Mapping[str, Mapping[str, str]] | None = None,
) -> Running:
    """Start ``image`` detached with ``PORT=container_port``, published on loopback only.

    With no ``host_port`` the engine picks a free one, which avoids the race of probing for a
    free port and binding it later.
    """
    env = {"PORT": str(container_port), **(environment or {})}
    # Loopback only: a dev or smoke container is never reachable from the network.
    ports: dict[str, Any] = {f"{container_port}/tcp": ("127.0.0.1", host_port)}
    try:
        container = client.containers.run(
            image,
            detach=True,
            environment=env,
            name=name,
            ports=ports,
            labels={MANAGED_LABEL: image},
            volumes={k: dict(v) for k, v in volumes.items()} if volumes else None,
            init=False,  # gunicorn is a proper PID 1: it reaps workers and handles SIGTERM
        )
    except docker.errors.ImageNotFound:
        raise NeverHealthy(f"image {image!r} does not exist here; build it first with `inv build`") from None
    except docker.errors.APIError as exc:
        raise NeverHealthy(f"could not start {image}: {exc.explanation or exc}") from None
    started = time.perf_counter()
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{container_port}/tcp") or []
    if not bindings:
        logs = container_logs(container)
        remove(container)
        raise NeverHealthy(f"container for {image} exited before its port was published", detail=logs)
    return Running(
        container=container, host_port=int(bindings[0]["HostPort"]), container_port=container_port, started_at=started
    )


def wait_healthy(running: Running, *, timeout: float = 30, path: str = "/readyz") -> float:
    """Poll ``path`` until it answers 200; return the seconds since the container started.

    Fails fast (with the container's logs) when the container exits, and after ``timeout``.
    """
    deadline = time.perf_counter() + timeout
    last_error = "no answer yet"
    checks = 0
    with httpx.Client(timeout=1.0) as http:
        while time.perf_counter() < deadline:
            checks += 1
            if checks % 10 == 1:  # the engine round trip is slower than the HTTP probe
                running.container.reload()
                if running.container.status in {"exited", "dead"}:
                    code = running.container.attrs["State"].get("ExitCode")
                    raise NeverHealthy(
                        f"container {running.container.short_id} exited with code {code} before it was healthy",
                        detail=container_logs(running.container),
                    )
            try:
                response = http.get(running.url + path)
                if response.status_code == 200:
                    return time.perf_counter() - running.started_at
                last_error = f"{path} answered {response.status_code}"
            except httpx.TransportError as exc:
                last_error = type(exc).__name__
            time.sleep(0.02)
    raise NeverHealthy(
        f"container {running.container.short_id} was not healthy after {timeout:.0f}s ({last_error})",
        detail=container_logs(running.container),
    )


def container_logs(container: Container, tail: int = 200) -> str:
    try:
        raw: bytes = container.logs(tail=tail, stdout=True, stderr=True)
    except docker.errors.APIError:
        return "(logs unavailable)"
    return raw.decode("utf-8", "replace").rstrip()


def stop(container: Container, timeout: int) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; a container already gone is fine."""
    with contextlib.suppress(docker.errors.NotFound):
        container.stop(timeout=timeout)


def remove(container: Container) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)


def follow_logs(container: Container, on_line: LineSink) -> None:
    """Stream the container's output until it stops."""
    for raw in container.logs(stream=True, follow=True, stdout=True, stderr=True):
        on_line(raw.decode("utf-8", "replace").rstrip("\n"))


def managed_containers(client: docker.DockerClient, image_repo: str) -> list[Container]:
    """Containers this tooling started from ``image_repo`` (any tag), running or not."""
    found: list[Container] = client.containers.list(all=True, filters={"label": MANAGED_LABEL})
    return [c for c in found if c.labels.get(MANAGED_LABEL, "").rsplit(":", 1)[0] == image_repo]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> int:
    """``python -m ops.docker``: exit 0 if an engine answers, 3 (with the reason) if not."""
    try:
        client = connect(timeout=10)
    except EngineUnavailable as exc:
        print(exc, file=sys.stderr)
        return 3
    print(f"Docker engine {client.version().get('Version', '?')} at {engine_address()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
