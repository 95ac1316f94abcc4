"""ops.release.rollout on a real engine, behind a real Caddy, under a bounded loopback load.

v1, then v2 under load: no failed request and the switch seen; a v3 whose runtime setting is bad
(WEB_CONCURRENCY=abc) never turns healthy: the deploy fails, v2 keeps serving, no failed request.
Nothing of the app is published: the gate is the engine's health status, the traffic goes
through the proxy's port only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from ops import project
from ops.docker import containers, images
from ops.release import proxy, rollout

pytestmark = pytest.mark.docker

CADDY_FROM_DEBIAN = """\
FROM {base}
RUN apt-get update && apt-get install -y --no-install-recommends caddy && rm -rf /var/lib/apt/lists/*
EXPOSE 80 443 2019
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_image(engine: Any) -> str:
    dockerfile = (project.ROOT / "Dockerfile").read_text()
    default = next(line.split("=", 1)[1] for line in dockerfile.splitlines() if line.startswith("ARG BASE_IMAGE="))
    return os.environ.get("BASE_IMAGE") or default


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def app_images(engine: Any) -> dict[str, str]:
    """The project's own image, built twice with two revisions (the labels and /api/version differ)."""
    me = project.load()
    tags = {}
    for revision in ("rev-one", "rev-two"):
        args = project.build_args(me, base_image(engine), revision=revision)
        tag = f"{me.slug}-rollout-test:{revision}"
        images.build_image(engine, me.root, [tag], args)
        tags[revision] = tag
    return tags


@dataclass
class Host:
    target: rollout.Target
    url: str
    lines: list[str] = field(default_factory=list)


@pytest.fixture
def host(engine: Any, proxy_image: str) -> Iterator[Host]:
    slug = f"rollout-{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings = proxy.ProxySettings(proxy_image, port, free_port(), name=f"cnd-proxy-test-{uuid.uuid4().hex[:6]}")
    target = rollout.Target(
        slug=slug,
        backend_url=f"http://127.0.0.1:{port}",
        container_port=project.load().container_port,
        proxy=settings,
        health_timeout=40,
        keep_releases=1,
    )
    made = Host(target, target.backend_url)
    try:
        yield made
    finally:
        for release in rollout.releases(engine, slug):
            containers.remove(release.container)
        found = proxy.get(engine, settings.name)
        if found is not None:
            containers.remove(found)
        for name in settings.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                engine.volumes.get(name).remove(force=True)
        for network in engine.networks.list(names=[proxy.network_name(slug)]):
            network.remove()


class Load:
    """Clients asking /api/version through the proxy until stopped; every answer is counted."""

    def __init__(self, url: str, clients: int = 6) -> None:
        self.url = url
        self.statuses: Counter[str] = Counter()
        self.revisions: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                try:
                    answer = http.get(self.url + "/api/version")
                    revision = answer.json().get("revision", "") if answer.status_code == 200 else ""
                    outcome = str(answer.status_code)
                except (httpx.HTTPError, ValueError) as exc:
                    revision, outcome = "", type(exc).__name__
                with self._lock:
                    self.statuses[outcome] += 1
                    if outcome == "200":
                        self.revisions[revision] += 1
                    else:
                        self.failures.append(outcome)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)  # a moment of traffic after the last change
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def test_v1_then_v2_under_load_then_a_bad_v3_changes_nothing(
    engine: Any, host: Host, app_images: dict[str, str]
) -> None:
    target = host.target
    first = rollout.roll_out(
        engine, target, app_images["rev-one"], version="1", revision="rev-one", on_line=host.lines.append
    )
    assert first.revision == "rev-one" and first.running
    assert httpx.get(host.url + "/api/version").json()["revision"] == "rev-one"
    inspected = first.container.attrs["HostConfig"]
    assert inspected["ReadonlyRootfs"] and inspected["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in inspected["SecurityOpt"] and inspected["Memory"] > 0
    ports = first.container.attrs["NetworkSettings"]["Ports"] or {}
    assert not any(ports.values()) and not inspected["PortBindings"]  # nothing of the app is published

    with Load(host.url) as load:
        time.sleep(1)
        second = rollout.roll_out(
            engine, target, app_images["rev-two"], version="2", revision="rev-two", on_line=host.lines.append
        )
    assert load.failures == [], (load.statuses, host.lines)
    assert load.revisions["rev-one"] > 0 and load.revisions["rev-two"] > 0, load.revisions
    assert load.total >= 200, load.statuses
    assert second.revision == "rev-two"
    states = {r.revision: r.running for r in rollout.releases(engine, target.slug)}
    assert states == {"rev-two": True, "rev-one": False}  # v1 drained and kept for rollback

    with Load(host.url) as load, pytest.raises(rollout.RolloutFailed) as caught:
        rollout.roll_out(
            engine,
            target,
            app_images["rev-one"],
            version="3",
            revision="rev-three",
            environment={"WEB_CONCURRENCY": "abc"},
            on_line=host.lines.append,
        )
    message = str(caught.value)
    assert "WEB_CONCURRENCY" in message + caught.value.detail, message
    assert f"{second.name} keeps serving" in message
    assert load.failures == [] and set(load.revisions) == {"rev-two"}, load.statuses
    assert {r.revision for r in rollout.releases(engine, target.slug)} == {"rev-one", "rev-two"}  # v3 removed
    assert rollout.live_release(engine, target.slug).revision == "rev-two"  # type: ignore[union-attr]

    with Load(host.url) as load:
        time.sleep(0.5)
        back = rollout.roll_back(engine, target, on_line=host.lines.append)
    assert back.revision == "rev-one" and back.running
    assert load.failures == [], (load.statuses, host.lines)
    assert load.revisions["rev-one"] > 0 and load.revisions["rev-two"] > 0, load.revisions
    states = {r.revision: r.running for r in rollout.releases(engine, target.slug)}
    assert states == {"rev-one": True, "rev-two": False}
    with pytest.raises(rollout.RolloutFailed, match=r"no stopped release of revision nope is kept on this host"):
        rollout.roll_back(engine, target, "nope")
