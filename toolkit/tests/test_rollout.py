"""cnd_toolkit.release.rollout on a real engine, behind a real Caddy, under a bounded loopback load.

v1, then v2 under load: no failed request and the switch seen; a v3 whose runtime setting is bad
(WEB_CONCURRENCY=abc) never turns healthy: the deploy fails, v2 keeps serving, no failed request.
Nothing of the app is published: the gate is the engine's health status, the traffic goes
through the proxy's port only.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cnd_toolkit import project
from cnd_toolkit.docker import images
from cnd_toolkit.errors import OpsError
from cnd_toolkit.release import backends, caddy, lock, proxy, rollout

from tests.conftest import base_image, free_port
from tests.holding import Child

pytestmark = pytest.mark.docker


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
        proxy.remove(engine, settings)
        rollout.remove_releases(engine, slug)


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

    def answered(self, revision: str = "", more: int = 1, timeout: float = 60) -> None:
        """Until ``more`` further requests have been answered (by ``revision``, when given)."""
        count = (lambda: self.revisions[revision]) if revision else (lambda: self.total)
        wanted = count() + more
        deadline = time.monotonic() + timeout
        while count() < wanted:
            assert time.monotonic() < deadline, f"no traffic answered in {timeout:.0f}s: {self.statuses}"
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.answered(more=20)  # traffic after the last change
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
        load.answered("rev-one", 20)
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
        load.answered("rev-two", 20)
        back = rollout.roll_back(engine, target, on_line=host.lines.append)
    assert back.revision == "rev-one" and back.running
    assert load.failures == [], (load.statuses, host.lines)
    assert load.revisions["rev-one"] > 0 and load.revisions["rev-two"] > 0, load.revisions
    states = {r.revision: r.running for r in rollout.releases(engine, target.slug)}
    assert states == {"rev-one": True, "rev-two": False}
    with pytest.raises(rollout.RolloutFailed, match=r"no other release of revision nope is kept on this host"):
        rollout.roll_back(engine, target, "nope")


def test_a_pre_switch_step_that_fails_leaves_the_live_release_serving(
    engine: Any, host: Host, app_images: dict[str, str]
) -> None:
    """The pre-switch hook's place (``before_switch``): the new release is up and healthy, and not
    yet serving; when the step fails, it is removed and the live one never stopped serving."""
    target = host.target
    first = rollout.roll_out(engine, target, app_images["rev-one"], version="1", revision="rev-one")
    seen: list[tuple[str, str]] = []

    def before_switch(name: str) -> None:
        new = engine.containers.get(name)
        seen.append((new.attrs["State"]["Health"]["Status"], httpx.get(host.url + "/api/version").json()["revision"]))
        raise OpsError("hooks/pre-switch exited with 3: the deploy stopped before the switch")

    with Load(host.url) as load, pytest.raises(rollout.RolloutFailed) as caught:
        rollout.roll_out(
            engine, target, app_images["rev-two"], version="2", revision="rev-two", before_switch=before_switch
        )
    assert seen == [("healthy", "rev-one")]  # healthy, and the proxy still sent requests to the live one
    assert f"the new release was removed, and {first.name} keeps serving" in str(caught.value)
    assert load.failures == [] and set(load.revisions) == {"rev-one"}, load.statuses
    assert [r.revision for r in rollout.releases(engine, target.slug)] == ["rev-one"]


def test_a_release_whose_workers_outgrow_its_memory_is_never_switched_to(
    engine: Any, host: Host, app_images: dict[str, str]
) -> None:
    """64 workers of 8 threads in 512 MiB: one loaded worker answers the first health check, and the
    kernel kills workers seconds after a switch (it did: "Deployed", then out of memory). The gate
    waits for every worker and reads the memory they take before any request: the deploy fails with
    what to change, and the live release serves throughout."""
    first = rollout.roll_out(engine, host.target, app_images["rev-one"], version="1", revision="rev-one")
    tight = dataclasses.replace(host.target, memory_mb=512)
    with Load(host.url) as load, pytest.raises(rollout.RolloutFailed) as caught:
        rollout.roll_out(
            engine, tight, app_images["rev-two"], version="2", revision="rev-two",
            environment={"WEB_CONCURRENCY": "64", "GUNICORN_THREADS": "8"}, on_line=host.lines.append,
        )  # fmt: skip
    message = str(caught.value)
    assert "give each release more (RELEASE_MEMORY_MB) or run fewer workers (WEB_CONCURRENCY)" in message, message
    assert f"{first.name} keeps serving" in message, message
    assert load.failures == [] and set(load.revisions) == {"rev-one"}, load.statuses
    assert [r.revision for r in rollout.releases(engine, host.target.slug)] == ["rev-one"]


def test_the_proxy_asks_nothing_of_an_idle_colour_and_logs_no_error(
    engine: Any, host: Host, app_images: dict[str, str]
) -> None:
    """After v1 then v2, green serves and blue is stopped, kept for rollback: for a few seconds
    of traffic the proxy's log (what `inv logs --service proxy` shows) has no error or warning,
    and no line names the idle colour: Caddy neither probes it nor sends it a request. (Active
    health checks probed it every second: a failed lookup each time, an error in caddy:2's log.)"""
    from cnd_toolkit.release import applogs

    target = host.target
    rollout.roll_out(engine, target, app_images["rev-one"], version="1", revision="rev-one")
    live = rollout.roll_out(engine, target, app_images["rev-two"], version="2", revision="rev-two")
    proxy_container = proxy.get(engine, target.proxy.name)
    assert proxy_container is not None
    idle = rollout.alias(target.slug, "blue" if live.colour == "green" else "green")
    assert proxy.live_now(proxy_container, rollout.site(target)) == [rollout.upstream_of(target, live.colour)]
    watched_from, since = time.monotonic(), time.time()
    with Load(host.url) as load:
        load.answered("rev-two", 100)
        while time.monotonic() < watched_from + 4:  # four of the old health checks' intervals
            load.answered("rev-two", 10)
    assert load.failures == [] and set(load.revisions) == {"rev-two"}, load.statuses
    raw = proxy_container.logs(stdout=True, stderr=True).decode("utf-8", "replace").splitlines()
    entries = [json.loads(line) for line in raw if line.startswith("{")]
    assert entries, raw[-5:]  # Caddy logged (its start, its reloads): the check reads a real log
    assert [e for e in entries if e.get("level") == "error"] == []
    # Its start may warn (no site yet, HTTP only); while it serves, nothing.
    assert [e for e in entries if e.get("ts", 0) >= since and e.get("level") != "info"] == []
    assert [line for line in raw if idle in line] == []
    # What `inv logs --service proxy` reads: the same lines, none of them an error.
    found = applogs.sources(backends.HostBackend(engine, target, lambda: None), "proxy")
    shown = applogs.read(found, None, 0)
    assert shown and [line for line in shown if (line.entry or {}).get("level") == "error"] == []


ROLL_OUT_IN_A_CHILD = """
import sys, json
sys.path.insert(0, {root!r})
from cnd_toolkit.docker.engine import connect
from cnd_toolkit.release import lock, proxy, rollout
spec = json.loads(sys.argv[1])
target = rollout.Target(spec["slug"], spec["url"], spec["port"], proxy.ProxySettings(*spec["proxy"]), 40, 1)
client = connect()
with lock.held(client, spec["slug"], revision="rev-two"):
    rollout.roll_out(client, target, spec["image"], version="2", revision="rev-two",
                     on_line=lambda line: print(line, flush=True))
"""


@pytest.mark.rollouts
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
@pytest.mark.parametrize("moment", ["health wait", "at the switch", "after the switch"])
def test_a_deploy_killed_mid_rollout_leaves_a_release_serving_and_a_releasable_lock(
    engine: Any, host: Host, app_images: dict[str, str], signum: int, moment: str, tmp_path: Path
) -> None:
    target = host.target
    rollout.roll_out(engine, target, app_images["rev-one"], version="1", revision="rev-one")
    spec = {
        "slug": target.slug, "url": target.backend_url, "port": target.container_port, "image": app_images["rev-two"],
        "proxy": [target.proxy.image, target.proxy.http_port, target.proxy.https_port, target.proxy.name],
    }  # fmt: skip
    code = ROLL_OUT_IN_A_CHILD.format(root=str(project.ROOT))
    moment_name = {"health wait": "rollout.health", "at the switch": "rollout.switch"}.get(moment, "rollout.drain")
    command = [sys.executable, "-c", code, json.dumps(spec)]
    with Load(host.url) as load, Child(command, hold=moment_name, folder=tmp_path) as child:
        load.answered("rev-one", 20)
        child.wait_held()  # the child is in that moment now, however busy the machine
        child.signal(signum)
        said = child.finish(timeout=60)
    assert load.failures == [], (load.statuses, said)
    holder = lock.holder(engine, target.slug)
    running = [r.revision for r in rollout.releases(engine, target.slug) if r.running]
    if signum == signal.SIGINT:
        assert holder is None  # released on the way out
        if moment in {"health wait", "at the switch"}:
            assert [r.revision for r in rollout.releases(engine, target.slug)] == ["rev-one"]  # the new one removed
            assert load.revisions["rev-one"] > 0
            proxy_container = proxy.get(engine, target.proxy.name)
            assert proxy_container is not None  # and the live file names the colour that serves
            live = rollout.live_release(engine, target.slug)
            assert live is not None
            assert proxy.live_now(proxy_container, rollout.site(target)) == [rollout.upstream_of(target, live.colour)]
        else:
            assert running == ["rev-two"], said  # the drain was finished before the interrupt went on
            assert "draining the old release first" in said, said
    else:
        assert holder is not None and f"pid {child.pid}" in holder.who  # says whose it was
        assert lock.release(engine, target.slug) is not None
        assert running, "nothing serves"
    assert httpx.get(host.url + "/api/version").status_code == 200
    # Whatever the kill left, the next deploy takes over cleanly.
    final = rollout.roll_out(engine, target, app_images["rev-two"], version="2", revision="rev-two")
    assert [r.revision for r in rollout.releases(engine, target.slug) if r.running] == ["rev-two"]
    assert final.revision == "rev-two"


ROLL_BACK_IN_A_CHILD = """
import sys, json
sys.path.insert(0, {root!r})
from cnd_toolkit.docker.engine import connect
from cnd_toolkit.release import proxy, rollout
spec = json.loads(sys.argv[1])
target = rollout.Target(spec["slug"], spec["url"], spec["port"], proxy.ProxySettings(*spec["proxy"]), 40, 1)
try:
    rollout.roll_back(connect(), target, on_line=lambda line: print(line, flush=True))
except rollout.SwitchedThenInterrupted as exc:
    print("switched then interrupted:", exc.release.revision, flush=True)
    raise
"""


@pytest.mark.rollouts
@pytest.mark.parametrize("moment", ["health wait", "drain"])
def test_ctrl_c_in_a_rollback_stops_what_it_started_or_says_what_it_switched_to(
    engine: Any, host: Host, app_images: dict[str, str], moment: str, tmp_path: Path
) -> None:
    """Before the switch, the release it started is stopped again and the live one serves alone;
    after it, the drain is finished and the release it went back to is named as serving."""
    target = host.target
    rollout.roll_out(engine, target, app_images["rev-one"], version="1", revision="rev-one")
    rollout.roll_out(engine, target, app_images["rev-two"], version="2", revision="rev-two")
    spec = {
        "slug": target.slug, "url": target.backend_url, "port": target.container_port,
        "proxy": [target.proxy.image, target.proxy.http_port, target.proxy.https_port, target.proxy.name],
    }  # fmt: skip
    command = [sys.executable, "-c", ROLL_BACK_IN_A_CHILD.format(root=str(project.ROOT)), json.dumps(spec)]
    hold_at = "rollback.health" if moment == "health wait" else "rollout.drain"
    with Load(host.url) as load, Child(command, hold=hold_at, folder=tmp_path) as child:
        load.answered("rev-two", 20)
        child.wait_held()
        child.signal(signal.SIGINT)
        said = child.finish(timeout=60)
    assert load.failures == [], (load.statuses, said)
    running = [r.revision for r in rollout.releases(engine, target.slug) if r.running]
    proxy_container = proxy.get(engine, target.proxy.name)
    assert proxy_container is not None
    if moment == "health wait":
        assert running == ["rev-two"], said  # what it started is stopped again, and kept
        assert {r.revision for r in rollout.releases(engine, target.slug)} == {"rev-one", "rev-two"}
    else:
        assert running == ["rev-one"] and "switched then interrupted: rev-one" in said, said
    live = rollout.live_release(engine, target.slug)
    assert live is not None and proxy.live_now(proxy_container, rollout.site(target)) == [
        rollout.upstream_of(target, live.colour)
    ]
    assert httpx.get(host.url + "/api/version").json()["revision"] == running[0]


def test_a_new_backend_url_is_applied_only_at_the_switch_and_undone_when_it_fails(
    engine: Any, host: Host, app_images: dict[str, str]
) -> None:
    """The proxy's site for the project changes (a new BACKEND_URL host) only once the new release
    is healthy, and goes back as it was when the release fails before or at the switch."""
    target = host.target
    rollout.roll_out(engine, target, app_images["rev-one"], version="1", revision="rev-one")
    proxy_container = proxy.get(engine, target.proxy.name)
    assert proxy_container is not None
    site_path = f"{caddy.SITES_DIR}/{caddy.site_file_name(target.slug)}"
    before = proxy.read_file(proxy_container, site_path)
    moved = dataclasses.replace(target, backend_url=target.backend_url.replace("127.0.0.1", "localhost"))

    def refuse(url: str, revision: str) -> None:
        raise rollout.RolloutFailed(f"{url} is not reachable from here (as a DNS record not yet made)")

    with Load(host.url) as load, pytest.raises(rollout.RolloutFailed, match="keeps serving"):
        rollout.roll_out(
            engine, moved, app_images["rev-two"], version="2", revision="rev-two",
            environment={"WEB_CONCURRENCY": "abc"},
        )  # fmt: skip
    assert proxy.read_file(proxy_container, site_path) == before  # never healthy: the site was never touched
    assert load.failures == [] and set(load.revisions) == {"rev-one"}, load.statuses
    # Healthy, but the new address does not answer: the move is undone, the old address serves.
    with pytest.raises(rollout.RolloutFailed, match=r"not reachable.*site was put back.*keeps serving"):
        rollout.roll_out(engine, moved, app_images["rev-two"], version="2", revision="rev-two", confirm_through=refuse)
    assert proxy.read_file(proxy_container, site_path) == before
    assert httpx.get(host.url + "/api/version").json()["revision"] == "rev-one"
    # Moved for real: the new host answers, the old one no longer does.
    rollout.roll_out(engine, moved, app_images["rev-two"], version="2", revision="rev-two")
    assert httpx.get(moved.backend_url + "/api/version").json()["revision"] == "rev-two"
    assert caddy.served_address(proxy.read_file(proxy_container, site_path) or "") == "http://localhost"


def test_maintenance_rollback_of_a_release_left_running_and_prune_by_revision(
    engine: Any, host: Host, app_images: dict[str, str]
) -> None:
    target = dataclasses.replace(host.target, keep_releases=1)
    first_image = app_images["rev-one"]
    rollout.roll_out(engine, target, first_image, version="1", revision="rev-one")
    proxy_container = proxy.get(engine, target.proxy.name)
    assert proxy_container is not None

    # A deploy during maintenance: the proxy answers 503, so the switch is not confirmed through it.
    proxy.set_maintenance(proxy_container, target.slug, True, 120)
    lines: list[str] = []
    rollout.roll_out(engine, target, app_images["rev-two"], version="2", revision="rev-two", on_line=lines.append)
    assert any("Maintenance is on" in line for line in lines), lines
    assert httpx.get(host.url + "/api/version").status_code == 503
    proxy.set_maintenance(proxy_container, target.slug, False, 120)
    assert httpx.get(host.url + "/api/version").json()["revision"] == "rev-two"

    # Re-deploys of one revision keep one stopped copy of each other revision, not KEEP_RELEASES copies.
    for _ in range(2):
        rollout.roll_out(engine, target, app_images["rev-two"], version="2", revision="rev-two")
    kept = [(r.revision, r.running) for r in rollout.releases(engine, target.slug)]
    assert sorted(kept) == [("rev-one", False), ("rev-two", True)], kept

    # A deploy killed after starting its colour can leave two releases running: rollback keeps
    # the older one running and drains the newer, with no failed request.
    [older] = [r for r in rollout.releases(engine, target.slug) if not r.running]
    live = rollout.live_release(engine, target.slug)
    assert live is not None
    if older.colour == live.colour:
        rollout.recolour(engine, older, target.slug, "green" if live.colour == "blue" else "blue")
    older.container.start()
    with Load(host.url) as load:
        load.answered("rev-two", 20)
        back = rollout.roll_back(engine, target, on_line=host.lines.append)
    assert back.revision == "rev-one" and back.name == older.name
    assert load.failures == [], load.statuses
    assert [r.revision for r in rollout.releases(engine, target.slug) if r.running] == ["rev-one"]
