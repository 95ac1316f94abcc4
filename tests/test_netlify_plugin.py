"""The generated project's Netlify build plugin (netlify/plugins/backend-ready) under the real
`netlify build --offline`: a build whose deploy context's BACKEND_URL does not answer /readyz
fails, naming the URL and what it answered, so Netlify never publishes that front end."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tools.generated import free_port


@pytest.fixture
def site(project: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "site"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".git", ".venv", ".nox"))
    return copy


def configure(site: Path, backend: str, *, skip: bool = False, attempts: int = 1) -> None:
    """Point the build's BACKEND_URL at ``backend`` (netlify.toml wins over the shell's environment)."""
    path = site / "netlify.toml"
    text = path.read_text()
    text, count = re.subn(r'(?m)^  BACKEND_URL = ".*"$', f'  BACKEND_URL = "{backend}"', text)
    assert count == 1
    if skip:
        text = text.replace("[build.environment]\n", '[build.environment]\n  SKIP_BACKEND_CHECK = "true"\n', 1)
    marker = '  package = "./netlify/plugins/backend-ready"\n'
    assert marker in text
    # The longest per-attempt timeout the plugin takes: no test here waits it out (a live backend
    # answers, a dead one refuses at once), and a busy machine must not make a live one "down".
    text = text.replace(marker, marker + f"  [plugins.inputs]\n    attempts = {attempts}\n    timeout = 60\n", 1)
    path.write_text(text)


def build(netlify_cli: str, site: Path, extra: dict[str, str] | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"BACKEND_URL", "SKIP_BACKEND_CHECK"}}
    result = subprocess.run(
        [netlify_cli, "build", "--offline"],
        cwd=site,
        env={**env, "NETLIFY_TELEMETRY_DISABLED": "1", "CI": "true", **(extra or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def live_app(project: Path, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The rendered project's own app under gunicorn (python serve.py, as the image runs it), on
    HTTPS with a certificate of its own (the build step takes https origins only; Node trusts it
    through NODE_EXTRA_CA_CERTS). Returns the origin and the environment the build needs."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test backend's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    log = (tmp_path / "app.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "serve.py", "--bind", f"127.0.0.1:{port}", "--certfile", str(cert), "--keyfile", str(key)],
        cwd=project,
        env={**os.environ, "PORT": str(port), "METRICS_PORT": "0", "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"https://localhost:{port}"
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=30, verify=trusted).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "app.log").read_text()
            time.sleep(0.1)
        yield url, {"NODE_EXTRA_CA_CERTS": str(cert)}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()


class Answering:
    """A backend whose /readyz answers ``status`` (Caddy's maintenance 503, an app not ready)."""

    def __init__(self, status: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # the port too


class Endless:
    """A backend whose /readyz answers 200 and then sends a body that never ends."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()  # no Content-Length: the body lasts until the connection closes
                try:
                    while True:
                        self.wfile.write(b"0" * 65536)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_200_with_an_endless_body_is_no_answer(netlify_cli: str, site: Path) -> None:
    backend = Endless()
    try:
        configure(site, backend.url)
        code, log = build(netlify_cli, site)
    finally:
        backend.server.shutdown()
        backend.server.server_close()
    assert code != 0
    assert f"backend-ready: {backend.url}/readyz answered with a body of more than 64 KB" in log, log


def test_a_live_backend_lets_the_build_through(
    netlify_cli: str, site: Path, live_app: tuple[str, dict[str, str]]
) -> None:
    url, env = live_app
    configure(site, url)
    code, log = build(netlify_cli, site, env)
    assert code == 0, log
    assert f"backend-ready: {url}/readyz answered 200" in log
    assert f"{url}/api/:splat" in (site / "public" / "_redirects").read_text()  # the build command ran after


def test_a_dead_backend_fails_the_build_naming_the_url(netlify_cli: str, site: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    configure(site, dead, attempts=2)
    code, log = build(netlify_cli, site)
    assert code != 0
    assert f"backend-ready: {dead}/readyz could not be reached (ECONNREFUSED) (2 attempts)" in log, log
    assert "Netlify will not publish a front end whose API is down" in log
    assert "SKIP_BACKEND_CHECK=true" in log  # what to do for planned maintenance


@pytest.mark.parametrize("status", [503, 404, 301, 500])
def test_a_backend_that_is_not_ready_fails_the_build_naming_its_status(
    netlify_cli: str, site: Path, status: int
) -> None:
    backend = Answering(status)
    try:
        configure(site, backend.url)
        code, log = build(netlify_cli, site)
    finally:
        backend.close()
    assert code != 0
    assert re.search(rf"backend-ready: {re.escape(backend.url)}/readyz answered {status}\b", log), log


def test_planned_maintenance_skips_the_check_and_says_so(netlify_cli: str, site: Path) -> None:
    dead = f"https://localhost:{free_port()}"  # the build step itself takes https origins only
    configure(site, dead, skip=True)
    code, log = build(netlify_cli, site)
    assert code == 0, log
    assert f"SKIP_BACKEND_CHECK=true: {dead}/readyz not checked (planned maintenance)" in log


@pytest.mark.parametrize(
    ("backend", "problem"),
    [
        ("javascript:alert(1)", "is not an http(s) URL"),
        ("ftp://127.0.0.1/", "is not an http(s) URL"),
        ("not-a-url", "is not an http(s) URL"),
        ("not a url", "has whitespace, a control or a non-ASCII character in it"),  # as the build step refuses it
        ("https://api.\u212aelvin.dev", "has whitespace, a control or a non-ASCII character in it"),  # K is k to URL
        ("http://api.acme.dev", "is not https"),  # the build step would refuse it: so does the check
        ("https://api.acme.dev/v1", "has a path, query or fragment"),
        ("https://api.acme.dev/?x=1", "has a path, query or fragment"),
        ("https://deploy:hunter2-secret@api.acme.dev", "has a user or password in it"),
    ],
)
def test_a_backend_url_the_build_step_would_refuse_fails_before_any_request(
    netlify_cli: str, site: Path, backend: str, problem: str
) -> None:
    configure(site, backend)
    code, log = build(netlify_cli, site)
    assert code != 0
    assert problem in log, log
    assert "hunter2" not in log  # a password in the URL is never printed


@pytest.mark.parametrize("skip", [False, True])
def test_the_placeholder_host_fails_even_when_the_check_is_skipped(netlify_cli: str, site: Path, skip: bool) -> None:
    configure(site, "https://api.example.com", skip=skip)
    code, log = build(netlify_cli, site)
    assert code != 0
    assert "is a documentation host (netlify.toml's placeholder)" in log, log
