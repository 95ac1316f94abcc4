"""The smoke suite runs against any base URL: a fresh container (`inv smoke`), a Netlify draft
or production (`inv smoke --url URL`).

The container checks need the container under test, which the runner names:
``SMOKE_CONTAINER=ID`` when it started one (`inv smoke`, `inv deploy`), ``SMOKE_URL_ONLY=1``
when it tests a URL with no container behind it to inspect (`inv smoke --url`), and then they
skip, by design. A run that says neither is missing its container: skipped on a machine, a
failure under CI (cnd_toolkit.testing's ``unavailable``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from cnd_toolkit.testing import unavailable


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
        if os.environ.get("SMOKE_URL_ONLY") == "1":
            pytest.skip("a URL under test (SMOKE_URL_ONLY=1): no container to inspect")
        unavailable(
            "the container checks need the container under test: `inv smoke` starts the image and "
            "sets SMOKE_CONTAINER; for a deployed URL, `inv smoke --url URL` (or SMOKE_URL_ONLY=1)"
        )
    from cnd_toolkit.docker.engine import connect  # DOCKER_HOST as the task passed it: unix, tcp:// or ssh://

    return connect().containers.get(container_id)
