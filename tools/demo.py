"""The main job: render a project with default answers, build it, run it, say where it serves.

``python -m tools.demo`` (``nox -s demo``) serves until Ctrl-C. ``--check`` instead runs the
generated smoke suite against it and exits, non-zero on any failure. Either way the images it
built are removed when it stops (``inv clean``). Without a Docker engine it says so in one line
and runs the same service as a local gunicorn process.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from tools.generated import (
    REPO,
    choose_base_image,
    docker_client,
    free_port,
    project_ops,
    pytest_args,
    render,
    run_in,
    scripts_env,
)

DEFAULT_DIR = REPO / ".cache" / "demo" / "my-service"


def default_base(project: Path) -> str:
    dockerfile = (project / "Dockerfile").read_text()
    return next(line.split("=", 1)[1] for line in dockerfile.splitlines() if line.startswith("ARG BASE_IMAGE="))


def with_docker(project: Path, client: object, check: bool, base: str) -> int:
    """Build, then serve (or smoke-test) the image; the images it built go when it stops."""
    env = {"BASE_IMAGE": base}
    # SIGTERM (nox's, once it has waited DEMO_STOP's interrupt_timeout) stops it as a Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if run_in(project, "invoke", "build", env=env, check=False).returncode != 0:
            return 1
        if check:
            return run_in(project, "invoke", "smoke", "--image", "my-service:latest", env=env, check=False).returncode
        return serve(project, env)
    except KeyboardInterrupt:  # in the build or the smoke run: what either left, `inv clean` removes
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        remove_images(project)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(project: Path, env: dict[str, str]) -> int:
    """`inv run`: it prints the URL once healthy and follows the logs until Ctrl-C.

    In a session of its own, so a Ctrl-C reaches it from here, once per Ctrl-C, as it would from a
    terminal: the first drains and removes the container (waited for, so the images can go after
    it), a second stops it at once.
    """
    child = subprocess.Popen(["invoke", "run"], cwd=project, env=scripts_env(env), start_new_session=True)
    while True:
        try:
            child.wait()
            return 0
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)


def remove_images(project: Path) -> None:
    """`inv clean`: the images the demo built (the image, the builder stage's, a failed build's
    steps: the project's labels with this checkout's) and any container of its runs. The base
    image stays: the build pulled it, or it was there."""
    print("demo: removing the images it built (inv clean)", flush=True)
    done = run_in(project, "invoke", "clean", check=False)
    if done.returncode != 0:
        print(f"demo: inv clean failed (exit code {done.returncode}); run it in {project}", file=sys.stderr)


def with_gunicorn(project: Path, check: bool) -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PORT": str(port), "APP_VERSION": "0.1.0", "APP_REVISION": "local"}
    server = subprocess.Popen([sys.executable, "serve.py"], cwd=project, env=env)
    project_ops(project)
    from cnd_toolkit.wait import TimedOut, wait_http

    def exited() -> None:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode} before it answered")

    try:
        # A generous deadline (a busy machine starts it slowly); a server that exits ends the wait at once.
        seconds = wait_http(f"{url}/readyz", timeout=120, check=exited)
        print(f"demo: serving at {url} (healthy after {seconds:.2f}s; try {url}/api/greeting)", flush=True)
        if check:
            # A process, not a container: the suite's container checks have nothing to inspect.
            suite_env = {k: v for k, v in os.environ.items() if k != "SMOKE_CONTAINER"} | {"SMOKE_URL_ONLY": "1"}
            command = [*pytest_args(["tests/smoke"]), "--base-url", url]
            return subprocess.run(command, cwd=project, env=suite_env).returncode
        print("demo: Ctrl-C stops it", flush=True)
        server.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimedOut) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="run the smoke suite against it and exit")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"where to render (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)

    project = render(args.dir)
    print(f"demo: rendered {project} with default answers", flush=True)
    client = docker_client()
    if client is not None:
        base, why = choose_base_image(client, default_base(project))
        print(f"demo: base image {base} ({why})", flush=True)
        if base != default_base(project):  # the project's Python follows the image's, as Copier asks
            project = render(args.dir, {"base_image": base})
            print(f"demo: rendered again with base_image={base}, for its Python", flush=True)
        return with_docker(project, client, args.check, base)
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    print(f"demo: no Docker engine answers at {host}; running the service as a local gunicorn process instead")
    return with_gunicorn(project, args.check)


if __name__ == "__main__":
    sys.exit(main())
