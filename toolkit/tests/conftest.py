from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api import create_app
from cnd_toolkit import project, redact, testing
from cnd_toolkit.docker import images
from cnd_toolkit.testing import unavailable

from tests.isolation import (  # noqa: F401  (autouse fixtures and a hook: no test leaks)
    module_leaves_nothing,
    pytest_configure,
    pytest_runtest_protocol,
    pytest_terminal_summary,
    test_leaves_nothing,
)

# What the tests run besides Python, each with the Debian/Ubuntu package that has it: the tools the
# template repository's .ci/run installs (its tests/test_prerequisites.py checks it installs each one).
TOOLS = {
    "caddy": "caddy",
    "docker-registry": "docker-registry",
    "git": "git",
    "openssl": "openssl",
    "promtool": "prometheus",
    "socat": "socat",
}


# The modules of part 1 (``CND_TEST_PART=1``); part 2 is the rest. The template's CI runs the two
# parts at once, each on an engine of its own (its .ci/run): chosen so that each takes about half
# the time (the durations its CI run prints), the swarm modules and the rollouts on one host apart.
PART_1 = {
    "test_swarm.py",
    "test_swarm_canary.py",
    "test_canary_rollout.py",
    "test_applogs.py",
    "test_monitor.py",
    "test_messages.py",
    "test_interrupts.py",
    "test_slow_clients.py",
    "test_secrets.py",
    "test_preview_site.py",
    "test_prerequisites.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``CND_TEST_PART=1`` or ``2`` keeps one part of the tests (:data:`PART_1`, or the rest).
    ``CND_ROLLOUT_TESTS=0`` skips the tests marked ``rollouts``, by design and under CI too (a
    choice, not a missing prerequisite): a quicker run of the rest while working on the toolkit."""
    part = os.environ.get("CND_TEST_PART", "")
    if part in {"1", "2"}:
        wanted = part == "1"
        config.hook.pytest_deselected(items=[item for item in items if (item.path.name in PART_1) != wanted])
        items[:] = [item for item in items if (item.path.name in PART_1) == wanted]
    elif part:
        raise pytest.UsageError(f"CND_TEST_PART={part!r}: use 1 or 2 (or leave it unset for every test)")
    if os.environ.get("CND_ROLLOUT_TESTS", "1") != "0":
        return
    skip = pytest.mark.skip(reason="CND_ROLLOUT_TESTS=0 (the template CI runs them: nox -s toolkit)")
    for item in items:
        if item.get_closest_marker("rollouts") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _secrets_forgotten() -> Iterator[None]:
    """The secrets a test's settings load are masked for the rest of the process, as in a task
    (cnd_toolkit.redact): forgotten after each test, so one test's fake secret masks nothing in another's."""
    yield
    redact.forget()


@pytest.fixture
def api_origin() -> Iterator[str]:
    """This project's API on a local HTTP server (werkzeug, in a thread): an origin for proxy rules."""
    import threading

    from werkzeug.serving import make_server

    server = make_server(
        "127.0.0.1", 0, create_app({"REVISION": "local-origin", "LOG_FLUSH_SECONDS": 0}), threaded=True
    )
    thread = threading.Thread(target=server.serve_forever, name="api-origin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


@pytest.fixture(scope="session")
def engine():  # type: ignore[no-untyped-def]
    """A client for the Docker engine (:func:`unavailable` without one)."""
    from cnd_toolkit.docker.engine import connect
    from cnd_toolkit.errors import EngineUnavailable

    try:
        return connect()  # the timeout the tasks use: a busy engine is slow, not gone
    except EngineUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    """A registry on 127.0.0.1 (tests/local_registry.py; :func:`unavailable` without one)."""
    from tests import local_registry

    try:
        with local_registry.serve() as address:
            yield address
    except local_registry.RegistryUnavailable as exc:
        unavailable(str(exc))


CADDY_FROM_DEBIAN = """\
FROM {base}
RUN apt-get update && apt-get install -y --no-install-recommends caddy && rm -rf /var/lib/apt/lists/*
EXPOSE 80 443 2019
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
"""


def needed_tool(name: str, why: str) -> str:
    """The path of the command ``name`` (one of :data:`TOOLS`), which the test needs ``why``."""
    return testing.needed_tool(name, why, TOOLS[name])


def engine_socket() -> str:
    """The local engine's Unix socket: DOCKER_HOST's when it names one (as CI's second engine, in its
    own network namespace), else Docker's default."""
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_image(engine: Any) -> str:
    dockerfile = (project.ROOT / "Dockerfile").read_text()
    default = next(line.split("=", 1)[1] for line in dockerfile.splitlines() if line.startswith("ARG BASE_IMAGE="))
    return os.environ.get("BASE_IMAGE") or default


@pytest.fixture(scope="session")
def proxy_image(engine: Any) -> str:
    """PROXY_IMAGE, else caddy:2 where the engine has it, else Caddy from Debian on the base image
    (machines that reach no registry; see TEST-ENVIRONMENT)."""
    for candidate in (os.environ.get("PROXY_IMAGE", ""), "caddy:2", "local/caddy:2"):
        if candidate and images.tagged_id(engine, candidate):
            return candidate
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text(CADDY_FROM_DEBIAN.format(base=base_image(engine)))
        images.build_image(engine, Path(tmp), ["local/caddy:2"])
    return "local/caddy:2"


def git_project(root: Path) -> project.Project:
    """The project's facts with a committed tree at ``root``, for preflights."""
    for name in ("pyproject.toml", "netlify.toml"):
        (root / name).write_bytes((project.ROOT / name).read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run([*git, *args], cwd=root, check=True)
    return dataclasses.replace(project.load(), root=root)
