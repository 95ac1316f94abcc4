"""``inv run``: the image in a container on this machine's engine (or DOCKER_HOST's), logs followed.

Also what `inv run`, `inv dev` and `inv smoke` share: the server's variables a local container
gets from the settings, and the image made current before it runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import docker

from cnd_toolkit import project as proj
from cnd_toolkit.docker import containers, images
from cnd_toolkit.logs import LineSink
from cnd_toolkit.settings import Settings


@dataclass(frozen=True)
class LocalEnvironment:
    """The server's variables for a local container, and notes worth printing about them."""

    variables: dict[str, str]
    notes: list[str] = field(default_factory=list)


def local_environment(settings: Settings, environ: Mapping[str, str] | None = None) -> LocalEnvironment:
    """The server's variables (APP_*, GUNICORN_*, WEB_CONCURRENCY, ...) from the settings, checked.

    A bad GUNICORN_GRACEFUL_TIMEOUT stops here, before anything is built or started. PORT is
    named as not passed: the container listens on the image's port, published on --port.
    """
    variables = containers.server_environment(settings.runtime_environment())
    containers.graceful_timeout(variables)
    notes = []
    note = containers.port_not_passed(os.environ if environ is None else environ)
    if note:
        notes.append(note)
    if variables:
        sources = sorted({settings.sources.get(name, "environment") for name in variables})
        notes.append(f"Passing {', '.join(variables)} to the container (from {', '.join(sources)})")
    return LocalEnvironment(variables, notes)


def current_image(
    client: docker.DockerClient,
    project: proj.Project,
    tag: str,
    *,
    build: bool,
    base_image: str = "",
    on_line: LineSink | None = None,
    say: LineSink | None = None,
    on_built: Callable[[images.BuildResult], None] | None = None,
) -> str:
    """The image to run for ``tag``, built first when ``build`` and it is missing or stale.

    Only the tags `inv build` makes (``latest``, the version) are rebuilt; another tag runs as it
    is. ``on_built`` gets the build, when there was one.
    """
    image = f"{project.local_image}:{tag}"
    if build and tag in {"latest", project.version}:
        result = images.build_if_stale(client, project, image, base_image=base_image, on_line=on_line, say=say)
        if result is not None and on_built is not None:
            on_built(result)
    return image


def serve(
    client: docker.DockerClient,
    project: proj.Project,
    image: str,
    *,
    host_port: int | None,
    environment: Mapping[str, str],
    on_line: LineSink,
    on_ready: LineSink,
) -> None:
    """Run ``image`` until it stops or a signal (KeyboardInterrupt) arrives; always drain and remove it.

    ``on_ready`` gets the line that says where it serves. A container that stops by itself with
    a non-zero code raises :class:`~cnd_toolkit.errors.OpsError` with its first error.
    """
    with containers.running(
        client,
        image,
        on_line=on_line,
        container_port=project.container_port,
        host_port=host_port,
        environment=environment,
    ) as running:
        try:
            seconds = containers.wait_healthy(running)
            where = running.url if running.reachable else f"{running.url} on the engine's host"
            on_ready(f"Healthy in {seconds:.2f}s: {where}  (Ctrl-C stops it)")
            containers.follow_logs(running.container, on_line)
            containers.raise_if_failed(running.container)  # it stopped by itself: say why
        except KeyboardInterrupt:
            on_line("")
