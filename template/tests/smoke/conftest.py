"""The smoke suite runs against any base URL: a fresh container (`inv smoke`), a Netlify draft
or production (`inv smoke --url URL`). Container checks run only when ``SMOKE_CONTAINER`` names
the container under test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--base-url", default=os.environ.get("SMOKE_BASE_URL", ""), help="URL of the service under test")


@pytest.fixture(scope="session")
def base_url(request: pytest.FixtureRequest) -> str:
    url = str(request.config.getoption("--base-url")).rstrip("/")
    if not url:
        pytest.exit("give the URL under test: --base-url URL or SMOKE_BASE_URL (or run `inv smoke`)", returncode=4)
    return url


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30, follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="session")
def container():  # type: ignore[no-untyped-def]
    container_id = os.environ.get("SMOKE_CONTAINER", "")
    if not container_id:
        pytest.skip("container checks need SMOKE_CONTAINER (set by `inv smoke`)")
    from ops.docker.engine import connect  # DOCKER_HOST as the task passed it: unix, tcp:// or ssh://

    return connect().containers.get(container_id)
