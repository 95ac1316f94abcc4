"""Smoke tests: run ``tests/smoke`` against an image (started here) or a deployed URL."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import docker

from ops.docker import containers
from ops.docker.engine import client_is_local
from ops.docker.forward import forward
from ops.errors import SmokeFailed
from ops.logs import LineSink
from ops.project import Project
from ops.settings import child_environment

# The smoke run uses a port other than the image's default, to prove the image honours $PORT.
PORT_OFFSET = 1


def run_suite(
    project: Project, base_url: str, container_id: str = "", extra: Sequence[str] = (), docker_host: str = ""
) -> int:
    """Run pytest over tests/smoke against ``base_url``; return pytest's exit code.

    ``container_id`` (and the ``docker_host`` it runs on) lets the suite's container checks look
    at the container through the same engine; without one the suite is told it tests a URL
    (``SMOKE_URL_ONLY``), with no container to inspect, and skips those checks. The suite gets
    this process's environment without the deploy's secrets
    (:func:`~ops.settings.child_environment`): it judges what any visitor sees, ``/metrics``
    refusing one without the token among it.
    """
    env = {**child_environment(), "SMOKE_BASE_URL": base_url}
    env.pop("SMOKE_CONTAINER", None)
    env.pop("SMOKE_URL_ONLY", None)
    if container_id:
        env["SMOKE_CONTAINER"] = container_id
        if docker_host:
            env["DOCKER_HOST"] = docker_host
    else:
        env["SMOKE_URL_ONLY"] = "1"
    suite = str(Path(project.root, "tests", "smoke"))
    command = [sys.executable, "-m", "pytest", suite, "-p", "no:cacheprovider", *extra]
    # A session of its own: a terminal's Ctrl-C reaches this process, which stops the suite (and
    # the container) without pytest's own KeyboardInterrupt report in the middle of the task's output.
    return subprocess.run(command, cwd=project.root, env=env, check=False, start_new_session=True).returncode


def smoke_url(project: Project, url: str, extra: Sequence[str] = ()) -> None:
    if run_suite(project, url.rstrip("/"), extra=extra) != 0:
        raise SmokeFailed(f"smoke tests failed against {url}")


def smoke_image(
    project: Project,
    client: docker.DockerClient,
    image: str,
    *,
    health_timeout: float = 30,
    extra: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    on_line: LineSink | None = None,
    docker_host: str = "",
) -> float:
    """Start ``image``, wait for health, run the suite, always remove the container.

    On an engine on this machine the container is published on a free loopback port; on a remote
    one (``docker_host``: tcp://, ssh://) nothing is published and the suite reaches the
    container through the Docker API (:mod:`ops.docker.forward`). Returns the seconds from start
    to healthy. On failure the container's logs are attached to the error.
    """
    port = project.container_port + PORT_OFFSET
    with containers.running(
        client,
        image,
        on_line=on_line,
        container_port=port,
        environment=environment,
        publish=client_is_local(client),
        host_options=containers.HARDENED,  # as the deploy runs it
        quick_stop_on_interrupt=True,
    ) as running:
        healthy_after = containers.wait_healthy(running, timeout=health_timeout)
        with contextlib.ExitStack() as stack:
            if running.reachable:
                url, relayed = running.url, None
            else:
                relayed = stack.enter_context(forward(client, running.container, port))
                url = relayed.url
            code = run_suite(project, url, running.container.id or "", extra, docker_host=docker_host)
        if code != 0:
            relay = f"\nrelay: {relayed.problems()}" if relayed is not None and relayed.errors else ""
            raise SmokeFailed(
                f"smoke tests failed against {image} (pytest exit code {code})",
                detail=containers.container_logs(running.container) + relay,
            )
        return healthy_after


def smoke_site(project: Project, url: str, *, revision: str = "", timeout: float = 30, api: bool = True) -> None:
    """Check a deployed site (a Netlify draft, production) as a visitor: the page loads, and the
    API answers through the site's /api/* proxy rule (with ``revision``, when it is given).
    ``api=False`` (the backend is in maintenance, answering 503) checks the page only."""
    import time

    import httpx

    from ops.wait import NotReady, TimedOut, poll

    base = url.rstrip("/")
    with httpx.Client(timeout=10, follow_redirects=True) as http:

        def probe() -> None:
            try:
                page = http.get(base + "/")
                version = http.get(base + "/api/version")
            except httpx.HTTPError as exc:
                raise NotReady(type(exc).__name__) from None
            if page.status_code != 200 or "html" not in page.headers.get("content-type", ""):
                raise NotReady(f"/ answered {page.status_code} {page.headers.get('content-type', '')}")
            if not api:
                return
            try:
                body = version.json()
            except ValueError:
                raise NotReady(
                    f"/api/version answered {version.status_code} without JSON (is the proxy rule there?)"
                ) from None
            if version.status_code != 200:
                raise NotReady(f"/api/version answered {version.status_code}")
            if revision and body.get("revision") != revision:
                raise NotReady(f"/api/version names revision {body.get('revision')!r}, not {revision[:12]}")

        started = time.monotonic()
        try:
            poll(probe, timeout=timeout, interval=0.2, max_interval=1)
        except TimedOut as exc:
            raise SmokeFailed(
                f"smoke test of {base} failed after {time.monotonic() - started:.0f}s: {exc.reason}"
            ) from None
