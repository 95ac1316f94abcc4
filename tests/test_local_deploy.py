"""A new user's first deploy, on their own machine: the generated README's steps exactly as written.

A fresh default render; the quick start's first two commands (git init with uv.lock in the first
commit, `uv sync --locked`); then the commands of "Your first deploy: this machine", through a
shell with the project's .venv activated, as a user types them. Real parts throughout: Copier,
uv, the engine, Caddy. The machine's own facts come from the environment, which every setting
reads first: the Caddy image this machine has (TEST-ENVIRONMENT.md); the locally built base
image is the Copier answer. Nothing else is set: no registry, no Netlify.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import PROJECT_LABEL, proxy_image, remove_project, unavailable
from tools.generated import new_user_env, render


def _block(readme: list[str], heading: str) -> list[str]:
    """The commands of the first ```sh block after ``heading``, without their comments."""
    start = readme.index(heading)
    fence = readme.index("```sh", start)
    end = readme.index("```", fence + 1)
    return [line.split("  #")[0].strip() for line in readme[fence + 1 : end] if line.strip()]


@pytest.fixture
def fresh(tmp_path: Path, engine: Any, base_image: str) -> Iterator[tuple[Path, dict[str, str]]]:
    if shutil.which("uv") is None:
        unavailable("uv is not installed (pip install uv)")
    if shutil.which("curl") is None:
        unavailable("curl is not installed (apt-get install curl): the README's first deploy uses it")
    # This machine's base image is the user's answer (their mirror's image, as the README's
    # offline section says); its Python becomes the project's, as Copier asks.
    project = render(tmp_path / "newbie-shop", {"project_slug": "newbie-shop", "base_image": base_image}, git=False)
    env = new_user_env(project, PROXY_IMAGE=proxy_image(engine, base_image))
    try:
        yield project, env
    finally:
        subprocess.run(
            ["bash", "-c", ". .venv/bin/activate && inv remove --env local --yes --proxy"],
            cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        remove_project(engine, "newbie-shop")


def test_the_readmes_first_deploy_serves_the_commit_at_the_url_it_prints(
    fresh: tuple[Path, dict[str, str]], engine: Any
) -> None:
    project, env = fresh

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f". .venv/bin/activate 2>/dev/null; {command}"],
            cwd=project, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip

    readme = (project / "README.md").read_text().splitlines()
    setup = [line for line in _block(readme, "## Quick start") if line.startswith(("git init", "uv sync"))]
    first_deploy = _block(readme, "## Your first deploy: this machine")
    assert len(first_deploy) <= 3, first_deploy  # the promise: at most three commands
    assert first_deploy[0] == "inv deploy --env local", first_deploy
    for command in setup:
        done = sh(command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    revision = sh("git rev-parse HEAD").stdout.strip()

    deployed = sh(first_deploy[0])
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "Not pushed (REGISTRY_PUSH=off)" in deployed.stderr, deployed.stderr
    assert "Netlify: not deployed (NETLIFY_DEPLOY=off, .env.local:" in deployed.stderr
    assert "inv edge --env local" in deployed.stderr
    printed = re.search(r"^API: (http://\S+)$", deployed.stdout, re.MULTILINE)
    assert printed is not None, deployed.stdout
    url = printed.group(1)
    assert url == "http://127.0.0.1:8480/api/version", url  # as the README says
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.json()["revision"] == revision, answer.text

    # The README's next command, as written, sees the same.
    curl = sh(first_deploy[1])
    assert curl.returncode == 0 and revision in curl.stdout, curl

    # A second deploy is the blue/green switch, and the first release is kept for a rollback.
    (project / "public" / "change.txt").write_text("two\n")
    assert sh("git add -A && git commit -qm two").returncode == 0
    second = sh("inv deploy --env local")
    assert second.returncode == 0, second.stdout + second.stderr
    assert httpx.get(url, timeout=30).json()["revision"] == sh("git rev-parse HEAD").stdout.strip()
    back = sh("inv rollback --env local")
    assert back.returncode == 0, back.stdout + back.stderr
    assert httpx.get(url, timeout=30).json()["revision"] == revision

    # Taking it off again: the dry run lists what --yes removes, and the local proxy goes too.
    listed = sh("inv remove --env local --proxy")
    assert listed.returncode == 0 and "Run `inv remove --yes --proxy --env local` to do it." in listed.stdout
    assert "the shared proxy container cnd-local" in listed.stdout, listed.stdout
    gone = sh("inv remove --env local --yes --proxy")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not engine.containers.list(all=True, filters={"name": "cnd-local"})
    assert not engine.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}=newbie-shop"})
