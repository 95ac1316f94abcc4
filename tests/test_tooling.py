"""The generated project's tasks as a new user meets them: real `inv`, a real engine, real images.

Stopping (signals, even when started with SIGINT ignored; in-flight requests drain), rebuilding
when the source changed, a failed start in one line, an unreachable engine in whole words, and
output that stays whole and free of escape codes when redirected.
"""

from __future__ import annotations

import contextlib
import os
import random
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

import docker.errors
import httpx
import pytest

from tests.helpers import as_a_terminal_starts_it, remove_project, unavailable
from tools.generated import free_port, render

MANAGED_LABEL = "dev.copier-netlify-docker.managed"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def remove_containers(engine: Any, slug: str) -> None:
    """Every container the tasks started from the project's images, whatever happened to `inv`."""
    # sparse: the list alone, no inspect per container, which fails for one removed meanwhile
    for container in engine.containers.list(all=True, sparse=True, filters={"label": MANAGED_LABEL}):
        if (container.attrs.get("Labels") or {}).get(MANAGED_LABEL, "").startswith(f"{slug}:"):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


class Inv:
    """`invoke ARGS` in its own process group, output kept; killed with its group if it hangs."""

    def __init__(self, project: Path, *args: str, env: dict[str, str] | None = None, ignore_sigint: bool = False):
        def preexec() -> None:
            os.setsid()
            as_a_terminal_starts_it()
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
    try:
        build = subprocess.run(["invoke", "build"], cwd=project, env=ENV, capture_output=True, text=True, timeout=600)
        assert build.returncode == 0, build.stdout + build.stderr
        (project / ".first-build.log").write_text(build.stdout + build.stderr)  # a cold build: pip ran
        yield project
    finally:
        remove_containers(engine, slug)
        remove_project(engine, slug)  # tagged, untagged builder stages, a failed or interrupted build's


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
    assert httpx.get(url + "/healthz", timeout=60).status_code == 200
    [container] = running_containers(engine, tool_project.name)
    assert container.attrs["Config"]["StopTimeout"] == 25  # GUNICORN_GRACEFUL_TIMEOUT (20) + 5
    run.proc.send_signal(signum)
    assert run.finish(60) == 0, run.output
    assert running_containers(engine, tool_project.name) == []
    assert "Removed container" in run.output and "Traceback" not in run.output


class SlowPost(threading.Thread):
    """A POST /api/echo in flight for as long as the test wants.

    It sends its head with ``Expect: 100-continue``: the worker's event loop answers 100 Continue
    once it has read the head, so from ``wait_in_flight`` on the server is reading this request,
    whatever the machine's load. Then it sends its body only when released (a byte at a time,
    over ``seconds``), or never, and reads what comes: the answer, or the close of a killed server.
    """

    BODY = b'{"slow": "' + b"x" * 24 + b'"}'

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.in_flight = threading.Event()
        self.released = threading.Event()
        self.seconds: float | None = None  # None: the body is never sent
        self.response = b""
        self.error = ""
        self.sock: socket.socket | None = None

    def run(self) -> None:
        try:
            # A generous timeout: only so that a broken test cannot hang for ever.
            with socket.create_connection((self.host, self.port), timeout=300) as sock:
                self.sock = sock
                head = (
                    f"POST /api/echo HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(self.BODY)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
                )
                sock.sendall(head.encode())
                interim = b""
                while b"\r\n\r\n" not in interim and (chunk := sock.recv(1)):
                    interim += chunk
                if not interim.startswith(b"HTTP/1.1 100 "):
                    self.error = f"no 100 Continue: {interim!r}"
                    return
                self.in_flight.set()
                self.released.wait()
                if self.seconds is not None:
                    for byte in self.BODY:
                        sock.sendall(bytes([byte]))
                        time.sleep(self.seconds / len(self.BODY))  # the slow client's pace
                while chunk := sock.recv(65536):
                    self.response += chunk
        except OSError as exc:
            self.error = repr(exc)
        finally:
            self.in_flight.set()  # (also when it failed: wait_in_flight then says why)

    def wait_in_flight(self) -> None:
        assert self.in_flight.wait(120) and not self.error, self.error or "no 100 Continue within 120 s"

    def release(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.released.set()

    def close(self) -> None:
        """End the client's side (a killed container's connection may never be closed by the host)."""
        self.released.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread from its recv
        self.join(60)


def wait_for_container_log(container: Any, text: str, timeout: float = 120) -> None:
    """Until the container has logged ``text`` (the engine keeps its logs; `inv` stops following them on Ctrl-C)."""
    deadline = time.monotonic() + timeout
    while text not in container.logs(stdout=True, stderr=True).decode("utf-8", "replace"):
        assert time.monotonic() < deadline, f"the container did not log {text!r} within {timeout:.0f} s"
        time.sleep(0.1)


@pytest.mark.docker
def test_ctrl_c_lets_a_slow_request_finish(tool_project: Path, engine: Any, inv: list[Inv]) -> None:
    """A request in flight survives Ctrl-C, though its body arrives only after the container got its
    SIGTERM and takes longer than `docker stop`'s default 10 s to: that default would have killed it.

    The graceful timeout is long (60 s, so the stop waits up to 65 s): the request needs it all only
    if the machine is very slow, and a stop that did not honour it ends the request unmistakably."""
    run = Inv(tool_project, "run", "--no-build", env={"GUNICORN_GRACEFUL_TIMEOUT": "60"})
    inv.append(run)
    url = run.wait_for(r"Healthy in [\d.]+s: (http://\S+)")[1]
    [container] = running_containers(engine, tool_project.name)
    assert container.attrs["Config"]["StopTimeout"] == 65  # the graceful timeout + 5, passed from the shell
    client = SlowPost(url)
    client.start()
    try:
        client.wait_in_flight()
        run.proc.send_signal(signal.SIGINT)
        wait_for_container_log(container, "Handling signal: term")  # the stop has begun: gunicorn has its SIGTERM
        # Only now the body, over 12 s: its last byte comes more than 10 s after the SIGTERM, however
        # busy the machine is (load only makes it later).
        client.release(seconds=12)
        client.join(180)
        assert not client.is_alive()
        assert run.finish(120) == 0, run.output
    finally:
        client.close()
    assert not client.error, client.error
    answer = client.response.decode("utf-8", "replace")
    assert answer.startswith("HTTP/1.1 200"), answer
    assert '"slow"' in answer
    assert running_containers(engine, tool_project.name) == []


@pytest.mark.docker
def test_a_second_ctrl_c_stops_at_once(tool_project: Path, engine: Any, inv: list[Inv]) -> None:
    """A request that never finishes would hold the stop for the whole graceful timeout (600 s here,
    the most allowed): a second Ctrl-C during the stop ends it, the container and the request with it."""
    run = Inv(tool_project, "run", "--no-build", env={"GUNICORN_GRACEFUL_TIMEOUT": "600"})
    inv.append(run)
    url = run.wait_for(r"Healthy in [\d.]+s: (http://\S+)")[1]
    [container] = running_containers(engine, tool_project.name)
    assert container.attrs["Config"]["StopTimeout"] == 605  # the container's own value, passed from the shell
    client = SlowPost(url)  # never released: its body never comes
    client.start()
    try:
        client.wait_in_flight()
        run.proc.send_signal(signal.SIGINT)
        run.wait_for(r"in-flight requests get up to 600s")
        wait_for_container_log(container, "Handling signal: term")  # `docker stop` is under way (it sent SIGTERM)
        run.proc.send_signal(signal.SIGINT)
        run.finish(120)  # well before the 600 s a wait for the request would take
        assert "Removed container" in run.output
        assert running_containers(engine, tool_project.name) == []  # the request's server is gone ...
        assert not client.response.startswith(b"HTTP/1.1 200"), client.response  # ... and it never answered
    finally:
        client.close()


@pytest.mark.docker
def test_run_rebuilds_when_the_source_changed(tool_project: Path, inv: list[Inv]) -> None:
    def served_message(*args: str) -> tuple[str, str]:
        run = Inv(tool_project, "run", *args)
        inv.append(run)
        url = run.wait_for(r"Healthy in [\d.]+s: (http://\S+)")[1]
        message = httpx.get(url + "/api/greeting", timeout=60).json()["message"]
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
        remove_project(engine, slug)  # its images, the untagged builder stage's too


def project_image_ids(engine: Any, slug: str, **filters: Any) -> set[str]:
    """Every image (intermediate ones too) carrying the project's label."""
    found = engine.api.images(all=True, quiet=True, filters={"label": f"{PROJECT_LABEL}={slug}", **filters})
    return {image_id.removeprefix("sha256:") for image_id in found}


PROJECT_LABEL = "dev.copier-netlify-docker.project"


def test_a_cold_build_writes_no_progress_bars(tool_project: Path) -> None:
    output = (tool_project / ".first-build.log").read_text()
    assert "Successfully installed" in output  # pip ran in this build (a new slug misses the cache)
    assert "━" not in output and "█" not in output, [line for line in output.splitlines() if "━" in line][:2]


@pytest.mark.docker
@pytest.mark.parametrize("how", ["ctrl-c", "sigint-ignored-then-kill-int", "sigterm"])
def test_an_interrupted_build_says_so_and_leaves_nothing(
    tool_project: Path, engine: Any, inv: list[Inv], how: str
) -> None:
    """Stopped while pip runs (--no-cache): one line, exit 130, no step container, no step image, tags kept."""
    slug = tool_project.name
    tagged = engine.images.get(f"{slug}:latest").id
    images = project_image_ids(engine, slug)
    build = Inv(tool_project, "build", "--no-cache", ignore_sigint=how == "sigint-ignored-then-kill-int")
    inv.append(build)
    step = build.wait_for(r"pip install[^\n]*\n ---> Running in ([0-9a-f]{12})")[1]
    build.wait_for(rf"Running in {step}\n(?:.*\n)*?Collecting ")  # pip runs: it has begun to print
    # How the step's container ends: killed by the interrupted build, or (wrongly) when pip is done.
    pip = engine.containers.get(step)
    events = engine.events(decode=True, filters={"container": pip.id, "event": "die"})
    ends: list[dict[str, Any]] = []

    def watch() -> None:
        with contextlib.suppress(Exception):  # the stream closed at the end of the test
            ends.append(next(iter(events)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        pip.reload()
        assert pip.status == "running", "pip was still running when the signal went"
        if how == "ctrl-c":
            os.killpg(build.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        else:
            build.proc.send_signal(signal.SIGINT if how != "sigterm" else signal.SIGTERM)
        assert build.finish(120) == 130, build.output
        watcher.join(120)
    finally:
        events.close()
    assert ends, "the step's container did not end"
    assert ends[0]["Actor"]["Attributes"]["exitCode"] != "0", ends  # pip was stopped, not waited for
    last = build.lines[-1]
    assert re.fullmatch(r"Build interrupted; nothing was tagged; removed the \d+ step images? it had made", last), last
    assert "Traceback" not in build.output
    assert engine.images.get(f"{slug}:latest").id == tagged
    assert not engine.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={slug}"})
    assert project_image_ids(engine, slug) == images, "the step images the build made are gone"


@pytest.mark.docker
def test_a_rebuild_removes_the_image_it_untagged_unless_used(tool_project: Path, engine: Any) -> None:
    """--no-cache gives a new id; the previous image goes, unless a container uses it; nothing piles up."""
    slug = tool_project.name

    def rebuild() -> str:
        result = subprocess.run(
            ["invoke", "build", "--no-cache"], cwd=tool_project, env=ENV, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stderr

    first = engine.images.get(f"{slug}:latest").id
    output = rebuild()
    second = engine.images.get(f"{slug}:latest").id
    assert second != first  # pip ran again: new files, new id
    assert first[7:19] in output.split("images earlier builds left (", 1)[1].splitlines()[0], output
    with pytest.raises(Exception, match=r"No such image"):
        engine.images.get(first)
    dangling = project_image_ids(engine, slug, dangling=True)
    assert len(dangling) == 1, "only this build's builder stage (the cache of the next build) is untagged"
    # A stopped container made from the image keeps it: it is in use.
    holder = engine.containers.create(second, ["true"])
    try:
        rebuild()
        assert engine.images.get(second).id == second
        assert not engine.images.get(second).tags
    finally:
        holder.remove(force=True)
    rebuild()  # now nothing uses it: the next build removes it
    with pytest.raises(Exception, match=r"No such image"):
        engine.images.get(second)
    assert len(project_image_ids(engine, slug, dangling=True)) == 1


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.docker
def test_port_in_the_shell_is_not_passed_and_says_so(tool_project: Path, engine: Any, inv: list[Inv]) -> None:
    for value in ("99999", "8081", "abc"):
        run = Inv(tool_project, "run", "--no-build", env={"PORT": value})
        inv.append(run)
        url = run.wait_for(r"Healthy in [\d.]+s: (http://\S+)")[1]
        assert f"PORT={value} in your environment is not passed to the container" in run.output
        assert "--port" in run.output.split("not passed", 1)[1].splitlines()[0]
        assert httpx.get(url + "/healthz", timeout=60).status_code == 200
        [container] = running_containers(engine, tool_project.name)
        assert "PORT=8080" in container.attrs["Config"]["Env"]  # the image's, as the port mapping expects
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(60) == 0, run.output
    run = Inv(tool_project, "run", "--no-build")  # unset: no note
    inv.append(run)
    run.wait_for(r"Healthy in")
    assert "not passed" not in run.output
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(60) == 0


BAD_PORTS = ["abc", "-1", "65536", "99999", "1e3", "0x50", "8080.0", " 80x", "", "\uff18\uff10", "80\n81", "x" * 200]


def seeded_bad_ports(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "0123456789-+. xe_:\t/"
    found: list[str] = []
    while len(found) < count:
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdigit() and int(stripped) <= 65535):
            found.append(text)
    return found


@pytest.mark.parametrize("task", ["run", "dev", "edge"])
def test_a_bad_option_value_is_one_line(tool_project: Path, task: str) -> None:
    """Int options were converted by invoke with int(): a 22-line traceback. Now one line, before any work."""
    for value in [*BAD_PORTS, *seeded_bad_ports(7, 6)]:
        result = subprocess.run(
            ["invoke", task, "--port", value], cwd=tool_project, env=ENV, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1, (value, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: --port ") and line.endswith("is not a port; use 1-65535 (or 0 for a free one)")
        assert len(line) < 160, line


def test_ssh_docker_host_that_refuses_is_one_clear_line(tmp_path: Path) -> None:
    """ssh:// goes through the system's ssh (the SDK's own needs paramiko); failures say ssh's reason."""
    project = render(tmp_path / "ssh-refused", git=False)
    no_ssh = tmp_path / "bin"
    no_ssh.mkdir()
    for tool in ("invoke", "python", "python3"):
        (no_ssh / tool).symlink_to(Path(sys.executable).parent / tool)
    port = free_local_port()
    cases = [
        (f"ssh://nobody@127.0.0.1:{port}", {}, f"ssh could not connect: ssh: connect to host 127.0.0.1 port {port}: "
         "Connection refused"),
        (f"ssh://127.0.0.1:{port}", {}, "Connection refused"),
        ("ssh://nobody@127.0.0.1:notaport", {}, "has a bad port; write it as ssh://[user@]host[:port]"),
        ("ssh://nobody@127.0.0.1/var/run/docker.sock", {}, "has a path; write it as ssh://[user@]host[:port]"),
        (f"ssh://nobody@127.0.0.1:{port}", {"PATH": str(no_ssh)}, "needs the OpenSSH client, and `ssh` is not on PATH"),
    ]  # fmt: skip
    for host, env, expected in cases:
        result = subprocess.run(
            ["invoke", "build"], cwd=project, env={**ENV, **env, "DOCKER_HOST": host},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 1, (host, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and expected in line, (host, line)
        assert "start one" not in line and "SSHHTTPAdapter" not in line and "paramiko" not in line, line


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real OpenSSH server on 127.0.0.1 that lets root in with a key made here, and an `ssh` that uses it.

    The `ssh` on PATH is a wrapper adding `-F config` (ssh reads ~/.ssh from the password database,
    not $HOME, so a test cannot point it elsewhere otherwise).
    """
    if not Path("/usr/sbin/sshd").exists():
        unavailable("openssh-server is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        # sshd lets in only the user it runs as unless it runs as root, and the engine's socket is root's.
        unavailable("the sshd of this test runs as root, and this run is not root (.ci/run runs as root)")
    home = tmp_path_factory.mktemp("sshd")
    for name in ("client", "host", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "client.pub").read_text())
    port = free_local_port()
    (home / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {home}/host\nAuthorizedKeysFile {home}/authorized_keys\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nUsePAM no\nPidFile {home}/sshd.pid\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(home / "sshd_config")], stderr=subprocess.DEVNULL
    )
    host_key = " ".join((home / "host.pub").read_text().split()[:2])
    (home / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    bins = {}
    for name, key, known in [("ok", "client", "known_hosts"), ("badkey", "stranger", "known_hosts"),
                             ("unknownhost", "client", "empty_known_hosts")]:  # fmt: skip
        (home / known).touch()
        (home / f"{name}.config").write_text(
            f"Host *\n  IdentityFile {home}/{key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {home}/{known}\n  StrictHostKeyChecking yes\n"
        )
        directory = home / name
        directory.mkdir()
        wrapper = directory / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {home}/{name}.config "$@"\n')
        wrapper.chmod(0o755)
        bins[name] = str(directory)
    try:
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None and time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.1)
        yield {"port": port, "bins": bins}
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.docker
def test_ssh_docker_host_builds_and_runs_through_a_real_sshd(
    tool_project: Path, engine: Any, sshd: dict[str, Any], inv: list[Inv]
) -> None:
    host = f"ssh://root@127.0.0.1:{sshd['port']}"

    def env(kind: str) -> dict[str, str]:
        return {"DOCKER_HOST": host, "PATH": f"{sshd['bins'][kind]}{os.pathsep}{ENV['PATH']}"}

    result = subprocess.run(
        ["invoke", "build"], cwd=tool_project, env={**ENV, **env("ok")}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^Built \w+ as ", result.stderr, re.MULTILINE)
    run = Inv(tool_project, "run", "--no-build", env=env("ok"))
    inv.append(run)
    url = run.wait_for(r"Healthy in [\d.]+s: (http://\S+)")[1]
    assert httpx.get(url + "/api/greeting", timeout=60).status_code == 200
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(60) == 0, run.output
    assert "Removed container" in run.output and running_containers(engine, tool_project.name) == []
    for kind, expected in [("badkey", "Permission denied"), ("unknownhost", "Host key verification failed")]:
        result = subprocess.run(
            ["invoke", "build"], cwd=tool_project, env={**ENV, **env(kind)}, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: No Docker engine answers at {host}: ssh could not connect: "), line
        assert expected in line and "start one" not in line, line
    assert not [p for p in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                if "dial-stdio" in p and str(sshd["port"]) in p]  # fmt: skip
