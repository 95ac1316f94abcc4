"""The Docker engine: connect, build, run, wait for health, stop. Docker SDK, no shell strings.

Works with any engine ``DOCKER_HOST`` names: a local socket or ``tcp://`` through the Docker SDK,
``ssh://`` through the system's ``ssh`` (see :mod:`ops.engine_ssh`), negotiating the API version,
so old engines (20.10) work too.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
from docker.models.containers import Container

from ops import engine_ssh, logs
from ops.errors import BuildFailed, EngineUnavailable, ImageMissing, Interrupted, NeverHealthy, OpsError
from ops.logs import LineSink
from ops.settings import is_server_variable

MANAGED_LABEL = "dev.copier-netlify-docker.managed"
# Set by the Dockerfile on every image a build of the project makes (value: the project slug).
PROJECT_LABEL = "dev.copier-netlify-docker.project"
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
    if engine_address().startswith(engine_ssh.SCHEME):
        return engine_ssh.connect(engine_address(), timeout)
    try:
        client = docker.from_env(timeout=max(1, int(timeout)))
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:  # requests errors are OSErrors
        address = engine_address()
        reason = unreachable_reason(exc, address, timeout)
        # An engine that refuses this user is running: starting one is not the fix.
        hint = "" if reason.startswith("permission denied") else f"; {START_HINT}"
        raise EngineUnavailable(f"No Docker engine answers at {address}: {reason}{hint}.") from None
    return client


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


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tags: list[str]
    seconds: float
    # Images earlier builds left, removed after this one (see remove_leftovers): short ids.
    replaced: list[str] = field(default_factory=list)


# The classic builder's log: a step's image id, the container a step runs in, a step taken from cache.
_STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12})$")
_STEP_CONTAINER = re.compile(r"^ ---> Running in ([0-9a-f]{12})$")


@dataclass
class _BuildTrace:
    """What a build made so far, read from its log, so an interrupted one can be undone."""

    created: list[str] = field(default_factory=list)  # step images this build committed (not cached)
    seen: set[str] = field(default_factory=set)  # every step image of this build, from cache or not
    container: str = ""  # the step container of the step under way
    cached: bool = False

    def read(self, line: str) -> None:
        if line.startswith("Step "):
            self.cached, self.container = False, ""
        elif line == " ---> Using cache":
            self.cached = True
        elif found := _STEP_CONTAINER.match(line):
            self.container = found[1]
        elif found := _STEP_IMAGE.match(line):
            self.seen.add(found[1])
            if not self.cached:
                self.created.append(found[1])


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
    readable without scrolling back through the whole build. Interrupted (KeyboardInterrupt: a
    signal), it ends the build, removes the step container and the step images it made, and
    raises :class:`Interrupted`. After a build, what earlier builds left and nothing uses goes
    (see :func:`remove_leftovers`), so rebuilds do not pile up untagged images.
    """
    started = time.perf_counter()
    tail: deque[str] = deque(maxlen=tail_lines)
    trace = _BuildTrace()
    image_id = ""
    before = {name: tagged_id(client, name) for name in tags}
    stream: Iterator[dict[str, Any]] | None = None
    try:
        stream = client.api.build(
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
                # Cleaned: the classic builder colours a step's stderr with escape codes.
                for line in logs.clean_lines(chunk["stream"]):
                    if line.strip():
                        trace.read(line)
                        tail.append(line)
                        if on_line:
                            on_line(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk or "errorDetail" in chunk:
                message = logs.clean_line(chunk.get("error") or chunk["errorDetail"].get("message", "unknown error"))
                if tail and " FROM " in tail[-1]:
                    message = f"{message.strip()}\n{PULL_HINT}"
                raise BuildFailed(f"docker build failed: {message.strip()}", detail="\n".join(tail))
    except docker.errors.APIError as exc:
        raise BuildFailed(f"docker build failed: {exc.explanation or exc}", detail="\n".join(tail)) from None
    except KeyboardInterrupt:
        _end_stream(stream)
        raise Interrupted(_undo_build(client, trace, tags, before)) from None
    if not image_id:
        raise BuildFailed("docker build finished without producing an image", detail="\n".join(tail))
    for name in tags[1:]:
        repository, _, tag = name.rpartition(":")
        client.api.tag(image_id, repository, tag)
    replaced = remove_leftovers(client, image_id, set(before.values()) - {"", image_id}, trace.seen)
    return BuildResult(image_id=image_id, tags=list(tags), seconds=time.perf_counter() - started, replaced=replaced)


def _end_stream(stream: Iterator[dict[str, Any]] | None) -> None:
    """Close the build's HTTP response now (not when it is garbage): the engine then cancels the build."""
    frame = getattr(stream, "gi_frame", None)
    response = frame.f_locals.get("response") if frame is not None else None  # the SDK's _stream_helper
    with contextlib.suppress(Exception):
        if response is not None:
            response.close()
    with contextlib.suppress(Exception):
        if stream is not None and hasattr(stream, "close"):
            stream.close()


def _undo_build(
    client: docker.DockerClient, trace: _BuildTrace, tags: list[str], before: Mapping[str, str], wait: float = 15
) -> str:
    """Remove what an interrupted build left (its step container, the step images it made); say what is true."""
    if trace.container:
        # forcerm: the engine removes the step container once it has cancelled the step. Waited
        # for, so the images under it can go; removed here if the engine is slow about it.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                client.api.inspect_container(trace.container)
            except docker.errors.NotFound:
                break
            except docker.errors.APIError:
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(trace.container, force=True, v=True)
    removed = 0
    for image in reversed(trace.created):  # the newest first: each is the parent of the next
        try:
            client.api.remove_image(image, noprune=True)
            removed += 1
        except docker.errors.APIError:  # tagged meanwhile, or a parent still in use: leave it
            continue
    changed = [name for name in tags if tagged_id(client, name) != before.get(name, "")]
    outcome = f"{', '.join(changed)} now names the new image" if changed else "nothing was tagged"
    made = f"; removed the {removed} step image{'s' if removed != 1 else ''} it had made" if removed else ""
    return f"Build interrupted; {outcome}{made}"


def tagged_id(client: docker.DockerClient, name: str) -> str:
    """The id of the image ``name`` names, or ``""``."""
    try:
        return client.images.get(name).id or ""
    except docker.errors.NotFound:
        return ""


def remove_leftovers(client: docker.DockerClient, image_id: str, untagged: Iterable[str], used: set[str]) -> list[str]:
    """After a build of ``image_id``: remove what earlier builds of the project left, if unused.

    Candidates: ``untagged`` (the images the tags named before this build), and the project's
    dangling images (no tag, no child: the builder stage of an earlier build, a failed build's
    last step) that this build did not use (``used``: short ids of its step images, from cache or
    made). Kept: an image with a tag, one without this project's ``PROJECT_LABEL``, and one that a
    container (running or stopped) or another image is built on. Removing one also removes its
    untagged parents that nothing else shares. Returns the short ids removed.
    """
    try:
        slug = (client.images.get(image_id).labels or {}).get(PROJECT_LABEL, "")
    except docker.errors.NotFound:
        return []
    if not slug:
        return []
    selector: dict[str, str | list[str] | bool] = {"label": f"{PROJECT_LABEL}={slug}", "dangling": True}
    candidates = set(untagged) | {i.id or "" for i in client.images.list(filters=selector)}
    removed: list[str] = []
    for candidate in sorted(candidates - {"", image_id}):
        if _short(candidate) in used:
            continue
        try:
            found = client.images.get(candidate)
        except docker.errors.NotFound:
            continue
        if found.tags or (found.labels or {}).get(PROJECT_LABEL) != slug:
            continue
        if client.api.containers(all=True, quiet=True, filters={"ancestor": candidate}):
            continue
        try:
            client.api.remove_image(candidate, noprune=False)
        except docker.errors.APIError:  # another image was built FROM it: it stays
            continue
        removed.append(_short(candidate))
    return removed


# gunicorn.conf.py's default and accepted range for GUNICORN_GRACEFUL_TIMEOUT; tests hold the two
# in step by evaluating gunicorn.conf.py itself.
GRACEFUL_VARIABLE = "GUNICORN_GRACEFUL_TIMEOUT"
GRACEFUL_DEFAULT = 20
GRACEFUL_RANGE = (1, 600)
# After the graceful timeout gunicorn kills its workers and exits; the margin lets it finish
# that (and flush its logs) before the engine's SIGKILL.
STOP_MARGIN = 5


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The server's variables set in ``environ`` (e.g. ``os.environ``), to pass to a container.

    `GUNICORN_TIMEOUT=90 inv run` reaches the container as it would a local `python serve.py`.
    """
    return {name: value for name, value in sorted(environ.items()) if is_server_variable(name)}


def port_not_passed(environ: Mapping[str, str]) -> str:
    """A note when ``environ`` sets PORT, which these tasks do not pass to a container, or ``""``.

    The container listens on the image's port: the engine publishes that port, and the health
    check inside the image probes it, so a PORT from the shell would only break both. The host
    side is --port.
    """
    if "PORT" not in environ:
        return ""
    shown = " ".join(logs.clean_line(environ["PORT"]).split())[:40]
    return (
        f"PORT={shown} in your environment is not passed to the container: it listens on the image's port; "
        "choose the port on 127.0.0.1 with --port"
    )


def graceful_timeout(environment: Mapping[str, str]) -> int:
    """The seconds gunicorn gives in-flight requests after SIGTERM, as gunicorn.conf.py reads them.

    Raises :class:`OpsError` (one line, naming the variable) for a value gunicorn.conf.py refuses.
    """
    raw = environment.get(GRACEFUL_VARIABLE, "").strip()
    low, high = GRACEFUL_RANGE
    if not raw:
        return GRACEFUL_DEFAULT
    try:
        value = int(raw)
    except ValueError:
        message = f"{GRACEFUL_VARIABLE}={raw!r} is not a whole number of seconds; set it to {low}..{high} or unset it"
        raise OpsError(message) from None
    if not low <= value <= high:
        raise OpsError(f"{GRACEFUL_VARIABLE}={value} is out of range; set it to {low}..{high} or unset it")
    return value


def _env_list(entries: Iterable[str] | None) -> dict[str, str]:
    pairs = (entry.partition("=") for entry in entries or ())
    return {name: value for name, _, value in pairs}


@dataclass
class Running:
    """A container started by :func:`run_container`, published on ``127.0.0.1:host_port``."""

    container: Container
    host_port: int
    container_port: int
    started_at: float = field(default_factory=time.perf_counter)
    # Seconds `docker stop` waits before SIGKILL: the container's graceful timeout plus a margin.
    stop_timeout: int = GRACEFUL_DEFAULT + STOP_MARGIN

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
    free port and binding it later. The container's stop timeout is its effective
    GUNICORN_GRACEFUL_TIMEOUT (the image's, overridden by ``environment``) plus a margin, so any
    `docker stop`, ours or a person's, lets in-flight requests finish.
    """
    env = {"PORT": str(container_port), **(environment or {})}
    try:
        image_env = _env_list(client.images.get(image).attrs.get("Config", {}).get("Env"))
    except docker.errors.ImageNotFound:
        raise ImageMissing(f"image {image!r} does not exist here; build it first with `inv build`") from None
    stop_timeout = graceful_timeout({**image_env, **env}) + STOP_MARGIN
    api = client.api
    try:
        # The low-level API: the high-level `containers.run` cannot set the stop timeout.
        created = api.create_container(
            image,
            detach=True,
            environment=env,
            name=name,
            ports=[container_port],
            labels={MANAGED_LABEL: image},
            stop_timeout=stop_timeout,
            host_config=api.create_host_config(
                # Loopback only: a dev or smoke container is never reachable from the network.
                port_bindings={container_port: ("127.0.0.1", host_port)},
                binds={k: dict(v) for k, v in volumes.items()} if volumes else None,
                init=False,  # gunicorn is a proper PID 1: it reaps workers and handles SIGTERM
            ),
        )
        container = client.containers.get(created["Id"])
        try:
            container.start()
        except docker.errors.APIError:
            remove(container)
            raise
    except docker.errors.APIError as exc:
        raise NeverHealthy(f"could not start {image}: {logs.clean_line(str(exc.explanation or exc))}") from None
    started = time.perf_counter()
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{container_port}/tcp") or []
    if not bindings:
        error = exited_error(container, f"{image} exited before its port was published")
        remove(container)
        raise error
    return Running(
        container=container,
        host_port=int(bindings[0]["HostPort"]),
        container_port=container_port,
        started_at=started,
        stop_timeout=stop_timeout,
    )


def exited_error(container: Container, what: str) -> NeverHealthy:
    """The error for a container that stopped at start: the app's first error, once, and a short tail."""
    output = container_logs(container, tail=1000)
    code = container.attrs.get("State", {}).get("ExitCode")
    cause = logs.first_error(output)
    where = f"container {container.short_id}" + (f", exit code {code}" if code is not None else "")
    if not cause:
        return NeverHealthy(f"{what} ({where}) and wrote nothing")
    tail = logs.short_tail(output)
    # A one-line log is the cause itself: no tail to repeat it.
    return NeverHealthy(f"the app did not start: {cause} ({where})", detail=tail if "\n" in tail else "")


def wait_healthy(running: Running, *, timeout: float = 30, path: str = "/readyz") -> float:
    """Poll ``path`` until it answers 200; return the seconds since the container started.

    Fails fast (with the app's first error and a short log tail) when the container exits, and
    after ``timeout``.
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
                    raise exited_error(running.container, "the container exited before it was healthy")
            try:
                response = http.get(running.url + path)
                if response.status_code == 200:
                    return time.perf_counter() - running.started_at
                last_error = f"{path} answered {response.status_code}"
            except httpx.TransportError as exc:
                last_error = type(exc).__name__
            time.sleep(0.02)
    output = container_logs(running.container, tail=1000)
    cause = logs.first_error(output)
    raise NeverHealthy(
        f"container {running.container.short_id} was not healthy after {timeout:.0f}s ({last_error})"
        + (f"; its log says: {cause}" if cause else ""),
        detail=logs.short_tail(output),
    )


def container_logs(container: Container, tail: int = 200) -> str:
    """The last ``tail`` lines the container wrote, cleaned of escape sequences."""
    try:
        raw: bytes = container.logs(tail=tail, stdout=True, stderr=True)
    except docker.errors.APIError:
        return "(logs unavailable)"
    return "\n".join(logs.clean_lines(raw.decode("utf-8", "replace"))).rstrip()


def stop(container: Container, timeout: int) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; a container already gone is fine."""
    with contextlib.suppress(docker.errors.NotFound):
        container.stop(timeout=timeout)


def remove(container: Container) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)


def shutdown(running: Running, on_line: LineSink | None = None) -> None:
    """Stop ``running`` the way its image asks (graceful timeout plus a margin), then remove it.

    Removed even when the stop is interrupted (a second Ctrl-C): ``remove`` kills it at once.
    """
    container = running.container
    try:
        if container.status == "running":  # as of the last reload; an exited one needs no stop
            if on_line:
                grace = running.stop_timeout - STOP_MARGIN
                on_line(f"Stopping {container.short_id}: in-flight requests get up to {grace}s (Ctrl-C again: now)")
            stop(container, timeout=running.stop_timeout)
    finally:
        remove(container)
        if on_line:
            on_line(f"Removed container {container.short_id}.")


def raise_if_failed(container: Container) -> None:
    """After a container stopped by itself: :class:`OpsError` with its first error unless it exited 0."""
    container.reload()
    code = container.attrs.get("State", {}).get("ExitCode")
    if code:
        output = container_logs(container, tail=1000)
        cause = logs.first_error(output) or "it wrote no error"
        raise OpsError(
            f"the container stopped by itself with exit code {code}: {cause}", detail=logs.short_tail(output)
        )


def follow_logs(container: Container, on_line: LineSink) -> None:
    """Stream the container's output, line by line and cleaned, until it stops."""
    splitter = logs.LineSplitter()
    for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
        for line in splitter.feed(chunk):
            on_line(line)
    for line in splitter.close():
        on_line(line)


def managed_containers(client: docker.DockerClient, image_repo: str) -> list[Container]:
    """Containers this tooling started from ``image_repo`` (any tag), running or not."""
    found: list[Container] = client.containers.list(all=True, filters={"label": MANAGED_LABEL})
    return [c for c in found if c.labels.get(MANAGED_LABEL, "").rsplit(":", 1)[0] == image_repo]


@dataclass
class Cleaned:
    """What :func:`clean_project` removed, and what it left in place with the reason."""

    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def clean_project(client: docker.DockerClient, slug: str, on_line: LineSink | None = None) -> Cleaned:
    """Remove every container and image this project's builds and runs left on the engine.

    Images: everything carrying ``PROJECT_LABEL=slug``, which the Dockerfile sets in both
    stages: tagged images (under any name, a registry path included), the previous image a
    rebuild left untagged, the builder stage's image, and the step images of a failed build.
    Images tagged ``<slug>:*`` from before the label existed go too. Removing one also removes
    its untagged parents, down to the base image, which is not the project's.
    Containers: those these tasks started, and stopped ones made from the project's images
    (exited runs, a failed build's step). A running container these tasks did not start is
    left alone, and so is its image; both are reported in ``kept``.
    """
    say = on_line or (lambda line: None)
    done = Cleaned()
    selector: dict[str, str | list[str] | bool] = {"label": f"{PROJECT_LABEL}={slug}"}
    containers = {c.id: c for c in client.containers.list(all=True, filters=selector)}
    containers.update({c.id: c for c in managed_containers(client, slug)})
    for container in containers.values():
        if container.status == "running" and MANAGED_LABEL not in container.labels:
            done.kept.append(
                f"container {container.short_id} ({container.name}) is running and was not started by these tasks"
            )
            continue
        remove(container)
        done.containers.append(container.short_id)
        say(f"removed container {container.short_id}")
    refused: set[str] = set()
    # Rounds: removing a child image can leave its parent top-level (a derived image's base).
    for _ in range(10):
        images = {i.id or "": i for i in client.images.list(filters=selector)}
        images.update({i.id or "": i for i in client.images.list(name=slug)})
        pending = [(image_id, i) for image_id, i in images.items() if image_id not in refused]
        if not pending:
            break
        for image_id, image in pending:
            for reference in image.tags or [image_id]:
                try:
                    client.api.remove_image(reference, noprune=False)
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError as exc:
                    refused.add(image_id)
                    reason = " ".join(str(exc.explanation or exc).split())
                    done.kept.append(f"image {reference if image.tags else _short(image_id)}: {reason}")
                    break
                name = reference if image.tags else f"{_short(image_id)} (untagged)"
                done.images.append(name)
                say(f"removed image {name}")
    return done


def image_labels(client: docker.DockerClient, image: str) -> dict[str, str] | None:
    """The labels of ``image``, or None when the engine does not have it."""
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        return None
    return dict(found.labels or {})


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
