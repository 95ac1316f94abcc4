"""The generated image, built and run on a real Docker engine through the generated `inv` tasks."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

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
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.source"].startswith("https://github.com/")


def test_runtime_image_is_non_root_and_lean(built: dict[str, Any], engine: Any) -> None:
    config = engine.images.get(built["image"]).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["python", "/app/serve.py"]
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "/app/healthcheck.py"]
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
    assert "10 passed" in output
    assert "Smoke tests passed" in output
    assert not engine.containers.list(all=True, filters={"ancestor": built["image"]})


def test_smoke_against_a_url(built: dict[str, Any], engine: Any) -> None:
    container = engine.containers.run(built["image"], detach=True, ports={"8080/tcp": ("127.0.0.1", None)})
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        result = None
        while time.monotonic() < deadline:
            result = run_in(built["project"], "invoke", "smoke", "--url", url, capture=True, check=False)
            if result.returncode == 0:
                break
            time.sleep(0.5)
        assert result is not None and result.returncode == 0, result.stdout + result.stderr if result else ""
        assert "skipped" in result.stdout  # container checks need SMOKE_CONTAINER; URL checks ran
    finally:
        container.remove(force=True)


def test_container_that_never_turns_healthy_is_reported_and_removed(built: dict[str, Any], engine: Any) -> None:
    # An invalid WEB_CONCURRENCY baked into a derived image: gunicorn refuses to start.
    broken = f"{built['slug']}:broken"
    engine.images.build(
        fileobj=io.BytesIO(f"FROM {built['image']}\nENV WEB_CONCURRENCY=lots\n".encode()),
        tag=broken,
        rm=True,
    )
    result = run_in(built["project"], "invoke", "smoke", "--image", broken, capture=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "exited with code" in output
    assert "WEB_CONCURRENCY='lots' is not a whole number" in output  # the container's logs are shown
    assert "Traceback" not in output
    assert not engine.containers.list(all=True, filters={"ancestor": broken})
    engine.images.remove(broken, force=True)


def test_failed_build_shows_the_log_tail(tmp_path: Path, base_image: str, engine: Any) -> None:
    project = render(tmp_path / "broken-build", {"project_slug": "cnd-broken-build", "base_image": base_image})
    lock = project / "requirements.lock"
    # Another release under the same hashes: pip refuses it, as it would a tampered package.
    text = lock.read_text()
    pinned = next(line.split()[0] for line in text.splitlines() if line.startswith("flask=="))
    lock.write_text(text.replace(pinned, "flask==3.0.0"))
    result = run_in(project, "invoke", "build", capture=True, check=False)
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
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/greeting", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("inv run did not serve within 60 s")
        time.sleep(1)  # let the JSON request line reach the followed logs
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Healthy in" in output and f"http://127.0.0.1:{port}" in output
    assert '"path": "/api/greeting"' in output  # the container's logs were followed
    assert "Stopped and removed the container." in output
    assert not engine.containers.list(all=True, filters={"ancestor": built["image"]})


def test_inv_clean_removes_images_and_managed_containers(tmp_path: Path, built: dict[str, Any], engine: Any) -> None:
    project = built["project"]
    leftover = engine.containers.create(built["image"], labels={"dev.copier-netlify-docker.managed": built["image"]})
    result = run_in(project, "invoke", "clean", capture=True)
    output = result.stdout + result.stderr
    assert f"removed container {leftover.short_id}" in output
    assert f"removed image {built['slug']}:latest" in output
    assert not engine.images.list(name=built["slug"])


def test_unpullable_base_image_says_how_to_build_offline(project: Path, engine: Any) -> None:
    result = run_in(
        project, "invoke", "build", "--base-image", "registry.invalid/python:3.12-slim", capture=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "The base image could not be pulled" in output
    assert "--base-image" in output and "BASE_IMAGE" in output
    assert "Traceback" not in output
