"""``inv dev``: the app (container or local gunicorn) with hot reload, behind the local edge.

The edge gets the project's own rules, with the API proxy rule rendered for the local backend
by the same step Netlify's build runs (cnd_toolkit.netlify.redirects), so ``/api/*`` reaches the local app
exactly as production reaches BACKEND_URL.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker

from cnd_toolkit import logs
from cnd_toolkit.docker import containers, engine
from cnd_toolkit.docker.images import BuildResult
from cnd_toolkit.edge.server import load_site
from cnd_toolkit.errors import EngineUnavailable, NeverHealthy, OpsError
from cnd_toolkit.logs import LineSink
from cnd_toolkit.netlify import redirects
from cnd_toolkit.netlify.config import NetlifyConfig, publish_dir
from cnd_toolkit.project import Project
from cnd_toolkit.settings import Settings, child_environment
from cnd_toolkit.wait import TimedOut, wait_http

DEV_ENV = {
    "GUNICORN_RELOAD": "1",
    "WEB_CONCURRENCY": "1",
    "APP_LOG_FLUSH_MS": "0",  # see each request's line as it happens
    "APP_VERSION": "dev",
}


def site_for(project_root: Path, backend_url: str) -> NetlifyConfig:
    """The project's rules, with the generated API rule pointing at ``backend_url``.

    Raises ConfigError when the configuration has an error (see ``load_site``).
    """
    backend = redirects.check_backend_url(backend_url, allow_local=True, name="--backend")
    return load_site(project_root, redirects.api_rule(backend))  # in the generated block's place


class _HeldOutput:
    """A child's lines, held until it is healthy: a start that fails shows its first error once
    (and a short tail), not every worker's traceback. Then passed on as they come."""

    def __init__(self, on_line: LineSink) -> None:
        self._on_line = on_line
        self._held: list[str] = []
        self._live = False
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            if self._live:
                self._on_line(line)
            elif len(self._held) < 5000:
                self._held.append(line)

    def release(self) -> None:
        with self._lock:
            for line in self._held:
                self._on_line(line)
            self._held.clear()
            self._live = True

    def text(self) -> str:
        with self._lock:
            return "\n".join(self._held)


def _follow_output(proc: subprocess.Popen[str], on_line: LineSink, name: str) -> threading.Thread:
    """Send a child's output to ``on_line``, line by line and cleaned, from a daemon thread."""

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(logs.clean_line(line.rstrip("\r\n")))  # no escape codes from a child reach the terminal

    thread = threading.Thread(target=pump, name=name, daemon=True)
    thread.start()
    return thread


@dataclass
class Backend:
    url: str


@contextmanager
def container_backend(
    project: Project,
    client: docker.DockerClient,
    image: str,
    on_line: LineSink,
    environment: Mapping[str, str] | None = None,
) -> Iterator[Backend]:
    """The image with api/ mounted read-only and gunicorn reloading on changes.

    ``environment`` (the server's variables from the shell) applies under the development settings.
    """
    if not engine.client_is_local(client):
        raise OpsError(
            "inv dev mounts api/ into the container, so it needs a Docker engine on this machine, "
            "and DOCKER_HOST names another one; unset it for inv dev, or use --no-docker"
        )
    with containers.running(
        client,
        image,
        on_line=on_line,
        container_port=project.container_port,
        environment={**(environment or {}), **DEV_ENV},
        volumes={str(project.root / "api"): {"bind": "/app/api", "mode": "ro"}},
    ) as running:
        containers.wait_healthy(running)
        follower = threading.Thread(
            target=containers.follow_logs, args=(running.container, on_line), name="app-logs", daemon=True
        )
        follower.start()
        yield Backend(running.url)


@contextmanager
def process_backend(
    project: Project, port: int, on_line: LineSink, environment: Mapping[str, str] | None = None
) -> Iterator[Backend]:
    """``python serve.py`` as a local process, reloading on changes (for machines without Docker)."""
    env = {**child_environment(), **(environment or {}), **DEV_ENV, "PORT": str(port)}
    stop_timeout = containers.graceful_timeout(env) + containers.STOP_MARGIN  # a bad value stops here
    proc = subprocess.Popen(
        # On loopback only: gunicorn.conf.py binds every interface, for the container.
        [sys.executable, "serve.py", "--bind", f"127.0.0.1:{port}"],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    output = _HeldOutput(on_line)
    pump = _follow_output(proc, output, "app-logs")
    url = f"http://127.0.0.1:{port}"

    def exited() -> None:
        if proc.poll() is None:
            return
        pump.join(timeout=5)  # the rest of its output
        where = f"gunicorn exited with code {proc.returncode}"
        cause = logs.first_error(output.text(), app_root=str(project.root))
        if not cause:
            raise NeverHealthy(f"{where} before it was healthy and wrote nothing")
        raise NeverHealthy(f"the app did not start: {cause} ({where})", detail=logs.short_tail(output.text()))

    try:
        try:
            wait_http(url + "/readyz", timeout=30, check=exited)
        except TimedOut as exc:
            message = f"gunicorn was not healthy after 30s ({exc.reason})"
            raise NeverHealthy(message, detail=logs.short_tail(output.text())) from None
        output.release()
        yield Backend(url)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def app_backend(
    project: Project,
    settings: Settings,
    *,
    docker: bool = True,
    build: bool = True,
    on_line: LineSink,
    on_build_line: LineSink | None = None,
    on_built: Callable[[BuildResult], None] | None = None,
    say: LineSink,
) -> Iterator[Backend]:
    """The app for ``inv dev``: the image in a container with api/ mounted, or, with no engine
    (or ``docker=False``), a local gunicorn process. ``say`` gets what is worth a line."""
    from cnd_toolkit.run import current_image, local_environment

    client = None
    if docker:
        try:
            client = engine.connect(settings["DOCKER_HOST"], timeout=10)
        except EngineUnavailable as exc:
            say(f"{exc}\nRunning the app as a local gunicorn process instead.")
    environment = local_environment(settings)
    for note in environment.notes:
        say(note)
    if client is None:
        with process_backend(project, containers.free_port(), on_line, environment.variables) as backend:
            yield backend
        return
    image = current_image(
        client, project, "latest", build=build, base_image=settings["BASE_IMAGE"], on_line=on_build_line, say=say,
        on_built=on_built,
    )  # fmt: skip
    with container_backend(project, client, image, on_line, environment.variables) as backend:
        yield backend


def require_netlify_cli() -> str:
    import shutil

    found = shutil.which("netlify")
    if found is None:
        raise OpsError(
            "netlify-cli is not installed; install it with `npm install -g netlify-cli` "
            "(or use the built-in edge: `inv dev` without --netlify)"
        )
    return found


def netlify_dev_command(cli: str, publish: Path, port: int) -> list[str]:
    """``netlify dev`` serving ``publish`` as a static site, offline (no login, no Deno download)."""
    return [
        cli, "dev", "--offline", "--internal-disable-edge-functions",
        "--framework", "#static", "--dir", str(publish), "--port", str(port),
    ]  # fmt: skip


@contextmanager
def netlify_dev(project: Project, cli: str, backend_url: str, port: int, on_line: LineSink) -> Iterator[None]:
    """The real ``netlify dev`` (static framework, offline) in front of the local backend.

    netlify-cli reads ``_redirects`` from disk, so the generated API rule is rewritten for the
    local backend while it runs and restored afterwards.
    """
    publish = publish_dir(project.root)
    path = publish / "_redirects"
    original = path.read_text() if path.is_file() else None
    try:
        local = redirects.render(original or "", redirects.check_backend_url(backend_url, allow_local=True))
    except redirects.BackendUrlError as exc:  # a broken generated block: say where, change nothing
        raise OpsError(str(exc)) from None
    path.write_text(local)
    command = netlify_dev_command(cli, publish, port)
    proc = subprocess.Popen(
        command, cwd=project.root, env=child_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    _follow_output(proc, on_line, "netlify-dev")
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if original is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(original)
