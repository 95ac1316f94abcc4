"""The README's main job, `nox -s demo`, including the fallback for machines without Docker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.generated import REPO


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
