"""The generated project's tasks as a new user meets them: real `inv`, a real engine, real images.

Stopping (signals, even when started with SIGINT ignored; in-flight requests drain), rebuilding
when the source changed, a failed start in one line, an unreachable engine in whole words, and
output that stays whole and free of escape codes when redirected.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tools.generated import free_port, render

MANAGED_LABEL = "dev.copier-netlify-docker.managed"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def remove_containers(engine: Any, slug: str) -> None:
    """Every container the tasks started from the project's images, whatever happened to `inv`."""
    for container in engine.containers.list(all=True, filters={"label": MANAGED_LABEL}):
        if container.labels.get(MANAGED_LABEL, "").startswith(f"{slug}:"):
            container.remove(force=True)


class Inv:
    """`invoke ARGS` in its own process group, output kept; killed with its group if it hangs."""

    def __init__(self, project: Path, *args: str, env: dict[str, str] | None = None, ignore_sigint: bool = False):
        def preexec() -> None:
            os.setsid()
            if ignore_sigint:  # as `cmd &` in a script, nohup or some CI runners start it
                signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.proc = subprocess.Popen(
            ["invoke", *args],
            cwd=project,
            env={**ENV, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=preexec,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output)
            if found:
                return found
            if self.proc.poll() is not None:
                self._reader.join(5)
                found = re.search(pattern, self.output)
                if found:
                    return found
                raise AssertionError(f"exited ({self.proc.returncode}) without {pattern!r}:\n{self.output}")
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} after {timeout}s:\n{self.output}")

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout}s:\n{self.output}") from None
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def tool_project(tmp_path_factory: pytest.TempPathFactory, base_image: str, engine: Any) -> Iterator[Path]:
    slug = f"cnd-tool-{uuid.uuid4().hex[:8]}"
    project = render(tmp_path_factory.mktemp("tool") / slug, {"project_slug": slug, "base_image": base_image})
    build = subprocess.run(["invoke", "build"], cwd=project, env=ENV, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    yield project
    remove_containers(engine, slug)
    for image in engine.images.list(name=slug):
        for tag in image.tags:
            engine.images.remove(tag, force=True)


@pytest.fixture
def inv(tool_project: Path, engine: Any) -> Iterator[list[Inv]]:
    """Runs of `inv` that are killed (their whole group) and whose containers go, however a test ends."""
    started: list[Inv] = []
    try:
        yield started
    finally:
        for run in started:
            run.kill()
        remove_containers(engine, tool_project.name)


def running_containers(engine: Any, slug: str) -> list[Any]:
    found = engine.containers.list(all=True, filters={"label": MANAGED_LABEL})
    return [c for c in found if c.labels.get(MANAGED_LABEL, "").startswith(f"{slug}:")]


@pytest.mark.docker
@pytest.mark.parametrize(
    ("ignore_sigint", "signum"),
    [(True, signal.SIGINT), (False, signal.SIGINT), (True, signal.SIGTERM), (True, signal.SIGHUP)],
    ids=["sigint-ignored-then-sigint", "sigint", "sigint-ignored-then-sigterm", "sigint-ignored-then-sighup"],
)
def test_run_stops_and_removes_its_container_on_a_signal(
    tool_project: Path, engine: Any, inv: list[Inv], ignore_sigint: bool, signum: int
) -> None:
    run = Inv(tool_project, "run", "--no-build", ignore_sigint=ignore_sigint)
    inv.append(run)
    url = run.wait_for(r"Healthy in [\d.]+s: (http://\S+)")[1]
    assert httpx.get(url + "/healthz").status_code == 200
    assert len(running_containers(engine, tool_project.name)) == 1
    run.proc.send_signal(signum)
    assert run.finish(60) == 0, run.output
    assert running_containers(engine, tool_project.name) == []
    assert "Removed container" in run.output and "Traceback" not in run.output


def slow_post(url: str, seconds: float, result: dict[str, Any]) -> None:
    """POST /api/echo with its body sent a byte at a time over ``seconds``: a request in flight."""
    body = b'{"slow": "' + b"x" * 24 + b'"}'
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=seconds + 30) as sock:
            head = (
                f"POST /api/echo HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            sock.sendall(head.encode())
            for byte in body:
                sock.sendall(bytes([byte]))
                time.sleep(seconds / len(body))
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        result["response"] = response.decode("utf-8", "replace")
    except OSError as exc:
        result["error"] = repr(exc)
    result["seconds"] = time.monotonic() - started


@pytest.mark.docker
def test_ctrl_c_lets_a_slow_request_finish(tool_project: Path, engine: Any, inv: list[Inv]) -> None:
    """A 13 s request survives Ctrl-C: `docker stop`'s default 10 s would have killed it."""
    run = Inv(tool_project, "run", "--no-build")
    inv.append(run)
    url = run.wait_for(r"Healthy in [\d.]+s: (http://\S+)")[1]
    [container] = running_containers(engine, tool_project.name)
    assert container.attrs["Config"]["StopTimeout"] == 25  # GUNICORN_GRACEFUL_TIMEOUT (20) + 5
    result: dict[str, Any] = {}
    client = threading.Thread(target=slow_post, args=(url, 13, result))
    client.start()
    time.sleep(1.5)
    stopping = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    client.join(60)
    assert run.finish(60) == 0, run.output
    assert "response" in result, result
    assert result["response"].startswith("HTTP/1.1 200"), result["response"]
    assert '"slow"' in result["response"]
    assert result["seconds"] >= 12
    assert time.monotonic() - stopping >= 10  # it waited for the request, past docker's 10 s default
    assert running_containers(engine, tool_project.name) == []


@pytest.mark.docker
def test_a_second_ctrl_c_stops_at_once(tool_project: Path, engine: Any, inv: list[Inv]) -> None:
    run = Inv(tool_project, "run", "--no-build", env={"GUNICORN_GRACEFUL_TIMEOUT": "60"})
    inv.append(run)
    url = run.wait_for(r"Healthy in [\d.]+s: (http://\S+)")[1]
    [container] = running_containers(engine, tool_project.name)
    assert container.attrs["Config"]["StopTimeout"] == 65  # the container's own value, passed from the shell
    result: dict[str, Any] = {}
    threading.Thread(target=slow_post, args=(url, 40, result), daemon=True).start()
    time.sleep(1.5)
    run.proc.send_signal(signal.SIGINT)
    run.wait_for(r"in-flight requests get up to 60s")
    time.sleep(1)
    started = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    run.finish(30)
    assert time.monotonic() - started < 15
    assert running_containers(engine, tool_project.name) == []


@pytest.mark.docker
def test_run_rebuilds_when_the_source_changed(tool_project: Path, inv: list[Inv]) -> None:
    def served_message(*args: str) -> tuple[str, str]:
        run = Inv(tool_project, "run", *args)
        inv.append(run)
        url = run.wait_for(r"Healthy in [\d.]+s: (http://\S+)")[1]
        message = httpx.get(url + "/api/greeting").json()["message"]
        run.proc.send_signal(signal.SIGINT)
        run.finish(60)
        return message, run.output

    message, output = served_message()
    assert message == "Hello, world!" and "Building" not in output  # built by the fixture: current
    routes = tool_project / "api" / "routes.py"
    original = routes.read_text()
    try:
        routes.write_text(original.replace('f"Hello, {name}!"', 'f"Howdy, {name}!"'))
        message, output = served_message("--no-build")
        assert message == "Hello, world!" and "Building" not in output  # --no-build: the image as it is
        message, output = served_message()
        assert "the source changed since" in output and "Building" in output
        assert message == "Howdy, world!"
        os.utime(routes)  # touched, not changed
        message, output = served_message()
        assert message == "Howdy, world!" and "Building" not in output
    finally:
        routes.write_text(original)


# What breaks a start, and the one line each must end in (file:line or the variable's name).
START_FAILURES = [
    ("syntax", {"api/routes.py": "\ndef broken(:\n"}, {}, r"api/routes\.py:\d+: SyntaxError"),
    ("name", {"api/routes.py": "\nundefined_name + 1\n"}, {}, r"api/routes\.py:\d+: NameError: name 'undefined_name'"),
    ("app-var", {}, {"APP_LOG_LEVEL": "loud"}, r"APP_LOG_LEVEL='loud'"),
    ("app-int", {}, {"APP_MAX_REQUEST_BYTES": "lots"}, r"APP_MAX_REQUEST_BYTES='lots'"),
    ("threads", {}, {"GUNICORN_THREADS": "0"}, r"GUNICORN_THREADS=0"),
    ("workers", {}, {"WEB_CONCURRENCY": "many"}, r"WEB_CONCURRENCY='many'"),
    ("graceful", {}, {"GUNICORN_GRACEFUL_TIMEOUT": "abc"}, r"GUNICORN_GRACEFUL_TIMEOUT='abc' is not a whole number"),
    ("graceful-range", {}, {"GUNICORN_GRACEFUL_TIMEOUT": "0"}, r"GUNICORN_GRACEFUL_TIMEOUT=0 is out of range"),
]


@pytest.mark.docker
@pytest.mark.parametrize(("case", "appends", "env", "expected"), START_FAILURES, ids=[c[0] for c in START_FAILURES])
def test_a_failed_start_is_one_clear_error(
    tool_project: Path, engine: Any, case: str, appends: dict[str, str], env: dict[str, str], expected: str
) -> None:
    originals = {name: (tool_project / name).read_text() for name in appends}
    try:
        for name, text in appends.items():
            (tool_project / name).write_text(originals[name] + text)
        result = subprocess.run(
            ["invoke", "run"], cwd=tool_project, env={**ENV, **env}, capture_output=True, text=True, timeout=300
        )
    finally:
        for name, text in originals.items():
            (tool_project / name).write_text(text)
        remove_containers(engine, tool_project.name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(expected, last), result.stderr
    after_build = result.stderr.split("Built ", 1)[-1]
    assert len(after_build.splitlines()) <= 25, result.stderr  # the cause once, a short tail
    assert after_build.count(re.search(expected, last)[0]) <= 2  # type: ignore[index]
    assert running_containers(engine, tool_project.name) == []


@pytest.mark.parametrize("case", ["closed-port", "missing-socket", "not-a-socket", "directory"])
def test_an_unreachable_engine_is_named_in_whole_words(tmp_path: Path, case: str) -> None:
    project = render(tmp_path / "no-engine", git=False)
    (tmp_path / "file").write_text("plain file")
    (tmp_path / "dir").mkdir()
    host, reason = {
        "closed-port": (f"tcp://127.0.0.1:{free_port()}", "connection refused (nothing listens there)"),
        "missing-socket": (f"unix://{tmp_path}/none.sock", f"no such socket: {tmp_path}/none.sock"),
        "not-a-socket": (f"unix://{tmp_path}/file", f"{tmp_path}/file is not a socket"),
        "directory": (f"unix://{tmp_path}/dir", f"{tmp_path}/dir is a directory, not a socket"),
    }[case]
    result = subprocess.run(
        ["invoke", "run"], cwd=project, env={**ENV, "DOCKER_HOST": host}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: No Docker engine answers at {host}: {reason}; start one")
    assert line.endswith("or point DOCKER_HOST at a reachable engine.")


@pytest.mark.docker
def test_redirected_output_is_whole_lines_without_escape_codes(tmp_path: Path, base_image: str, engine: Any) -> None:
    """A build step that writes to stderr is coloured by the builder; a file or CI log gets plain text,
    and long lines (commands, URLs) are not cut at 80 columns."""
    slug = f"cnd-out-{uuid.uuid4().hex[:8]}"
    project = render(tmp_path / slug, {"project_slug": slug, "base_image": base_image}, git=False)
    dockerfile = project / "Dockerfile"
    long_word = "https://example.com/" + "a" * 150
    dockerfile.write_text(dockerfile.read_text() + f'\nRUN echo "warning: {long_word} \\033]0;title\\007" >&2\n')
    try:
        result = subprocess.run(["invoke", "build"], cwd=project, env=ENV, capture_output=True, timeout=600)
        assert result.returncode == 0, result.stderr.decode()
        output = (result.stdout + result.stderr).decode()
        assert f"warning: {long_word}" in output  # whole, on one line
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", output), repr(
            [line for line in output.splitlines() if re.search("[\x00-\x08\x0b-\x1f\x7f]", line)][:3]
        )
        assert re.search(r"^Built \w+ as \S+, \S+ in [\d.]+s$", output, re.MULTILINE)
    finally:
        for image in engine.images.list(name=slug):
            for tag in image.tags:
                engine.images.remove(tag, force=True)
