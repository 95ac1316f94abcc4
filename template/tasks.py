"""Tasks you type while working: `inv -l` lists them, `inv --help TASK` explains one.

A thin layer: the logic lives in `ops/` (typed, unit-tested modules).
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from invoke import Collection, Context, Exit, task
from rich.console import Console

from ops import docker as engine
from ops import project as proj
from ops import smoke as smoke_ops
from ops.errors import OpsError

console = Console(stderr=True, highlight=False)


def _print_line(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


@contextmanager
def _failing_cleanly() -> Iterator[None]:
    """Expected failures end in one clear message (plus their log tail), not a traceback."""
    try:
        yield
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
        "no_cache": "rebuild every layer",
    }
)
def build(c: Context, tag: str = "", base_image: str = "", no_cache: bool = False) -> str:
    """Build the production image, tagged <slug>:<tag> and <slug>:latest."""
    project = proj.load()
    tags = [f"{project.local_image}:{tag or project.version}", f"{project.local_image}:latest"]
    with _failing_cleanly():
        client = engine.connect()
        args = proj.build_args(project, base_image)
        console.print(f"[bold]Building[/] {', '.join(tags)} (revision {args['REVISION'][:12]})")
        result = engine.build_image(client, project.root, tags, args, nocache=no_cache, on_line=_print_line)
    console.print(f"[green]Built[/] {result.image_id[7:19]} as {', '.join(result.tags)} in {result.seconds:.1f}s")
    return tags[0]


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (from a process manager) stops a foreground container as Ctrl-C does."""
    raise KeyboardInterrupt


@task(
    help={
        "port": "host port on 127.0.0.1 (default: a free one)",
        "tag": "image tag to run (default: latest)",
    }
)
def run(c: Context, port: int = 0, tag: str = "latest") -> None:
    """Run the image, wait until healthy, follow its logs; Ctrl-C stops and removes it."""
    project = proj.load()
    image = f"{project.local_image}:{tag}"
    with _failing_cleanly():
        client = engine.connect()
        running = engine.run_container(client, image, container_port=project.container_port, host_port=port or None)
        try:
            seconds = engine.wait_healthy(running)
            console.print(f"[green]Healthy[/] in {seconds:.2f}s: {running.url}  (Ctrl-C stops it)")
            signal.signal(signal.SIGTERM, _interrupt)
            engine.follow_logs(running.container, _print_line)
        except KeyboardInterrupt:
            console.print("\nStopping ...")
        finally:
            engine.stop(running.container, timeout=project.graceful_timeout + 5)
            engine.remove(running.container)
            console.print("Stopped and removed the container.")


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
    with _failing_cleanly():
        if url:
            smoke_ops.smoke_url(project, url)
            console.print(f"[green]Smoke tests passed[/] against {url}")
            return
        client = engine.connect()
    if not image:
        image = build(c)
    with _failing_cleanly():
        seconds = smoke_ops.smoke_image(project, client, image)
    console.print(f"[green]Smoke tests passed[/] against {image} (healthy after {seconds:.2f}s)")


@task
def clean(c: Context) -> None:
    """Remove containers this tooling started and the project's local images."""
    project = proj.load()
    with _failing_cleanly():
        client = engine.connect()
        for container in engine.managed_containers(client, project.local_image):
            engine.remove(container)
            console.print(f"removed container {container.short_id}")
        for image in client.images.list(name=project.local_image):
            for tag in image.tags:
                client.images.remove(tag, noprune=False)
                console.print(f"removed image {tag}")


@task
def lock(c: Context) -> None:
    """Refresh requirements.lock (hashed, every platform) from pyproject.toml with uv."""
    if shutil.which("uv") is None:
        raise Exit("error: uv is not installed; install it with `pip install uv` and run `inv lock` again", code=1)
    c.run("uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 -o requirements.lock")


ns = Collection(build, run, smoke, clean, lock)
