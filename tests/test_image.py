"""The generated image, built and run on a real Docker engine through the generated `inv` tasks."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from tests.helpers import (
    PROJECT_LABEL,
    as_a_terminal_starts_it,
    project_images,
    remove_project,
    scan_layers,
    unavailable,
)
from tools.generated import free_port, render, run_in

pytestmark = pytest.mark.docker


def in_image(engine: Any, image: str, *command: str) -> str:
    output: bytes = engine.containers.run(image, list(command), remove=True, user="10001")
    return output.decode()


def test_build_streams_progress_and_tags(built: dict[str, Any], engine: Any) -> None:
    assert "Step 1/" in built["output"]
    assert "Built " in built["output"]
    tags = engine.images.get(built["image"]).tags
    assert f"{built['slug']}:latest" in tags and f"{built['slug']}:0.1.0" in tags


def test_oci_labels_carry_the_git_revision(built: dict[str, Any], engine: Any) -> None:
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=built["project"], capture_output=True, text=True, check=True
    ).stdout.strip()
    labels = engine.images.get(built["image"]).labels
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.title"] == built["slug"]
    committed = subprocess.run(
        ["git", "log", "-1", "--format=%ct"], cwd=built["project"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # The commit's time, not the clock's: what makes a rebuild with no change the same image.
    created = dt.datetime.fromtimestamp(int(committed), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert labels["org.opencontainers.image.created"] == created
    assert labels[PROJECT_LABEL] == built["slug"]
    assert labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.source"].startswith("https://github.com/")


def test_runtime_image_is_non_root_and_lean(built: dict[str, Any], engine: Any) -> None:
    config = engine.images.get(built["image"]).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["python", "/app/serve.py"]
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-I", "-S", "/app/healthcheck.py"]
    assert config["StopSignal"] == "SIGTERM"
    listing = in_image(
        engine,
        built["image"],
        "python",
        "-c",
        "import os, json; print(json.dumps({'app': sorted(os.listdir('/app')), "
        "'site': sorted(os.listdir(next(p for p in __import__('sys').path if p.endswith('site-packages'))))}))",
    )
    found = json.loads(listing)
    assert found["app"] == ["api", "gunicorn.conf.py", "healthcheck.py", "serve.py"]
    site = " ".join(found["site"])
    assert "flask" in site and "gunicorn" in site
    for unwanted in ("pip", "setuptools", "wheel", "pytest"):
        assert not any(name == unwanted or name.startswith(f"{unwanted}-") for name in found["site"]), unwanted
    # No secrets, tests or build tools reached the image.
    assert (
        in_image(engine, built["image"], "sh", "-c", "ls -a /app /venv/bin; test ! -e /app/.env && echo none")
        .strip()
        .endswith("none")
    )
    assert "never-in-the-image" not in json.dumps(engine.images.get(built["image"]).attrs)
    assert (
        in_image(engine, built["image"], "sh", "-c", "command -v gcc cc || echo no-compiler").strip() == "no-compiler"
    )


# Which Python can install packages: a script that names each one (and each pip on PATH).
PIP_PROBE = (
    "for py in python python3 /usr/bin/python3 /usr/local/bin/python3 /venv/bin/python; do "
    'command -v "$py" >/dev/null || continue; '
    '"$py" -m pip --version >/dev/null 2>&1 && echo "pip: $py"; '
    '"$py" -m ensurepip --version >/dev/null 2>&1 && echo "ensurepip: $py"; '
    "done; for name in pip pip3 pip3.11 pip3.12 pip3.13 easy_install; do command -v $name; done; echo probed"
)


def test_no_pip_in_the_runtime_image(built: dict[str, Any], engine: Any, base_image: str) -> None:
    # The probe finds the base image's pip (it would be wrong if it could not).
    in_base = engine.containers.run(base_image, ["sh", "-c", PIP_PROBE], remove=True).decode()
    assert "pip: /usr/bin/python3" in in_base and "/usr/bin/pip" in in_base, in_base
    assert in_image(engine, built["image"], "sh", "-c", PIP_PROBE).split() == ["probed"]


def runtime_setup_step(dockerfile: str) -> str:
    """The runtime stage's first RUN instruction (the app user, then the installers go), continuations included."""
    lines = dockerfile.split(" AS runtime", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("RUN "))
    end = next(i for i in range(start, len(lines)) if not lines[i].rstrip().endswith("\\"))
    return "\n".join(lines[start : end + 1])


# A base with pip under /usr/local, as the official python images have it (their python lives
# there too; this Debian python reads /usr/local/lib/python3.11/dist-packages first).
USR_LOCAL_PIP = r"""RUN set -eu; site=/usr/local/lib/python3.11/dist-packages; mkdir -p "$site"; \
    mv /usr/lib/python3/dist-packages/pip /usr/lib/python3/dist-packages/pip-*.dist-info "$site"/; \
    rm -f /usr/bin/pip /usr/bin/pip3; \
    printf '#!/usr/bin/python3\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n' \
        > /usr/local/bin/pip3.11; \
    chmod 755 /usr/local/bin/pip3.11; ln -s pip3.11 /usr/local/bin/pip3; ln -s pip3.11 /usr/local/bin/pip
"""


@pytest.mark.parametrize("layout", ["debian", "usr-local", "trixie"])
def test_the_runtime_stage_removes_pip_from_either_kind_of_base(
    project: Path, engine: Any, base_image: str, layout: str
) -> None:
    tag = f"cnd-pip-{uuid.uuid4().hex[:8]}"
    base = {"debian": base_image, "usr-local": f"{tag}:base", "trixie": "local/python:3.13-trixie"}[layout]
    try:
        if layout == "trixie" and not engine.images.list(name=base):
            unavailable(f"base image {base} is missing; build it with `nox -s images`")
        if layout == "usr-local":
            engine.images.build(
                fileobj=io.BytesIO(f"FROM {base_image}\n{USR_LOCAL_PIP}".encode()), tag=base, rm=True, forcerm=True
            )
        before = engine.containers.run(base, ["sh", "-c", PIP_PROBE + "; python3 -m pip --version"], remove=True)
        assert "pip: python3" in before.decode(), before.decode()
        if layout == "usr-local":
            assert "/usr/local/lib/python3.11/dist-packages/pip" in before.decode()
            assert "/usr/local/bin/pip" in before.decode()
        step = runtime_setup_step((project / "Dockerfile").read_text())
        engine.images.build(
            fileobj=io.BytesIO(f"FROM {base}\n{step}\n".encode()), tag=f"{tag}:after", rm=True, forcerm=True
        )
        after = engine.containers.run(f"{tag}:after", ["sh", "-c", PIP_PROBE], remove=True).decode()
        assert after.split() == ["probed"], after
    finally:
        for name in (f"{tag}:after", f"{tag}:base"):
            with contextlib.suppress(Exception):
                engine.images.remove(name, force=True)


def test_the_app_user_is_made_without_warnings(built: dict[str, Any], engine: Any) -> None:
    step = built["output"].split("groupadd", 1)[1].split("\nStep ", 1)[0]
    assert "Running in" in step, "the step ran in this build (a new slug misses the cache), so its output is here"
    assert "warning" not in step.lower(), step
    passwd = engine.containers.run(built["image"], ["getent", "passwd", "app"], remove=True).decode().strip()
    assert passwd == "app:x:10001:10001::/nonexistent:/usr/sbin/nologin"
    shadow = engine.containers.run(built["image"], ["getent", "shadow", "app"], remove=True, user="0").decode()
    assert shadow.split(":")[1] in {"!", "*", "!*"}, "no password: nobody logs in as app"


def test_a_rebuild_without_change_gives_the_same_image(built: dict[str, Any], engine: Any) -> None:
    project, slug = built["project"], built["slug"]
    run_in(project, "invoke", "build", capture=True)
    image_id = engine.images.get(built["image"]).id
    images = {i.id for i in project_images(engine, slug, all_images=False)}
    result = run_in(project, "invoke", "build", capture=True)
    output = result.stdout + result.stderr
    assert engine.images.get(built["image"]).id == image_id, output
    assert {i.id for i in project_images(engine, slug, all_images=False)} == images, "no image was left untagged"
    # Every step came from the cache: none ran a container (what made it quick, said without a clock).
    assert "Using cache" in output and "Running in" not in output, output


def test_code_only_change_rebuilds_from_cache(built: dict[str, Any]) -> None:
    project = built["project"]
    routes = project / "api" / "routes.py"
    routes.write_text(routes.read_text() + "# a one-line change\n")
    result = run_in(project, "invoke", "build", capture=True)
    output = result.stdout + result.stderr
    lock_step = output.split("COPY requirements.lock", 1)[1].split("Step ", 2)
    assert "Using cache" in lock_step[1], "the dependency layer must come from cache"
    assert "Using cache" not in output.split("COPY api/", 1)[1].split("Step ", 1)[0]


def test_smoke_passes_against_the_image(built: dict[str, Any], engine: Any) -> None:
    result = run_in(built["project"], "invoke", "smoke", "--image", built["image"], capture=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "12 passed" in output
    assert "Smoke tests passed" in output
    assert not engine.containers.list(all=True, filters={"ancestor": built["image"]})


def wait_healthy(container: Any, timeout: float = 120) -> None:
    """Until the engine reports the container healthy (its HEALTHCHECK passed); fails if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        state = container.attrs["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return
        assert state["Status"] != "exited", container.logs().decode()[-2000:]
        assert time.monotonic() < deadline, f"not healthy within {timeout:.0f} s: {state}"
        time.sleep(0.25)


def test_smoke_against_a_url(built: dict[str, Any], engine: Any) -> None:
    container = engine.containers.run(built["image"], detach=True, ports={"8080/tcp": ("127.0.0.1", None)})
    try:
        wait_healthy(container)  # serving: the smoke tests run once, against a ready service
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        result = run_in(
            built["project"], "invoke", "smoke", "--url", f"http://127.0.0.1:{port}", capture=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        # A URL run (the runner sets SMOKE_URL_ONLY): the container checks skip by design, the URL checks ran.
        assert "skipped" in result.stdout and "no container to inspect" in result.stdout, result.stdout
    finally:
        container.remove(force=True)


SLOW_APP = """\
print("shim: the app's import is slow", flush=True)
import time
time.sleep(120)
"""
SERVE_WITH_SHIM = (
    "import runpy, sys; sys.path.insert(0, '/shim'); sys.argv = ['/app/serve.py']; "
    "runpy.run_path('/app/serve.py', run_name='__main__')"
)


def test_a_container_stopped_while_it_starts_stops_at_once(built: dict[str, Any], engine: Any, tmp_path: Path) -> None:
    """serve.py is PID 1 before gunicorn is, and the kernel drops a signal PID 1 has no handler for:
    a `docker stop` during its checks must end it (exit 143), not wait out the timeout for SIGKILL (137).
    The app's import is made slow by an `api` package ahead of the real one on sys.path."""
    shim = tmp_path / "shim" / "api"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(SLOW_APP)
    shim.parent.chmod(0o755)
    shim.chmod(0o755)
    (shim / "__init__.py").chmod(0o644)
    container = engine.containers.run(
        built["image"],
        # serve.py as PID 1, as the image's CMD runs it, with /shim first on sys.path.
        ["python", "-c", SERVE_WITH_SHIM],
        detach=True,
        volumes={str(shim.parent): {"bind": "/shim", "mode": "ro"}},
        labels={PROJECT_LABEL: built["slug"]},
    )
    try:
        deadline = time.monotonic() + 60
        while b"shim: the app's import is slow" not in container.logs():
            container.reload()
            assert container.status == "running" and time.monotonic() < deadline, container.logs().decode()
            time.sleep(0.1)
        container.stop(timeout=30)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 143, container.logs().decode()
    finally:
        container.remove(force=True)


def test_container_that_never_turns_healthy_is_reported_and_removed(built: dict[str, Any], engine: Any) -> None:
    # An invalid WEB_CONCURRENCY baked into a derived image: gunicorn refuses to start.
    broken = f"{built['slug']}:broken"
    try:
        engine.images.build(
            fileobj=io.BytesIO(f"FROM {built['image']}\nENV WEB_CONCURRENCY=lots\n".encode()),
            tag=broken,
            rm=True,
            forcerm=True,
        )
        result = run_in(built["project"], "invoke", "smoke", "--image", broken, capture=True, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 1
        assert "did not start" in output and "exit code 2" in output
        assert "WEB_CONCURRENCY='lots' is not a whole number" in output  # the container's logs are shown
        assert "Traceback" not in output
        assert not engine.containers.list(all=True, filters={"ancestor": broken})
    finally:
        for container in engine.containers.list(all=True, filters={"ancestor": broken}):
            container.remove(force=True)
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.images.remove(broken, force=True)


def test_a_failed_smoke_run_ends_with_the_failed_test_after_the_log_tail(built: dict[str, Any], engine: Any) -> None:
    """What `inv smoke` prints last is what failed: the container's log tail comes before the
    failed tests and their assertion lines, not after them."""
    # Bodies up to 8 MiB: the suite's 2 MiB body gets a 400 (not JSON), not the 413 it expects.
    lenient = f"{built['slug']}:lenient"
    try:
        engine.images.build(
            fileobj=io.BytesIO(f"FROM {built['image']}\nENV APP_MAX_REQUEST_BYTES=8388608\n".encode()),
            tag=lenient,
            rm=True,
            forcerm=True,
        )
        result = run_in(built["project"], "invoke", "smoke", "--image", lenient, capture=True, check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-2].startswith(f"error: smoke tests failed against {lenient}: 1 of 12 "), result.stderr
        assert lines[-1].startswith("  test_errors_are_json at tests/smoke/test_smoke.py:"), result.stderr
        assert lines[-1].endswith(": assert too_big.status_code == 413 (assert 400 == 413)"), result.stderr
        assert any("log tail" in line for line in lines[:-2]), result.stderr  # the container's logs, before
        assert "Traceback" not in result.stderr
        assert not engine.containers.list(all=True, filters={"ancestor": lenient})
    finally:
        for container in engine.containers.list(all=True, filters={"ancestor": lenient}):
            container.remove(force=True)
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.images.remove(lenient, force=True)


def test_failed_build_shows_the_log_tail(tmp_path: Path, base_image: str, engine: Any) -> None:
    slug = f"cnd-broken-build-{uuid.uuid4().hex[:6]}"  # its own: another run may share the engine
    project = render(tmp_path / "broken-build", {"project_slug": slug, "base_image": base_image})
    lock = project / "requirements.lock"
    # Another release under the same hashes: pip refuses it, as it would a tampered package.
    text = lock.read_text()
    pinned = next(line.split()[0] for line in text.splitlines() if line.startswith("flask=="))
    lock.write_text(text.replace(pinned, "flask==3.0.0"))
    try:
        result = run_in(project, "invoke", "build", capture=True, check=False)
    finally:
        remove_project(engine, slug)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "error: docker build failed" in output
    assert "log tail" in output
    assert "HASH" in output.upper()
    assert "Traceback" not in output


def test_no_engine_says_how_to_start_one(project: Path) -> None:
    result = run_in(
        project, "invoke", "build", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, capture=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "No Docker engine answers at unix:///nonexistent/docker.sock" in output
    assert "dockerd" in output and "DOCKER_HOST" in output
    assert "Traceback" not in output


def test_inv_run_serves_until_ctrl_c_then_removes_the_container(built: dict[str, Any], engine: Any) -> None:
    port = free_port()
    proc = subprocess.Popen(
        ["invoke", "run", "--port", str(port)],
        cwd=built["project"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        preexec_fn=as_a_terminal_starts_it,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/greeting", timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "inv run did not serve:\n" + "".join(lines)
            time.sleep(0.1)
        # The request's JSON line reaches inv's output through the followed logs: wait for it there.
        while not any('"path": "/api/greeting"' in line for line in list(lines)):
            assert proc.poll() is None and time.monotonic() < deadline, "no request line:\n" + "".join(lines)
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        left = engine.containers.list(all=True, filters={"ancestor": built["image"]})
        for container in left:
            container.remove(force=True)  # what a failed run left
    output = "".join(lines)
    assert "Healthy in" in output and f"http://127.0.0.1:{port}" in output
    assert "Removed container" in output
    assert proc.returncode == 0, output
    assert not left, "inv run removed its container itself"


def test_inv_clean_removes_everything_the_builds_left(built: dict[str, Any], engine: Any) -> None:
    project, slug, image = built["project"], built["slug"], built["image"]
    # What some work leaves: a rebuild after a change (the image before it goes untagged), a failed
    # build, an image built FROM this one, a container these tasks started and one that exited.
    routes, lock = project / "api" / "routes.py", project / "requirements.lock"
    text = lock.read_text()
    derived = f"{slug}-derived:1"
    try:
        routes.write_text(routes.read_text() + "# before inv clean\n")
        run_in(project, "invoke", "build", capture=True)
        pinned = next(line.split()[0] for line in text.splitlines() if line.startswith("flask=="))
        lock.write_text(text.replace(pinned, "flask==3.0.0"))
        assert run_in(project, "invoke", "build", capture=True, check=False).returncode == 1
        lock.write_text(text)
        engine.images.build(fileobj=io.BytesIO(f"FROM {image}\nENV DERIVED=1\n".encode()), tag=derived, rm=True)
        managed = engine.containers.create(image, labels={"dev.copier-netlify-docker.managed": image})
        exited = engine.containers.run(image, ["true"], detach=True)
        exited.wait()
        untagged = [i for i in project_images(engine, slug, all_images=False) if not i.tags]
        # The image before the change went with the rebuild (nothing used it); the builder stage's
        # and the failed build's last step stay until `inv clean`.
        assert len(untagged) >= 2, "the builder stage's, the failed build's"
        # A container someone started by hand and still runs keeps its image: clean says so, and fails.
        running = engine.containers.run(image, detach=True)
        try:
            result = run_in(project, "invoke", "clean", capture=True, check=False)
            output = result.stdout + result.stderr
            assert result.returncode == 1, output
            assert "is running and was not started by these tasks" in output and "Traceback" not in output
            assert f"removed container {managed.short_id}" in output
            assert f"removed container {exited.short_id}" in output
            assert f"removed image {derived}" in output
            assert f"{untagged[0].short_id.removeprefix('sha256:')} (untagged)" in output
            assert engine.images.get(running.image.id)
        finally:
            running.remove(force=True)
        result = run_in(project, "invoke", "clean", capture=True)
        assert "removed image" in result.stdout + result.stderr
        assert not project_images(engine, slug), "no image with the project's label is left, intermediate ones included"
        assert not engine.images.list(name=slug)
        assert not engine.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={slug}"})
        again = run_in(project, "invoke", "clean", capture=True)
        assert "Nothing to clean." in again.stdout + again.stderr
    finally:  # however it ended: the lock file as it was, nothing of the test's left
        lock.write_text(text)
        for container in engine.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={slug}"}):
            container.remove(force=True)
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.images.remove(derived, force=True)


def test_two_clones_of_one_project_never_remove_each_others_images(
    tmp_path: Path, base_image: str, engine: Any
) -> None:
    """A found defect: clones share the slug (and its image label), and a build in one removed the
    other's builder stage (its next build ran pip again), and `inv clean` in one removed both's."""
    slug = f"cnd-clones-{uuid.uuid4().hex[:6]}"
    first, second = (render(tmp_path / name, {"project_slug": slug, "base_image": base_image}) for name in "ab")
    try:
        run_in(first, "invoke", "build", capture=True)
        first_images = {i.id for i in project_images(engine, slug, all_images=False)}
        run_in(second, "invoke", "build", capture=True)
        after = {i.id for i in project_images(engine, slug, all_images=False)}
        assert first_images <= after, "the second clone's build removed the first clone's images"
        second_image = engine.images.get(f"{slug}:latest").id  # the tag now names the second's
        run_in(first, "invoke", "clean", capture=True)
        assert engine.images.get(second_image)  # the other clone's image stays
        left = {i.id for i in project_images(engine, slug, all_images=False)}
        assert not left & first_images and second_image in left
        (second / "api" / "routes.py").write_text((second / "api" / "routes.py").read_text() + "# edit\n")
        lines = run_in(second, "invoke", "build", capture=True).stderr.splitlines()
        step = next(i for i, line in enumerate(lines) if "pip install --no-cache-dir" in line)
        assert "Using cache" in lines[step + 1], lines[step : step + 3]  # its builder stage was kept
    finally:
        remove_project(engine, slug)


def test_unpullable_base_image_says_how_to_build_offline(project: Path, engine: Any) -> None:
    result = run_in(
        project, "invoke", "build", "--base-image", "registry.invalid/python:3.12-slim", capture=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "The base image could not be pulled" in output
    assert "--base-image" in output and "BASE_IMAGE" in output
    assert "Traceback" not in output


# --- What reaches the image: .dockerignore under hostile planting -------------------------------

# Planted where a careless commit, an editor or a test run would put them. None may reach any
# layer of the image, by name or by content.
PLANTED = [
    # The top level: never copied, but in the build context unless ignored.
    ".env",
    ".env.production",
    "id_rsa",
    "secret.pem",
    ".netrc",
    ".git/planted-note",
    "tests/test_planted.py",
    "notes.txt",
    # Inside api/, which the image copies whole.
    "api/.env",
    "api/.env.local",
    "api/deep/er/.env",
    "api/prod.env",
    "api/.git/config",
    "api/.git/HEAD",
    "api/tests/test_planted.py",
    "api/tests/unit/test_more.py",
    "api/test/x.py",
    "api/conftest.py",
    "api/secret.pem",
    "api/SERVER.KEY",
    "api/tls/server.key",
    "api/id_rsa",
    "api/id_ed25519.pub",
    "api/keystore.p12",
    "api/cert.PFX",
    "api/store.jks",
    "api/my secret.pem",
    "api/ключ.Key",
    "api/__pycache__/routes.cpython-311.pyc",
    "api/stray.pyc",
    "api/.venv/lib/site.py",
    "api/venv/bin/activate",
    "api/.pytest_cache/v/cache/nodeids",
    "api/.mypy_cache/3.11/x.json",
    "api/.DS_Store",
    "api/.idea/workspace.xml",
    "api/.vscode/settings.json",
    "api/debug.log",
    "api/routes.py.orig",
    "api/routes.py.rej",
    "api/.routes.py.swp",
    "api/routes.py~",
    "api/routes.py.bak",
    "api/node_modules/x/index.js",
    "api/planted.egg-info/PKG-INFO",
    # certs/: only *.crt is for the builder, and nothing of it for the runtime image.
    "certs/proxy.pem",
    "certs/client.key",
    "certs/.env",
    "certs/id_rsa",
    "certs/notes.txt",
]


def generated_plants(seed: int, count: int) -> list[str]:
    """Seeded secret-looking names in random places and letter case (Docker matches case-sensitively)."""
    rng = random.Random(seed)
    places = ["api/", "api/sub/", "api/a/b/c/", "api/tests/unit/", "api/.hidden/", "certs/", "certs/sub/", ""]

    def word() -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))

    def mixed(text: str) -> str:
        return "".join(ch.upper() if rng.random() < 0.5 else ch for ch in text)

    makers = [
        lambda: f"{word()}.{mixed(rng.choice(['pem', 'key', 'p12', 'pfx', 'jks', 'env']))}",
        lambda: f".env.{word()}",
        lambda: f".{word()}",
        lambda: rng.choice(["id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"]) + rng.choice(["", ".pub", "_old"]),
        lambda: f"{word()}.{rng.choice(['log', 'pyc', 'pyo', 'orig', 'rej', 'bak', 'swp'])}",
        lambda: f"{word()}~",
        lambda: f"tests/{word()}.py",
        lambda: f"__pycache__/{word()}.cpython-311.pyc",
    ]
    return [rng.choice(places) + rng.choice(makers)() for _ in range(count)]


def first_host_certificate() -> str:
    """A real CA certificate (the builder concatenates certs/*.crt into pip's bundle)."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
    end = "-----END CERTIFICATE-----"
    start = bundle.index("-----BEGIN CERTIFICATE-----")
    return bundle[start : bundle.index(end, start) + len(end)] + "\n"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, base_image: str, engine: Any) -> Iterator[dict[str, Any]]:
    """A project with secrets and junk planted everywhere, built by `inv build` and by the docker CLI."""
    slug = f"cnd-planted-{uuid.uuid4().hex[:8]}"
    project = render(tmp_path_factory.mktemp("planted") / slug, {"project_slug": slug, "base_image": base_image})
    token = uuid.uuid4().hex
    plants = sorted(set(PLANTED + generated_plants(seed=7, count=60)))
    markers: dict[str, str] = {}
    for index, rel in enumerate(plants):
        path = project / rel
        if path.exists():  # a generated name that a real file has (say certs/README.md): never overwrite
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        markers[rel] = f"planted-{token}-{index:04d}"
        path.write_text(f"{markers[rel]}\n")
    # A link into the image pointing at a secret outside api/: only the link may travel, not the secret.
    (project / "api" / "linked-env").symlink_to("../.env")
    controls = {
        "code": f"planted-{token}-code",  # must be in the image: a change to the app
        "data": f"planted-{token}-data",  # must be in the image: a data file someone adds to api/
        "crt": f"planted-{token}-crt",  # must be in the builder stage only
    }
    routes = project / "api" / "routes.py"
    routes.write_text(routes.read_text() + f"# {controls['code']}\n")
    (project / "api" / "reference.json").write_text(json.dumps({"note": controls["data"]}) + "\n")
    (project / "certs" / "corp-proxy.crt").write_text(f"{controls['crt']}\n{first_host_certificate()}")
    images = {"inv build": f"{slug}:latest", "docker build": f"{slug}:cli"}
    try:
        result = run_in(project, "invoke", "build", capture=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            unavailable("the docker CLI is not installed")
        result = run_in(
            project,
            docker_cli,
            "build",
            "--quiet",
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "-t",
            images["docker build"],
            ".",
            env={"DOCKER_BUILDKIT": "0"},
            capture=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        yield {"project": project, "slug": slug, "markers": markers, "controls": controls, "images": images}
    finally:
        remove_project(engine, slug)


@pytest.mark.parametrize("builder", ["inv build", "docker build"])
def test_planted_secrets_and_junk_reach_no_layer(
    planted: dict[str, Any], engine: Any, tmp_path: Path, builder: str
) -> None:
    markers: dict[str, str] = planted["markers"]
    controls: dict[str, str] = planted["controls"]
    assert len(markers) >= 80, "the planting must try many names"
    scan = scan_layers(engine, planted["images"][builder], tmp_path, [*markers.values(), *controls.values()])
    assert scan.layers >= 5
    # The scan sees what it should: the app's own change and a data file in api/ are there.
    assert scan.hits.get(controls["code"]) == ["app/api/routes.py"], scan.hits.get(controls["code"])
    assert scan.hits.get(controls["data"]) == ["app/api/reference.json"]
    assert "app/api/linked-env" in scan.paths  # the link travels, the secret it points at does not
    leaked_content = {rel: scan.hits[marker] for rel, marker in markers.items() if marker in scan.hits}
    leaked_names = sorted(rel for rel in markers if f"app/{rel}" in scan.paths)
    assert not leaked_content, (
        f"{len(leaked_content)} of {len(markers)} planted files reached the image: {leaked_content}"
    )
    assert not leaked_names, leaked_names
    # The proxy CA is for pip in the builder stage, never the runtime image.
    assert controls["crt"] not in scan.hits


def test_proxy_ca_certificates_reach_the_builder_stage(planted: dict[str, Any], engine: Any, tmp_path: Path) -> None:
    builders = [i for i in project_images(engine, planted["slug"]) if i.attrs["Config"]["WorkingDir"] == "/build"]
    assert builders, "the builder stage's image carries the project label"
    crt = planted["controls"]["crt"]
    secrets = [planted["markers"][rel] for rel in planted["markers"] if rel.startswith("certs/")]
    scan = scan_layers(engine, builders[0].id, tmp_path, [crt, *secrets])
    assert "build/certs/corp-proxy.crt" in scan.hits.get(crt, [])
    assert sorted(scan.hits) == [crt], "only *.crt reaches the builder from certs/"


def test_a_rebuild_of_an_edited_tree_keeps_its_image_id(planted: dict[str, Any], engine: Any) -> None:
    """Uncommitted changes: `created` is the newest edit of the build context, not the clock."""
    project = planted["project"]
    before = engine.images.get(planted["images"]["inv build"])
    result = run_in(project, "invoke", "build", capture=True)
    assert engine.images.get(planted["images"]["inv build"]).id == before.id, result.stdout + result.stderr
    labels = before.labels
    assert labels["org.opencontainers.image.revision"].endswith("-dirty")
    # The files the fixture wrote last into the build context (planted ones are not in it).
    edited = [project / "api" / "routes.py", project / "api" / "reference.json", project / "certs" / "corp-proxy.crt"]
    newest = max(path.stat().st_mtime for path in edited)
    expected = dt.datetime.fromtimestamp(int(newest), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert labels["org.opencontainers.image.created"] == expected
