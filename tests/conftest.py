"""Fixtures: real Copier renders, a real Docker engine, real images built from the render."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import remove_project, unavailable
from tests.isolation import (  # noqa: F401  (autouse fixtures and a hook: no test leaks)
    module_leaves_nothing,
    pytest_configure,
    pytest_runtest_protocol,
    pytest_terminal_summary,
    test_leaves_nothing,
)
from tools.generated import docker_client, local_image_exists, offline_base_image, render, run_in
from tools.generated import netlify_cli as find_netlify_cli


@pytest.fixture(scope="session")
def engine() -> Any:
    """The Docker engine; skipped on a laptop without one, a failure in CI."""
    client = docker_client()
    if client is None:
        unavailable("no Docker engine answers (start dockerd or set DOCKER_HOST)")
    return client


@pytest.fixture(scope="session")
def base_image(engine: Any) -> str:
    image = offline_base_image("3.11")
    if not local_image_exists(engine, image):
        unavailable(f"base image {image} is missing; build it with `nox -s images` (or set BASE_IMAGE)")
    return image


@pytest.fixture(scope="session")
def netlify_cli() -> str:
    """netlify-cli, as .ci/run installs it (or NETLIFY_CLI, or on PATH)."""
    found = find_netlify_cli()
    if found is None:
        unavailable("netlify-cli is not installed (npm install --prefix .cache/netlify-tools netlify-cli)")
    return found


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project rendered with default answers (read-only: tests that edit files render their own)."""
    return render(tmp_path_factory.mktemp("render") / "my-service")


@pytest.fixture(scope="session")
def image_project(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Path:
    """A project whose image tests build; a unique slug keeps parallel runs apart."""
    slug = f"cnd-test-{uuid.uuid4().hex[:8]}"
    path = render(tmp_path_factory.mktemp("image") / slug, {"project_slug": slug, "base_image": base_image})
    # A secret-looking .env must never reach the image (the .dockerignore allow-list).
    (path / ".env").write_text("NETLIFY_AUTH_TOKEN=never-in-the-image\n")
    return path


@pytest.fixture(scope="session")
def built(image_project: Path, engine: Any) -> Iterator[dict[str, Any]]:
    """Build the image once with `inv build`; afterwards remove every image and container of the project."""
    slug = image_project.name
    try:
        result = run_in(image_project, "invoke", "build", capture=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        yield {
            "project": image_project,
            "slug": slug,
            "image": f"{slug}:latest",
            "output": result.stdout + result.stderr,
        }
    finally:
        remove_project(engine, slug)  # tagged, left untagged by rebuilds, the builder stage's, failed builds'
