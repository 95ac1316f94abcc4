"""Tasks you type while working: `inv -l` lists them, `inv --help TASK` explains one.

A thin layer: the logic lives in `ops/` (typed, unit-tested modules).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import docker
from invoke import Collection, Context, Exit, task
from rich.console import Console
from rich.markup import escape

from ops import dev as dev_ops
from ops import docker as engine
from ops import options, source
from ops import project as proj
from ops import smoke as smoke_ops
from ops.edge.server import load_site, serve_in_thread
from ops.errors import EngineUnavailable, Interrupted, OpsError
from ops.netlify import check as check_ops
from ops.netlify.config import NetlifyConfig

# soft_wrap: rich inserts no line breaks of its own. A terminal wraps long lines itself, and
# output redirected to a file or a CI log keeps each line (and each URL) whole.
console = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_line(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


@contextmanager
def _failing_cleanly() -> Iterator[None]:
    """Expected failures end in one clear message (plus their log tail), not a traceback."""
    try:
        yield
    except Interrupted as exc:
        raise Exit(str(exc), code=Interrupted.exit_code) from None
    except OpsError as exc:
        if exc.detail:
            console.rule("[dim]log tail[/]")
            console.print(exc.detail, markup=False, style="dim")
            console.rule()
        raise Exit(f"error: {exc}", code=1) from None


@task(
    help={
        "tag": "image tag besides `latest` (default: the project version)",
        "base_image": "base image for both stages (default: $BASE_IMAGE, else the Dockerfile's)",
        "no_cache": "rebuild every layer (pip runs again, so the image id changes)",
    }
)
def build(c: Context, tag: str = "", base_image: str = "", no_cache: bool = False) -> str:
    """Build the production image, tagged <slug>:<tag> and <slug>:latest; Ctrl-C stops the build.

    The image the tags named before goes when nothing else uses it, so rebuilds leave none behind.
    """
    project = proj.load()
    tags = [f"{project.local_image}:{tag or project.version}", f"{project.local_image}:latest"]
    with _failing_cleanly(), _stopping_on_signals(), _interrupted("Build interrupted; nothing was tagged"):
        client = engine.connect()
        args = proj.build_args(project, base_image)
        console.print(f"[bold]Building[/] {', '.join(tags)} (revision {args['REVISION'][:12]})")
        # What `inv run` compares with the working tree to know whether the image is current.
        labels = {source.SOURCE_LABEL: source.source_digest(project.root), source.BASE_IMAGE_LABEL: base_image}
        result = engine.build_image(
            client, project.root, tags, args, nocache=no_cache, labels=labels, on_line=_print_line
        )
    console.print(f"[green]Built[/] {result.image_id[7:19]} as {', '.join(result.tags)} in {result.seconds:.1f}s")
    if result.replaced:
        count = len(result.replaced)
        console.print(
            f"Removed {count} image{'s' if count > 1 else ''} earlier builds left ({', '.join(result.replaced)}): "
            "nothing used them"
        )
    return tags[0]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _interrupted(message: str) -> Iterator[None]:
    """A signal outside the steps that say more ends in ``message`` and exit code 130, not a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(message) from None


@contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM (a process manager) and SIGHUP (a closed terminal) raise KeyboardInterrupt.

    Installed explicitly: a shell script's `inv run &`, some CI runners and `nohup` start us with
    SIGINT ignored, and Python then installs no Ctrl-C handler of its own, so nothing would stop
    the container. A SIGHUP that arrives ignored stays ignored: that is what `nohup` asks for.
    """
    wanted = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        wanted.append(signal.SIGHUP)
    previous = {signum: signal.signal(signum, _interrupt) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _passed_environment() -> dict[str, str]:
    """The server's variables from this shell, checked; announced, so a stray one is noticed."""
    environment = engine.server_environment(os.environ)
    engine.graceful_timeout(environment)  # a bad value stops here, before anything is built or started
    note = engine.port_not_passed(os.environ)
    if note:
        console.print(f"[yellow]{escape(note)}[/]")
    if environment:
        console.print(f"Passing {', '.join(environment)} from your environment to the container")
    return environment


def _build_if_stale(c: Context, client: docker.DockerClient, project: proj.Project, image: str) -> None:
    """Build ``image`` when it is missing or was built from other source than the working tree's."""
    labels = engine.image_labels(client, image)
    reason = source.stale_reason(image, labels, source.source_digest(project.root))
    if reason:
        console.print(f"[bold]{escape(reason)}[/]: building it first (--no-build skips this)")
        # As it was built last time: a base image given to `inv build --base-image` is kept.
        build(c, base_image=(labels or {}).get(source.BASE_IMAGE_LABEL, ""))


@task(
    help={
        "port": "host port on 127.0.0.1, 1-65535 (default, or 0: a free one)",
        "tag": "image tag to run (default: latest)",
        "no_build": "run the image as it is, even if the source changed since it was built",
    }
)
def run(c: Context, port: str = "0", tag: str = "latest", no_build: bool = False) -> None:
    """Run the image (built first if the source changed), follow its logs; Ctrl-C stops and removes it.

    The server's variables set in your shell (APP_*, GUNICORN_*, WEB_CONCURRENCY, ACCESS_LOG,
    FORWARDED_ALLOW_IPS) are passed to the container. PORT is not: the container listens on the
    image's port, published on --port.
    """
    project = proj.load()
    image = f"{project.local_image}:{tag}"
    with _failing_cleanly(), _stopping_on_signals():
        host_port = options.port(port)
        client = engine.connect()
        environment = _passed_environment()
        if not no_build and tag in {"latest", project.version}:  # the tags `inv build` makes
            _build_if_stale(c, client, project, image)
        running = engine.run_container(
            client, image, container_port=project.container_port, host_port=host_port or None, environment=environment
        )
        try:
            seconds = engine.wait_healthy(running)
            console.print(f"[green]Healthy[/] in {seconds:.2f}s: {running.url}  (Ctrl-C stops it)")
            engine.follow_logs(running.container, _print_line)
            engine.raise_if_failed(running.container)  # it stopped by itself: say why
        except KeyboardInterrupt:
            console.print()
        finally:
            engine.shutdown(running, on_line=_print_line)


@task(
    help={
        "image": "image to test (default: build the current source first)",
        "url": "test a deployed base URL instead of an image (a Netlify draft, production)",
    }
)
def smoke(c: Context, image: str = "", url: str = "") -> None:
    """Run the smoke suite against a fresh container of the image, or against --url."""
    if image and url:
        raise Exit("error: give --image or --url, not both", code=2)
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), _interrupted("Smoke run interrupted"):
        if url:
            smoke_ops.smoke_url(project, url)
            console.print(f"[green]Smoke tests passed[/] against {url}")
            return
        client = engine.connect()
        environment = _passed_environment()
        if not image:
            image = build(c)
        seconds = smoke_ops.smoke_image(project, client, image, environment=environment, on_line=_print_line)
    console.print(f"[green]Smoke tests passed[/] against {image} (healthy after {seconds:.2f}s)")


@task
def clean(c: Context) -> None:
    """Remove the project's images (tagged, left untagged by rebuilds, failed builds) and its containers."""
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), _interrupted("Clean interrupted; run `inv clean` again to finish"):
        client = engine.connect()
        cleaned = engine.clean_project(client, project.slug, on_line=_print_line)
        if cleaned.kept:
            raise OpsError(
                f"left {len(cleaned.kept)} in place; stop what uses them, then run `inv clean` again",
                detail="\n".join(cleaned.kept),
            )
    if not cleaned.containers and not cleaned.images:
        console.print("Nothing to clean.")


@task
def lock(c: Context) -> None:
    """Refresh requirements.lock (hashed, every platform) from pyproject.toml with uv."""
    if shutil.which("uv") is None:
        raise Exit("error: uv is not installed; install it with `pip install uv` and run `inv lock` again", code=1)
    c.run("uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 -o requirements.lock")


def _wait_for_ctrl_c() -> None:
    """Wait for a signal (see `_stopping_on_signals`, which the caller has installed)."""
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        console.print("\nStopping ...")


def _app_line(line: str) -> None:
    console.print(f"[cyan]app [/] | {escape(line)}", soft_wrap=True)


def _edge_line(line: str) -> None:
    console.print(f"[magenta]edge[/] | {escape(line)}", soft_wrap=True)


def _report_site(site: NetlifyConfig) -> None:
    for problem in site.warnings:
        console.print(f"[yellow]{escape(str(problem))}[/]")
    for note in site.unsupported():
        console.print(f"[yellow]note[/] {escape(note)}")


@task(
    help={
        "port": "port of the edge, 1-65535 (default 8888; 0: a free one)",
        "no_docker": "run the app as a local gunicorn process instead of a container",
        "netlify": "front the app with the real `netlify dev` (netlify-cli) instead of the built-in edge",
        "no_build": "use the image as it is, even if the source changed since it was built",
    }
)
def dev(c: Context, port: str = "8888", no_docker: bool = False, netlify: bool = False, no_build: bool = False) -> None:
    """Run the app with hot reload behind a local Netlify edge; Ctrl-C stops everything."""
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), ExitStack() as stack:
        edge_port = options.port(port)
        netlify_cli = dev_ops.require_netlify_cli() if netlify else ""
        load_site(project.root)  # a configuration error stops here, before a container starts
        client = None
        if not no_docker:
            try:
                client = engine.connect(timeout=10)
            except EngineUnavailable as exc:
                console.print(f"[yellow]{exc}[/]\nRunning the app as a local gunicorn process instead.")
        if client is not None:
            environment = _passed_environment()
            image = f"{project.local_image}:latest"
            if not no_build:
                _build_if_stale(c, client, project, image)
            backend = stack.enter_context(dev_ops.container_backend(project, client, image, _app_line, environment))
        else:
            backend = stack.enter_context(dev_ops.process_backend(project, engine.free_port(), _app_line))
        if netlify_cli:
            stack.enter_context(dev_ops.netlify_dev(project, netlify_cli, backend.url, edge_port, _edge_line))
        else:
            site = dev_ops.site_for(project.root, backend.url)
            _report_site(site)
            edge = stack.enter_context(serve_in_thread(site, port=edge_port, on_log=_edge_line))
            console.print(f"[green]Serving[/] {edge.url}  (edge: public/ + rules; /api/* -> {backend.url})")
        console.print("Edit api/ and the app reloads. Ctrl-C stops everything.")
        _wait_for_ctrl_c()
    console.print("Stopped.")


@task(
    help={
        "port": "port of the edge, 1-65535 (default 8888; 0: a free one)",
        "backend": "origin /api/* goes to (default: BACKEND_URL, else the one in netlify.toml)",
    }
)
def edge(c: Context, port: str = "8888", backend: str = "") -> None:
    """Serve public/ with the project's Netlify rules in front of any backend."""
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals():
        edge_port = options.port(port)
        backend = backend or os.environ.get("BACKEND_URL", "")
        try:
            site = dev_ops.site_for(project.root, backend) if backend else load_site(project.root)
        except ValueError as exc:
            raise OpsError(str(exc)) from None
        _report_site(site)
        with serve_in_thread(site, port=edge_port, on_log=_edge_line) as running:
            target = backend or "the rules as written"
            console.print(f"[green]Serving[/] {running.url}  (/api/* -> {target}); Ctrl-C stops it")
            _wait_for_ctrl_c()


@task
def check(c: Context) -> None:
    """Check netlify.toml, _redirects and _headers strictly (typos, bad rules, missing files)."""
    code = check_ops.main([str(proj.ROOT)])
    if code:
        raise Exit(code=code)


ns = Collection(build, run, smoke, clean, lock, dev, edge, check)
