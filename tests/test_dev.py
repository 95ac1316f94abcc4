"""`inv dev` end to end: the generated page in a real browser through the local edge, hot
reload, the no-Docker fallback, and `inv edge` / `inv dev --netlify`."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from tests.helpers import PROJECT_LABEL, as_a_terminal_starts_it, remove_project, unavailable
from tools.generated import free_port, render

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Dev:
    """`invoke dev` (or `edge`) as a user runs it, in the background, with its output kept."""

    def __init__(
        self, project: Path, *args: str, env: dict[str, str] | None = None, ignore_sigint: bool = False
    ) -> None:
        def preexec() -> None:
            os.setsid()  # its own group: a hung run is killed with everything it started
            as_a_terminal_starts_it()
            if ignore_sigint:  # as `cmd &` in a script, nohup or some CI runners start it
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["invoke", *args, "--port", str(self.port)],
            cwd=project,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=preexec,
        )
        self.output: str | None = None

    def wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited early:\n{self.stop()}")
            try:
                if httpx.get(self.url + "/api/version", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not serving after {timeout}s:\n{self.stop()}")

    def stop(self, signum: int = signal.SIGINT) -> str:
        """Signal it and wait for it to end (its group is killed if it hangs); its whole output.

        Once stopped, later calls (a ``finally`` after a test's own stop) return the same output."""
        if self.output is not None:
            return self.output
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            output, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            output, _ = self.proc.communicate()
        self.output = output
        return output


def remove_containers(engine: Any, slug: str) -> None:
    """The containers `inv dev` started from ``slug``'s image, even if it was killed before removing them."""
    # sparse: the list alone, no inspect per container, which fails for one removed meanwhile
    for container in engine.containers.list(
        all=True, sparse=True, filters={"label": "dev.copier-netlify-docker.managed"}
    ):
        if (container.attrs.get("Labels") or {}).get("dev.copier-netlify-docker.managed", "").startswith(f"{slug}:"):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def chromium_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


@pytest.fixture(scope="module")
def dev_project(tmp_path_factory: pytest.TempPathFactory, base_image: str, engine: Any) -> Iterator[Path]:
    """A project of its own (a unique slug: another run may share the engine); its images go at the end."""
    slug = f"cnd-dev-{uuid.uuid4().hex[:8]}"
    try:
        yield render(tmp_path_factory.mktemp("dev") / slug, {"project_slug": slug, "base_image": base_image})
    finally:
        remove_containers(engine, slug)
        remove_project(engine, slug)


@pytest.fixture(scope="module")
def dev(dev_project: Path, engine: Any) -> Iterator[Dev]:
    running = Dev(dev_project, "dev")
    try:
        running.wait_serving()
        yield running
    finally:
        running.stop()
        remove_containers(engine, dev_project.name)


@pytest.mark.docker
def test_browser_renders_api_data_through_the_edge(dev: Dev) -> None:
    if not chromium_available():
        unavailable("Chromium and Playwright are needed (apt-get install chromium; pip install playwright)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)  # the deadline of every wait below (they wait on the page's state)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(dev.url + "/", wait_until="networkidle")
            assert page.text_content("#greeting") == "Hello, world!"
            assert page.text_content("#version") == "dev"
            page.fill("#name", "Browser")
            page.click("button[type=submit]")
            # A locator wait, not wait_for_function: Playwright evaluates that with eval(), which the
            # page's CSP (script-src 'self') rightly refuses since Playwright 1.5x.
            expect(page.locator("#greeting")).to_have_text("Hello, Browser!", timeout=60_000)
            assert errors == []  # the CSP and the page's script agree
        finally:
            browser.close()


@pytest.mark.docker
def test_edge_applies_the_projects_rules_in_dev(dev: Dev) -> None:
    home = httpx.get(dev.url + "/", timeout=60)
    assert home.headers["X-Frame-Options"] == "DENY"  # netlify.toml [[headers]]
    api = httpx.get(dev.url + "/api/greeting", timeout=60)
    assert "X-Frame-Options" not in api.headers  # not on proxied responses
    assert api.headers["X-App-Version"] == "dev"
    missing = httpx.get(dev.url + "/no-such-page", timeout=60)
    assert missing.status_code == 404 and "Not found" in missing.text  # public/404.html


@pytest.mark.docker
def test_saved_change_in_api_is_served_without_restart(dev: Dev, dev_project: Path) -> None:
    routes = dev_project / "api" / "routes.py"
    original = routes.read_text()
    routes.write_text(original.replace('f"Hello, {name}!"', 'f"Howdy, {name}!"'))
    try:
        deadline = time.monotonic() + 120  # a poll's deadline: the reload is seen as soon as it is served
        while time.monotonic() < deadline:
            try:
                if httpx.get(dev.url + "/api/greeting", timeout=30).json().get("message") == "Howdy, world!":
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the change was not served within 120 s")
    finally:
        routes.write_text(original)


@pytest.mark.docker
@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["sigint", "started-with-sigint-ignored"])
def test_ctrl_c_stops_and_removes_everything(dev_project: Path, engine: Any, ignore_sigint: bool) -> None:
    # Only this project's containers (they carry its image's label): other work may share the engine.
    mine = {"label": f"{PROJECT_LABEL}={dev_project.name}"}
    before = {c.id for c in engine.containers.list(all=True, filters=mine)}
    running = Dev(dev_project, "dev", ignore_sigint=ignore_sigint)
    try:
        running.wait_serving()
        started = {c.id for c in engine.containers.list(all=True, filters=mine)} - before
        assert len(started) == 1, started
        output = running.stop()
    finally:
        running.stop()
        remove_containers(engine, dev_project.name)
    assert running.proc.returncode == 0, output
    assert "app  |" in output and "edge |" in output  # one combined, prefixed log
    assert "GET /api/version 200 proxy" in output
    assert "Stopped." in output
    assert not started & {c.id for c in engine.containers.list(all=True, filters=mine, sparse=True)}
    with pytest.raises(httpx.TransportError):
        httpx.get(running.url + "/", timeout=2)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_without_docker_falls_back_to_a_local_gunicorn(tmp_path: Path, signum: int) -> None:
    """On loopback only, and gone after Ctrl-C or a closed terminal (SIGHUP)."""
    project = render(tmp_path / "nodocker")
    running = Dev(project, "dev", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    try:
        running.wait_serving()
        assert httpx.get(running.url + "/api/greeting", timeout=60).json()["message"] == "Hello, world!"
        assert httpx.get(running.url + "/", timeout=60).headers["X-Frame-Options"] == "DENY"
    finally:
        output = running.stop(signum)
    assert output.count("Running the app as a local gunicorn process instead.") == 1
    assert "Stopped." in output
    [listening] = re.findall(r"Listening at: (http://\S+)", output)
    assert listening.startswith("http://127.0.0.1:")
    with pytest.raises(httpx.TransportError):
        httpx.get(listening + "/healthz", timeout=2)  # gunicorn stopped with it


def test_edge_alone_in_front_of_any_backend(tmp_path: Path) -> None:
    project = render(tmp_path / "edge-only")
    backend_port = free_port()
    env = {**os.environ, "PORT": str(backend_port), "METRICS_PORT": "0", "WEB_CONCURRENCY": "1"}  # no fixed 9101
    server = subprocess.Popen(
        [sys.executable, "serve.py"], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        running = Dev(project, "edge", "--backend", f"http://127.0.0.1:{backend_port}")
        try:
            running.wait_serving()
            assert httpx.get(running.url + "/api/greeting", timeout=60).json()["message"] == "Hello, world!"
        finally:
            output = running.stop()
        assert f"/api/* -> http://127.0.0.1:{backend_port}" in output
    finally:
        server.terminate()
        server.wait(30)


def test_dev_netlify_without_netlify_cli_says_how_to_install(tmp_path: Path) -> None:
    project = render(tmp_path / "no-cli", git=False)
    result = subprocess.run(
        ["invoke", "dev", "--netlify"],
        cwd=project,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "npm install -g netlify-cli" in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_with_the_real_netlify_dev(tmp_path: Path, netlify_cli: str) -> None:
    cli = netlify_cli
    project = render(tmp_path / "with-netlify")
    redirects_before = (project / "public" / "_redirects").read_text()
    path = f"{Path(cli).parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    running = Dev(project, "dev", "--netlify", "--no-docker", env={"PATH": path, "BROWSER": "none"})
    try:
        running.wait_serving()
        response = httpx.get(running.url + "/api/greeting", params={"name": "Netlify"}, timeout=60)
        assert response.json()["message"] == "Hello, Netlify!"
        assert httpx.get(running.url + "/", timeout=60).headers.get("server") == "Netlify"
    finally:
        output = running.stop()
    assert "Stopped." in output
    assert (project / "public" / "_redirects").read_text() == redirects_before  # restored


@pytest.mark.parametrize("task", [["edge", "--backend", "http://127.0.0.1:9"], ["dev", "--no-docker"]])
def test_a_config_error_stops_the_edge_in_one_line(tmp_path: Path, task: list[str]) -> None:
    """What would make the edge misbehave at request time stops it at start-up, naming file:line."""
    project = render(tmp_path / "bad-config", git=False)
    (project / "public" / "_redirects").write_text("/ok /fine 301\n/:id/:id /x/:id 301\n")
    result = subprocess.run(
        ["invoke", *task, "--port", str(free_port())],
        cwd=project,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: public/_redirects:2: placeholder :id is used twice in '/:id/:id'; rename one (run `inv check`)"
    ]
