"""Two rendered projects on one Docker host, deployed with their own `inv` tasks, under load on both.

One shared Caddy; each project owns its site block (keyed by its BACKEND_URL host) and network.
Real parts throughout: Copier renders, `inv deploy` / `rollback` / `maintenance` / `status` /
`releases` / `remove` as users type them, a real engine, Debian's docker-registry, Caddy, and
each project's strict local Netlify API (tools/deploy_stage.py). Loopback clients ask both APIs
through the proxy the whole time; a request that fails is a failure of the test, whichever
project was being worked on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
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

from tests.helpers import as_a_terminal_starts_it, proxy_image, remove_project, unavailable
from tools.generated import REPO, free_port, render, run_in

TOKEN = "nfp_shared_host_test_0123456789abcdef"


class Load:
    """Keep-alive clients asking ``/api/version`` until stopped; every answer counted by outcome.

    Like a browser (RFC 9110, 9.2.2), a client sends a GET again, once, when the server closed a
    kept-alive connection before any byte of the answer: Caddy does that to idle connections on
    every reload. Those are counted in ``retried``; anything else that is not a 200 is a failure.
    """

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self.outcomes: Counter[str] = Counter()
        self.revisions: Counter[str] = Counter()
        self.retried = 0
        self.errors: list[str] = []  # the first few, with when they happened
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _ask(self, http: httpx.Client) -> tuple[str, str]:
        for attempt in (1, 2):
            try:
                answer = http.get(f"{self.url}/api/version")
                revision = answer.json().get("revision", "") if answer.status_code == 200 else ""
                return str(answer.status_code), revision
            except httpx.RemoteProtocolError as exc:
                if attempt == 1 and "without sending a response" in str(exc):
                    with self._lock:
                        self.retried += 1
                    continue
                return self._error(exc), ""
            except (httpx.HTTPError, ValueError) as exc:
                return self._error(exc), ""
        raise AssertionError("unreachable")

    def _error(self, exc: Exception) -> str:
        with self._lock:
            if len(self.errors) < 5:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {exc!r}")
        return type(exc).__name__

    def _run(self) -> None:
        # A generous timeout (a busy machine is slow, not failing); a request that hangs past it
        # is counted as failed, and the test then names it.
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                outcome, revision = self._ask(http)
                with self._lock:
                    self.outcomes[outcome] += 1
                    if revision:
                        self.revisions[revision] += 1
                time.sleep(0.005)

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        with self._lock:
            return Counter(self.outcomes), Counter(self.revisions)

    def wait_answered(self, more: int, timeout: float = 120) -> None:
        """Until ``more`` further requests have been answered 200 (it keeps serving, seen, not assumed)."""
        target = self.snapshot()[0]["200"] + more
        deadline = time.monotonic() + timeout
        while self.snapshot()[0]["200"] < target:
            assert time.monotonic() < deadline, f"fewer than {more} answers in {timeout:.0f} s: {self.snapshot()}"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)

    def failures(self) -> dict[str, int]:
        """Answers other than 200 so far, and any request sent again since the last call."""
        with self._lock:
            found = {k: v for k, v in self.outcomes.items() if k != "200"}
            if self.retried:
                found["sent again after an idle connection closed"] = self.retried
            self.retried = 0
            return found


@dataclass
class Project:
    path: Path
    slug: str
    env: dict[str, str]
    load: Load | None = None
    revisions: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.env["BACKEND_URL"]

    def inv(
        self, *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environ = {**self.env, **(env or {})}
        done = run_in(self.path, sys.executable, "-m", "invoke", *args, env=environ, check=False, capture=True,
                      timeout=timeout)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"inv {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def commit_change(self, text: str) -> str:
        (self.path / "public" / "change.txt").write_text(text)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
        subprocess.run([*git, "add", "-A"], cwd=self.path, check=True)
        subprocess.run([*git, "commit", "-qm", text], cwd=self.path, check=True)
        return head(self.path)


def head(path: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, check=True, capture_output=True, text=True
    ).stdout.strip()


def live_revision(url: str) -> str:
    return str(httpx.get(f"{url}/api/version", timeout=60).json()["revision"])


@pytest.fixture  # the test's own: what its deploys made goes before the test ends (tests/isolation.py)
def host(engine: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Project]]:
    if not any(Path(p, "docker-registry").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        unavailable("docker-registry is not installed (apt-get install docker-registry)")
    suffix = uuid.uuid4().hex[:6]
    slugs = {"orders": f"orders-{suffix}", "billing": f"billing-{suffix}"}
    paths = {
        name: render(tmp_path_factory.mktemp(name) / slug, {"project_slug": slug, "base_image": base_image})
        for name, slug in slugs.items()
    }
    stage_command = [sys.executable, str(REPO / "tools" / "deploy_stage.py"), str(paths["orders"]), TOKEN]
    stage = subprocess.Popen(
        [*stage_command, "site-orders", "site-billing"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    projects: dict[str, Project] = {}
    port, proxy_name = free_port(), f"cnd-proxy-shared-{suffix}"
    try:
        assert stage.stdout is not None
        outside = json.loads(stage.stdout.readline())
        if "error" in outside:
            unavailable(outside["error"])
        common = {
            "BASE_IMAGE": base_image,
            "PROXY_NAME": proxy_name,
            "PROXY_HTTP_PORT": str(port),
            "PROXY_HTTPS_PORT": str(free_port()),
            "PROXY_IMAGE": proxy_image(engine, base_image),
            "KEEP_RELEASES": "2",
            "HEALTH_TIMEOUT": "60",
            "NETLIFY_AUTH_TOKEN": TOKEN,
            "NETLIFY_API_URL": outside["netlify_api_url"],
        }
        hosts = {"orders": f"http://127.0.0.1:{port}", "billing": f"http://localhost:{port}"}  # two hosts, one proxy
        for name, slug in slugs.items():
            projects[name] = Project(
                paths[name],
                slug,
                {
                    **common,
                    "IMAGE": f"{outside['registry']}/acme/{slug}",
                    "BACKEND_URL": hosts[name],
                    "NETLIFY_SITE_ID": f"site-{name}",
                },
            )
        yield projects
    finally:
        try:
            for project in projects.values():
                if project.load is not None:
                    project.load.stop()
                project.inv("remove", "--yes", check=False)
            for found in engine.containers.list(all=True, filters={"name": proxy_name}):
                found.remove(force=True)
            for volume in engine.volumes.list(filters={"name": proxy_name}):
                volume.remove(force=True)
            for network in engine.networks.list(names=[f"0-{proxy_name}"]):
                network.remove()
            for slug in slugs.values():
                remove_project(engine, slug)  # the images the deploys built and tagged
        finally:  # the registry and the Netlify API go, whatever the engine said
            assert stage.stdin is not None
            stage.stdin.close()
            try:
                stage.wait(30)
            except subprocess.TimeoutExpired:
                stage.kill()
                stage.wait(30)


def published_deploy(project: Project) -> str:
    site = httpx.get(
        f"{project.env['NETLIFY_API_URL']}/sites/{project.env['NETLIFY_SITE_ID']}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    ).json()
    return str((site.get("published_deploy") or {}).get("id") or "")


def test_two_projects_share_a_host_and_never_drop_each_others_requests(
    host: dict[str, Project], engine: Any, tmp_path: Path
) -> None:
    orders, billing = host["orders"], host["billing"]
    proxy_name = orders.env["PROXY_NAME"]

    # orders' first deploy creates the shared proxy; then it serves under load.
    first = orders.inv("deploy")
    assert "Deploy phases" in first.stderr + first.stdout
    v1 = head(orders.path)
    assert live_revision(orders.url) == v1
    netlify_v1 = published_deploy(orders)
    orders.load = Load(orders.url).start()

    # A project that disagrees with the shared proxy's ports is stopped before it builds anything.
    wrong = billing.inv("deploy", "--backend-only", check=False, env={"PROXY_HTTP_PORT": str(free_port())})
    assert wrong.returncode == 1 and "PROXY_HTTP_PORT=" in wrong.stderr and "Building" not in wrong.stderr, wrong.stderr

    # billing's first deploy adds its site to the same proxy: one Caddy reload, the only one here.
    # That closes idle keep-alive connections (orders' too): at most one per connection is sent again.
    orders.load.failures()
    billing.inv("deploy")
    assert live_revision(billing.url) == head(billing.path)
    assert published_deploy(billing) and published_deploy(orders) != published_deploy(billing)
    reload_cost = orders.load.failures()
    assert set(reload_cost) <= {"sent again after an idle connection closed"}, (reload_cost, orders.load.errors)
    assert sum(reload_cost.values()) <= 4, reload_cost  # its 4 connections, each at most once
    billing.load = Load(billing.url).start()

    # orders v2, while a second deploy of orders is refused (naming the holder); Ctrl-C (SIGINT)
    # lands after the switch, while the old colour drains: the deploy holds there (cnd_toolkit/hold.py)
    # until the signal comes, so it is in the drain however fast or slow the machine is.
    v2 = orders.commit_change("v2")
    holds = tmp_path / "holds"
    holds.mkdir()
    hold = {"CND_HOLD_AT": "rollout.drain", "CND_HOLD_DIR": str(holds)}
    running = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy"], cwd=orders.path, env={**os.environ, **orders.env, **hold},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=as_a_terminal_starts_it,
    )  # fmt: skip
    assert running.stdout is not None
    seen: list[str] = []
    refused = None
    try:
        for line in running.stdout:
            seen.append(line)
            if line.startswith("Deploy lock taken") and refused is None:
                refused = orders.inv("deploy", check=False)  # the deploy cannot end before it: it holds
            if line.startswith("Draining"):
                deadline = time.monotonic() + 120
                while not (holds / "rollout.drain.held").exists():
                    assert running.poll() is None and time.monotonic() < deadline, "".join(seen)
                    time.sleep(0.05)
                running.send_signal(signal.SIGINT)
                break
        rest, _ = running.communicate(timeout=300)
        seen.append(rest)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait(30)
    assert refused is not None and refused.returncode == 1, seen
    assert "holds the lock" in refused.stderr and "pid " in refused.stderr, refused.stderr
    assert running.returncode == 130, "".join(seen)
    assert "Deploy interrupted" in "".join(seen)
    assert live_revision(orders.url) == v2
    lock = orders.inv("lock")
    assert "free" in lock.stdout + lock.stderr
    _, revisions = orders.load.snapshot()
    assert revisions[v1] > 0 and revisions[v2] > 0, revisions  # the switch was seen
    assert orders.load.failures() == {} and billing.load.failures() == {}

    # The next deploy of orders finishes the job the interrupted one left.
    orders.inv("deploy")
    assert live_revision(orders.url) == v2
    status = orders.inv("status").stdout
    assert "revision " + v2[:12] in status and "health healthy" in status and "Deploy lock: free" in status, status

    # billing in maintenance: a JSON 503 with Retry-After for billing only; no reload.
    billing.load.stop()
    assert billing.load.failures() == {}
    billing.inv("maintenance", "on")
    answer = httpx.get(f"{billing.url}/api/greeting", timeout=60)
    assert answer.status_code == 503 and answer.headers["Retry-After"].isdigit()
    assert answer.headers["Content-Type"] == "application/json" and answer.json()["error"]["code"] == "maintenance"
    assert "Maintenance is on" in billing.inv("status").stdout
    assert live_revision(orders.url) == v2
    billing.inv("maintenance", "off")
    assert httpx.get(f"{billing.url}/api/greeting", timeout=60).status_code == 200
    billing.load = Load(billing.url).start()

    # orders rolls back to v1 (both halves) under load on both.
    back = orders.inv("rollback")
    assert "Rolled back" in back.stderr
    assert live_revision(orders.url) == v1 and published_deploy(orders) == netlify_v1
    releases = orders.inv("releases").stdout
    assert v1[:12] in releases and v2[:12] in releases and "live" in releases, releases
    assert orders.load.failures() == {} and billing.load.failures() == {}

    # orders leaves the host; billing keeps serving without a dropped request.
    orders.load.stop()
    dry_run = orders.inv("remove", "--proxy")  # without --yes: a listing, exit 0
    listed = [line.strip() for line in dry_run.stdout.splitlines() if line.startswith("  ")]
    assert "Run `inv remove --yes --proxy` to do it." in dry_run.stdout, dry_run.stdout
    assert any(line.startswith("release container ") for line in listed), listed
    assert f"(not the shared proxy {proxy_name}: it serves {billing.slug} too)" in listed, listed
    assert live_revision(orders.url) == v1  # nothing was removed without --yes
    before, _ = billing.load.snapshot()
    refused = orders.inv("remove", "--yes", "--proxy", check=False)  # the project goes, the proxy stays
    assert refused.returncode == 1, refused.stderr
    assert f"error: the shared proxy {proxy_name} stays: it serves {billing.slug} too" in refused.stderr, refused.stderr
    removed = next(line for line in refused.stderr.splitlines() if line.startswith("Removed "))
    assert removed == "Removed " + ", ".join(line for line in listed if not line.startswith("(")), (removed, listed)
    assert engine.containers.get(proxy_name).status == "running"
    during, _ = billing.load.snapshot()
    assert during["200"] > before["200"], during  # billing answered while orders was being removed
    billing.load.wait_answered(50)  # ... and goes on answering after it left
    billing.load.stop()
    outcomes, _ = billing.load.snapshot()
    assert billing.load.failures() == {}, outcomes
    assert "nothing deployed" in orders.inv("status").stdout
    assert live_revision(billing.url) == head(billing.path)

    # The last project takes the shared proxy with it: container, network and volumes.
    billing.inv("remove", "--yes", "--proxy")
    assert not engine.containers.list(all=True, filters={"name": proxy_name})
    assert not engine.networks.list(names=[f"0-{proxy_name}"])
    assert not [v for v in engine.volumes.list() if v.name.startswith(f"{proxy_name}-")]
