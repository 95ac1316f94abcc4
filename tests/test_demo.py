"""The README's main job, `nox -s demo`, including the fallback for machines without Docker."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers import PROJECT_LABEL, as_a_terminal_starts_it
from tools.generated import REPO, run_in, scripts_env


def test_demo_without_docker_runs_a_local_gunicorn_and_passes_smoke(tmp_path: Path) -> None:
    env = {
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--check", "--dir", str(tmp_path / "my-service")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    fallback = [line for line in output.splitlines() if "no Docker engine answers" in line]
    assert len(fallback) == 1, output  # said once, in one line
    assert "running the service as a local gunicorn process instead" in fallback[0]
    assert "demo: serving at http://127.0.0.1:" in output
    assert " passed" in output and "failed" not in output


def _images_of(engine: Any, project: Path) -> list[str]:
    """The images of the render at ``project`` and the containers made from them: the slug's label
    and the checkout's (every image its builds end a stage with carries both, so do containers).
    Steps before a stage's end are shared with other renders of my-service through the build
    cache; removing the ends removes those only this render used."""
    checkout = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:16]  # cnd_toolkit.project.checkout_id
    ours = {"label": [f"{PROJECT_LABEL}=my-service", f"dev.copier-netlify-docker.checkout={checkout}"]}
    images = [f"image {i.short_id} {i.tags}" for i in engine.images.list(all=True, filters=ours)]
    return images + [f"container {c.name}" for c in engine.containers.list(all=True, filters=ours)]


def test_demo_check_removes_the_images_it_built(tmp_path: Path, engine: Any, base_image: str) -> None:
    """`nox -s demo -- --check` (and the repository's `nox -s smoke`) built an image, its builder
    stage and their steps, and left them all on the engine."""
    project = tmp_path / "my-service"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tools.demo", "--check", "--dir", str(project)],
            cwd=REPO, env=scripts_env({"BASE_IMAGE": base_image}), capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        run_in(project, "invoke", "clean", check=False)
        raise
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert " passed" in output and "demo: removing the images it built (inv clean)" in output
    assert "removed image my-service:latest" in output, output
    assert _images_of(engine, project) == [], output


def test_demo_stopped_by_ctrl_c_removes_its_container_and_images(tmp_path: Path, engine: Any, base_image: str) -> None:
    project = tmp_path / "my-service"
    demo = subprocess.Popen(
        [sys.executable, "-m", "tools.demo", "--dir", str(project)],
        cwd=REPO, env=scripts_env({"BASE_IMAGE": base_image}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, preexec_fn=as_a_terminal_starts_it,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 900
        for line in demo.stdout:
            lines.append(line)
            if "Healthy in" in line or time.monotonic() > deadline:
                break
        assert any("Healthy in" in line for line in lines), "".join(lines)
        demo.send_signal(signal.SIGINT)  # a Ctrl-C (a terminal sends it to the demo; `inv run` gets it from there)
        rest, _ = demo.communicate(timeout=300)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
            run_in(project, "invoke", "clean", check=False)  # what a demo that never stopped left
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    assert "Removed container" in output and "removed image my-service:latest" in output, output
    assert _images_of(engine, project) == [], output
