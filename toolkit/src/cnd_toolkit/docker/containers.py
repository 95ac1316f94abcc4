"""Containers: start one as a context manager, gate on its health, follow its logs, stop it gracefully.

Health comes from the engine (the image's ``HEALTHCHECK``, and whether the container is still
running), so a gate works on any engine ``DOCKER_HOST`` names; where the published port is
reachable from here (an engine on this machine), an HTTP probe answers sooner.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import docker
import docker.errors
import httpx
from docker.models.containers import Container

from cnd_toolkit import logs
from cnd_toolkit.docker.engine import client_is_local
from cnd_toolkit.errors import ImageMissing, NeverHealthy, OpsError
from cnd_toolkit.logs import LineSink
from cnd_toolkit.settings import is_server_variable, whole_number
from cnd_toolkit.wait import NotReady, TimedOut, http_ok, poll

MANAGED_LABEL = "dev.copier-netlify-docker.managed"
# How production runs the image (docker run --read-only --tmpfs /tmp ...): the deploy's releases,
# and the smoke run, so that what the smoke suite passes is what the rollout will start.
HARDENED: dict[str, Any] = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"},
    "security_opt": ["no-new-privileges:true"],
    "cap_drop": ["ALL"],
}


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
    """A container started by :func:`start`.

    ``host_port`` is where the engine published the container's port on its host's 127.0.0.1
    (None: not published). ``reachable``: that host is this machine, so ``url`` reaches the
    container from here; otherwise only the engine can tell whether it is healthy.
    """

    container: Container
    container_port: int
    host_port: int | None = None
    reachable: bool = True
    started_at: float = field(default_factory=time.perf_counter)
    # Seconds `docker stop` waits before SIGKILL: the container's graceful timeout plus a margin.
    stop_timeout: int = GRACEFUL_DEFAULT + STOP_MARGIN

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` on the engine's host, or ``""`` when the port is not published."""
        return f"http://127.0.0.1:{self.host_port}" if self.host_port else ""

    @property
    def probe_url(self) -> str:
        """``url`` where it reaches the container from this machine, else ``""``."""
        return self.url if self.reachable else ""


# How often the engine runs the image's HEALTHCHECK where it is the only way to know (a remote
# engine): the image's own 10 s would make every gate last at least 10 s.
REMOTE_HEALTH_INTERVAL = 2.0


def start(
    client: docker.DockerClient,
    image: str,
    *,
    container_port: int,
    host_port: int | None = None,
    publish: bool = True,
    environment: Mapping[str, str] | None = None,
    name: str | None = None,
    volumes: Mapping[str, Mapping[str, str]] | None = None,
    labels: Mapping[str, str] | None = None,
    health_interval: float | None = None,
    host_options: Mapping[str, Any] | None = None,
    networking: Mapping[str, Any] | None = None,
) -> Running:
    """Start ``image`` detached with ``PORT=container_port``; publish it on loopback only if ``publish``.

    With no ``host_port`` the engine picks a free one, which avoids the race of probing for a
    free port and binding it later. The container's stop timeout is its effective
    GUNICORN_GRACEFUL_TIMEOUT (the image's, overridden by ``environment``) plus a margin, so any
    `docker stop`, ours or a person's, lets in-flight requests finish. ``health_interval``
    (seconds) overrides how often the engine runs the image's HEALTHCHECK; on an engine that is
    not on this machine it defaults to :data:`REMOTE_HEALTH_INTERVAL`, since the gate then
    depends on it. ``host_options`` and ``networking`` go to the engine as they are (limits,
    restart policy, networks), for the deploy's containers.
    """
    reachable = client_is_local(client)
    env = {"PORT": str(container_port), **(environment or {})}
    try:
        image_env = _env_list(client.images.get(image).attrs.get("Config", {}).get("Env"))
    except docker.errors.ImageNotFound:
        raise ImageMissing(f"image {image!r} does not exist here; build it first with `inv build`") from None
    stop_timeout = graceful_timeout({**image_env, **env}) + STOP_MARGIN
    if health_interval is None and not reachable:
        health_interval = REMOTE_HEALTH_INTERVAL
    healthcheck = {"interval": int(health_interval * 1e9)} if health_interval else None
    # Named always: interrupted while the engine creates it, we can still find and remove it.
    name = name or f"{re.sub(r'[^a-zA-Z0-9_.-]+', '-', image.rpartition('/')[2])[:40]}-{uuid.uuid4().hex[:8]}"
    try:
        return _create_and_start(
            client, image, container_port=container_port, host_port=host_port, publish=publish, env=env,
            name=name, volumes=volumes, labels=labels, stop_timeout=stop_timeout, healthcheck=healthcheck,
            host_options=host_options, networking=networking, reachable=reachable,
        )  # fmt: skip
    except BaseException:
        remove_named(client, name)
        raise


def _create_and_start(
    client: docker.DockerClient,
    image: str,
    *,
    container_port: int,
    host_port: int | None,
    publish: bool,
    env: Mapping[str, str],
    name: str,
    volumes: Mapping[str, Mapping[str, str]] | None,
    labels: Mapping[str, str] | None,
    stop_timeout: int,
    healthcheck: dict[str, int] | None,
    host_options: Mapping[str, Any] | None,
    networking: Mapping[str, Any] | None,
    reachable: bool,
) -> Running:
    api = client.api
    try:
        # The low-level API: the high-level `containers.run` cannot set the stop timeout.
        created = api.create_container(
            image,
            detach=True,
            environment=dict(env),
            name=name,
            ports=[container_port],  # exposed (inspect shows it); published only with `publish`
            labels={MANAGED_LABEL: image, **(labels or {})},
            stop_timeout=stop_timeout,
            healthcheck=healthcheck,
            networking_config=dict(networking) if networking else None,
            host_config=api.create_host_config(
                # Loopback only: a dev or smoke container is never reachable from the network.
                port_bindings={container_port: ("127.0.0.1", host_port)} if publish else None,
                binds={k: dict(v) for k, v in volumes.items()} if volumes else None,
                init=False,  # gunicorn is a proper PID 1: it reaps workers and handles SIGTERM
                **dict(host_options or {}),
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
    published: int | None = None
    if publish:
        bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{container_port}/tcp") or []
        if not bindings:
            error = exited_error(container, f"{image} exited before its port was published")
            remove(container)
            raise error
        published = int(bindings[0]["HostPort"])
    return Running(
        container=container,
        container_port=container_port,
        host_port=published,
        reachable=reachable,
        started_at=started,
        stop_timeout=stop_timeout,
    )


def stop_timeout_of(container: Container) -> int:
    """The seconds `docker stop` gives ``container`` (its own stop timeout, set by :func:`start`)."""
    return int(container.attrs.get("Config", {}).get("StopTimeout") or GRACEFUL_DEFAULT + STOP_MARGIN)


def remove_named(client: docker.DockerClient, name: str, settle: float = 2.0) -> None:
    """Remove the container called ``name``, made or started. Interrupted while the engine was
    creating it, we may ask before it exists: look again for ``settle`` seconds."""

    def made() -> Container:
        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            raise NotReady(f"no container {name} yet") from None

    try:
        found = poll(made, timeout=settle, interval=0.2, max_interval=0.2)
    except TimedOut:
        return
    remove(found)


@contextmanager
def running(
    client: docker.DockerClient,
    image: str,
    *,
    on_line: LineSink | None = None,
    quick_stop_on_interrupt: bool = False,
    **options: Any,
) -> Iterator[Running]:
    """:func:`start` ``image``; on leaving, however that happens, :func:`shutdown` it (drain, then remove).

    The one lifecycle of the containers the tasks run (`inv run`, `inv dev`, `inv smoke`, the
    template's tests and benchmark): nothing they start is left behind. With
    ``quick_stop_on_interrupt`` (a smoke run: no request worth waiting for), Ctrl-C stops the
    container at once instead of after its graceful timeout.
    """
    container = start(client, image, **options)
    try:
        yield container
    except KeyboardInterrupt:
        if quick_stop_on_interrupt:
            container.stop_timeout = 1
        raise
    finally:
        shutdown(container, on_line=on_line)


# What to change when a release runs out of memory (the deploy's settings; a plain run has the image's).
MORE_MEMORY = "give each release more (RELEASE_MEMORY_MB) or run fewer workers (WEB_CONCURRENCY)"
OUT_OF_MEMORY = f"it ran out of memory: {MORE_MEMORY}"


def out_of_memory(container: Container, output: str) -> bool:
    """Whether the kernel killed the container, or one of its workers, for memory."""
    return bool(container.attrs.get("State", {}).get("OOMKilled")) or any(mark in output for mark in _KILLED)


def exited_error(container: Container, what: str) -> NeverHealthy:
    """The error for a container that stopped at start: the app's first error, once, and a short tail."""
    output = container_logs(container, tail=1000)
    if out_of_memory(container, output):
        return NeverHealthy(f"{what} (container {container.short_id}): {OUT_OF_MEMORY}", detail=logs.short_tail(output))
    code = container.attrs.get("State", {}).get("ExitCode")
    cause = logs.first_error(output)
    where = f"container {container.short_id}" + (f", exit code {code}" if code is not None else "")
    if not cause:
        return NeverHealthy(f"{what} ({where}) and wrote nothing")
    tail = logs.short_tail(output)
    # A one-line log is the cause itself: no tail to repeat it.
    return NeverHealthy(f"the app did not start: {cause} ({where})", detail=tail if "\n" in tail else "")


def health(container: Container) -> tuple[str, str]:
    """The engine's view, freshly read: (``status``, last health-check output).

    ``status`` is the health status (``starting``, ``healthy``, ``unhealthy``), or the
    container's state (``exited``, ``dead``, ...) when it is not running, or ``none`` when the
    image has no HEALTHCHECK.
    """
    container.reload()
    state = container.attrs.get("State", {})
    if state.get("Status") in {"exited", "dead", "removing"}:
        return str(state["Status"]), ""
    checks = state.get("Health") or {}
    results = checks.get("Log") or []
    output = " ".join(str(results[-1].get("Output", "")).split()) if results else ""
    return str(checks.get("Status") or "none"), logs.clean_line(output)[:300]


def wait_healthy(running: Running, *, timeout: float = 30, path: str = "/readyz") -> float:
    """Wait until ``running`` is ready; return the seconds since it started.

    Ready means ``path`` answers 200 where the container is reachable from here, and the
    engine's health status is ``healthy`` where it is not (any engine: ``ssh://``, ``tcp://``).
    Fails at once, with the app's first error and a short log tail, when the container exits or
    the engine finds it unhealthy; and after ``timeout``.
    """
    container = running.container
    http = httpx.Client(timeout=1.0) if running.probe_url else None

    def probe() -> float:
        reason = ""
        if http is not None:
            try:
                http_ok(http, running.probe_url + path)
                return time.perf_counter() - running.started_at
            except NotReady as exc:
                reason = str(exc)
        status, output = health(container)
        if status in {"exited", "dead", "removing"}:
            raise exited_error(container, "the container exited before it was healthy")
        if status == "unhealthy":
            text = container_logs(container, tail=1000)
            said = OUT_OF_MEMORY if out_of_memory(container, text) else f"its health check says {output or 'nothing'}"
            raise NeverHealthy(f"container {container.short_id} turned unhealthy: {said}", detail=logs.short_tail(text))
        if http is None:
            if status == "healthy":
                return time.perf_counter() - running.started_at
            if status == "none":
                raise NeverHealthy(f"{container.short_id}: its image has no HEALTHCHECK, so the engine cannot gate it")
        raise NotReady(reason or f"health: {status}" + (f", {output}" if output else ""))

    try:
        return poll(probe, timeout=timeout, interval=0.02, max_interval=0.25)
    except TimedOut as exc:
        output = container_logs(container, tail=1000)
        cause = logs.first_error(output, fallback=False)
        said = f"; its log says: {cause}" if cause else "; its log shows no error, so it may only need longer to start"
        raise NeverHealthy(
            f"container {container.short_id} was not healthy after {timeout:.0f}s ({exc.reason}){said}",
            detail=logs.short_tail(output),
        ) from None
    finally:
        if http is not None:
            http.close()


# gunicorn's master logs each worker it starts, and a worker the kernel killed (its OOM killer);
# the project's gunicorn.conf.py logs each worker that has loaded the app (post_worker_init).
_BOOTED = "Booting worker with pid"
_READY = "Worker ready (pid"
_KILLED = ("was sent SIGKILL", "Perhaps out of memory")


# A release that uses this share of its memory limit before it has served anything will not
# survive serving: the kernel kills a worker (or the release) as requests allocate more.
SETTLED_MEMORY_SHARE = 0.9


def memory_share(stats: Mapping[str, Any]) -> float | None:
    """Working set (usage less inactive file pages, as ``docker stats`` shows it) over the limit."""
    memory = stats.get("memory_stats") or {}
    usage, limit = memory.get("usage"), memory.get("limit")
    if not usage or not limit:
        return None
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    return float(max(usage - cache, 0) / limit)


def wait_settled(running: Running, *, timeout: float = 30) -> None:
    """After the first health check passes: wait until every gunicorn worker has loaded the app
    (``WEB_CONCURRENCY`` of them, as the container's environment says), and fail if meanwhile a
    worker was killed (out of memory, as gunicorn reports it) or the container restarted or
    stopped. One worker is enough to answer a health check; the others may not fit the release's
    memory limit, and a release that is killed seconds after its gate must never be switched to.

    A server that does not log gunicorn's lines (an image whose command is not serve.py) has
    nothing to count: its health check is the gate."""
    container = running.container
    env = _env_list(container.attrs.get("Config", {}).get("Env"))
    workers = whole_number(env.get("WEB_CONCURRENCY", "1").strip(), 1, 256) or 1  # gunicorn.conf.py's range

    def started() -> None:
        container.reload()
        state = container.attrs.get("State", {})
        restarts = container.attrs.get("RestartCount", 0)
        text = _logs_of_this_run(container, state)
        oom = out_of_memory(container, text)
        if oom or restarts or state.get("Status") != "running":
            why = (
                OUT_OF_MEMORY if oom
                else f"it restarted {restarts} time(s)" if restarts
                else f"it is {state.get('Status')}"
            )  # fmt: skip
            raise NeverHealthy(
                f"container {container.short_id} passed its health check, then, as its {workers} worker(s) "
                f"started, {why}",
                detail=logs.short_tail(text),
            )
        # Loaded, where the project says so (an older gunicorn.conf.py does not: started, then).
        ready = text.count(_READY) or text.count(_BOOTED)
        if 0 < ready < workers:
            raise NotReady(f"{ready} of {workers} workers ready")
        if container.attrs.get("HostConfig", {}).get("Memory"):
            share = memory_share(cast(dict[str, Any], container.stats(stream=False, one_shot=True)))
            if share is not None and share >= SETTLED_MEMORY_SHARE:
                raise NeverHealthy(
                    f"container {container.short_id} uses {share:.0%} of its memory limit with its {workers} "
                    f"worker(s) started, before it serves a request: {MORE_MEMORY}",
                    detail=logs.short_tail(text),
                )

    try:
        poll(started, timeout=timeout, interval=0.05, max_interval=0.25)
    except TimedOut as exc:
        raise NeverHealthy(
            f"container {container.short_id} passed its health check, but not all its workers started in "
            f"{timeout:.0f}s ({exc.reason}): give each release more memory or CPU, or fewer workers (WEB_CONCURRENCY)",
            detail=logs.short_tail(container_logs(container, tail=200)),
        ) from None


def _logs_of_this_run(container: Container, state: Mapping[str, Any]) -> str:
    """What the container wrote since it last started (a kept release started again for a
    rollback still holds its earlier run's lines: its drain's killed workers among them)."""
    stamp = str(state.get("StartedAt", ""))[:19]
    try:
        since = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
        raw: bytes = container.logs(stdout=True, stderr=True, since=since)
    except (ValueError, docker.errors.APIError):
        return container_logs(container, tail=2000)
    return "\n".join(logs.clean_lines(raw.decode("utf-8", "replace"))).rstrip()


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


def remove(container: Container, timeout: float = 60) -> None:
    """Remove ``container`` (killed first if it runs). If the engine is removing it already (another
    caller's, or our own earlier request that the client gave up waiting for), wait until it is gone."""
    try:
        container.remove(force=True, v=True)
        return
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if exc.status_code != 409 or "already in progress" not in str(exc.explanation or ""):
            raise

    def gone() -> None:
        try:
            container.reload()
        except docker.errors.NotFound:
            return
        raise NotReady(f"the engine is still removing {container.name}")

    try:
        poll(gone, timeout=timeout, interval=0.1)
    except TimedOut:
        raise OpsError(f"the engine did not finish removing the container {container.name} in {timeout:.0f}s") from None


def shutdown(running: Running, on_line: LineSink | None = None) -> None:
    """Stop ``running`` the way its image asks (graceful timeout plus a margin), then remove it.

    Removed even when the stop is interrupted (a second Ctrl-C): ``remove`` kills it at once.
    """
    container = running.container
    try:
        if container.status == "running":  # as of the last reload; an exited one needs no stop
            if on_line:
                grace = running.stop_timeout - STOP_MARGIN
                on_line(
                    f"Stopping {container.short_id}: in-flight requests get up to {grace}s (Ctrl-C again: now)"
                    if grace > 0
                    else f"Stopping {container.short_id} now"
                )
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
