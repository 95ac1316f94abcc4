"""Maintainer conveniences for the template: `inv -l` lists them. Checks live in noxfile.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from invoke import Collection, Context, Exit, task

from tools import base_image
from tools import demo as demo_tool
from tools.generated import REPO
from tools.generated import render as render_template

CACHE = REPO / ".cache"


@task(
    iterable=["answer"],
    help={
        "dest": "where to render (default: .cache/render/<slug>)",
        "answer": "an answer as key=value (YAML value); repeat for more",
    },
)
def render(c: Context, dest: str = "", answer: list[str] | None = None) -> None:
    """Render the working tree of the template with default answers plus --answer."""
    answers = {}
    for item in answer or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise Exit(f"error: --answer {item!r} is not key=value", code=2)
        answers[key] = yaml.safe_load(value)
    target = Path(dest) if dest else CACHE / "render" / str(answers.get("project_slug", "my-service"))
    try:
        render_template(target, answers)
    except ValueError as exc:
        raise Exit(f"error: {exc}", code=1) from None
    print(f"rendered {target}")


@task(help={"check": "run the smoke suite against it and exit"})
def demo(c: Context, check: bool = False) -> None:
    """Render, build and run a project with default answers (the README's main job)."""
    code = demo_tool.main(["--check"] if check else [])
    if code:
        raise Exit(code=code)


@task(iterable=["suite"], help={"suite": "Debian suite to build (bookworm, trixie); repeat for more"})
def images(c: Context, suite: list[str] | None = None) -> None:
    """Build the offline Python base images from Debian packages."""
    code = base_image.main(suite or ["bookworm", "trixie"])
    if code:
        raise Exit(code=code)


@task
def clean(c: Context) -> None:
    """Remove renders, nox environments and benchmark output of this repository."""
    for path in (
        CACHE / "render",
        CACHE / "demo",
        CACHE / "generated",
        CACHE / "smoke",
        CACHE / "bench",
        REPO / ".nox",
    ):
        if path.exists():
            shutil.rmtree(path)
            print(f"removed {path.relative_to(REPO)}")


ns = Collection(render, demo, images, clean)
