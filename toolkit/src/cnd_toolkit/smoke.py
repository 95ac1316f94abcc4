"""Smoke tests: run ``tests/smoke`` against an image (started here) or a deployed URL."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import docker

from cnd_toolkit.docker import containers
from cnd_toolkit.docker.engine import client_is_local
from cnd_toolkit.docker.forward import forward
from cnd_toolkit.errors import SmokeFailed
from cnd_toolkit.logs import LineSink
from cnd_toolkit.project import Project
from cnd_toolkit.settings import child_environment

# The smoke run uses a port other than the image's default, to prove the image honours $PORT.
PORT_OFFSET = 1


@dataclass(frozen=True)
class Failure:
    """A smoke test that failed (or errored in a fixture), as pytest's report names it."""

    test: str  # test_errors_are_json
    where: str  # tests/smoke/test_smoke.py:47, the line that raised ("" if the report has none)
    line: str  # that line's source: assert missing.status_code == 404
    message: str  # pytest's first line about it: assert 400 == 404

    def describe(self) -> str:
        said = f" ({self.message})" if self.message and self.message != self.line else ""
        at = f" at {self.where}" if self.where else ""
        return f"{self.test}{at}: {self.line or self.message}{said if self.line else ''}"


@dataclass(frozen=True)
class SuiteRun:
    """pytest's exit code, and the tests that failed (read from its JUnit XML report)."""

    code: int
    failures: list[Failure] = field(default_factory=list)
    tests: int = 0  # that ran: skipped ones (the container checks against a URL) not counted

    def summary(self, against: str) -> str:
        """The message of a failed run: what failed against what, then one line per failed test,
        so the test names and their assertion lines are the last a person reads."""
        if not self.failures:
            return f"smoke tests failed against {against} (pytest exit code {self.code}; its report is above)"
        count = f"{len(self.failures)} of {self.tests}" if self.tests else str(len(self.failures))
        lines = [f"  {failure.describe()}" for failure in self.failures]
        return "\n".join(
            [f"smoke tests failed against {against}: {count} (pytest's report above has each in full)", *lines]
        )


# The last line of a failure's traceback in pytest's report: "tests/smoke/test_smoke.py:47: AssertionError".
# Where each frame of a long traceback is: "path:line: " (a test's frame), "path:line: in name",
# or "path:line: Error" (the last); never an "E " line of the error itself.
_FRAME_AT = re.compile(r"^(?!E )(\S+:\d+):(?: |\Z)")
_SHOWN = 200  # characters of a source line or message: enough to read, short enough for one line


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def failures_of(report: Path) -> tuple[list[Failure], int]:
    """The failed tests in a pytest JUnit XML ``report``, and how many tests ran (not skipped).

    Each with the source line that raised (the last ``>`` line of its traceback) and where it is;
    a report that is missing or unreadable (pytest stopped before writing it) gives none.
    """
    try:
        root = ElementTree.parse(report).getroot()
    except (OSError, ElementTree.ParseError):
        return [], 0
    found: list[Failure] = []
    for case in root.iter("testcase"):
        for outcome in [*case.findall("failure"), *case.findall("error")]:
            text = outcome.text or ""
            # Each frame of the traceback: its ">" source line, then "file:line: Error". The frame
            # shown is the last one in the suite's own files (the test's assertion, not httpx's raise).
            frames: list[tuple[str, str]] = []
            pending = ""
            for line in text.splitlines():
                if line.startswith(">"):
                    pending = line[1:].strip()
                elif found_at := _FRAME_AT.match(line):
                    frames.append((found_at[1], pending))
                    pending = ""
            own = [frame for frame in frames if "tests/smoke/" in frame[0].replace("\\", "/")]
            chosen = (own or frames)[-1:]
            raised = [where for where, _ in chosen]
            source = [line for _, line in chosen if line] or [
                line[1:].strip() for line in text.splitlines() if line.startswith(">")
            ][-1:]
            message = (outcome.get("message") or "").strip().splitlines()
            name = case.get("name") or case.get("classname") or "(collection)"
            if outcome.tag == "error" and message:  # 'failed on setup with "ConnectionError: refused"'
                stage, _, said = message[0].partition(" with ")
                name += f" ({stage})"
                message = [said.strip('"')] if said else message
            if message == ["collection failure"]:  # the module did not import: its error is the last E line
                message = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")][-1:] or message
            found.append(
                Failure(
                    test=name,
                    where=raised[-1] if raised else "",
                    line=_shorten(source[-1]) if source else "",
                    message=_shorten(message[0]) if message else "",
                )
            )
    suites = list(root.iter("testsuite"))
    ran = sum(int(suite.get("tests") or 0) - int(suite.get("skipped") or 0) for suite in suites)
    return found, ran


def run_suite(
    project: Project, base_url: str, container_id: str = "", extra: Sequence[str] = (), docker_host: str = ""
) -> SuiteRun:
    """Run pytest over tests/smoke against ``base_url``; return its exit code and what failed.

    ``container_id`` (and the ``docker_host`` it runs on) lets the suite's container checks look
    at the container through the same engine; without one the suite is told it tests a URL
    (``SMOKE_URL_ONLY``), with no container to inspect, and skips those checks. The suite gets
    this process's environment without the deploy's secrets
    (:func:`~cnd_toolkit.settings.child_environment`): it judges what any visitor sees, ``/metrics``
    refusing one without the token among it. pytest's report streams to the terminal as it
    runs; the failures are read back from its JUnit XML report, a format pytest writes for CI
    systems, rather than from its terminal text.
    """
    env = {**child_environment(), "SMOKE_BASE_URL": base_url}
    env.pop("SMOKE_CONTAINER", None)
    env.pop("SMOKE_URL_ONLY", None)
    if container_id:
        env["SMOKE_CONTAINER"] = container_id
        if docker_host:
            env["DOCKER_HOST"] = docker_host
    else:
        env["SMOKE_URL_ONLY"] = "1"
    suite = str(Path(project.root, "tests", "smoke"))
    with tempfile.TemporaryDirectory(prefix="smoke-report-") as folder:
        report = Path(folder, "junit.xml")
        command = [sys.executable, "-m", "pytest", suite, "-p", "no:cacheprovider", f"--junitxml={report}", *extra]
        # A session of its own: a terminal's Ctrl-C reaches this process, which stops the suite (and
        # the container) without pytest's own KeyboardInterrupt report in the middle of the task's output.
        done = subprocess.run(command, cwd=project.root, env=env, check=False, start_new_session=True)
        failures, tests = failures_of(report) if done.returncode != 0 else ([], 0)
    return SuiteRun(done.returncode, failures, tests)


def smoke_url(project: Project, url: str, extra: Sequence[str] = ()) -> None:
    run = run_suite(project, url.rstrip("/"), extra=extra)
    if run.code != 0:
        raise SmokeFailed(run.summary(url))


def smoke_image(
    project: Project,
    client: docker.DockerClient,
    image: str,
    *,
    health_timeout: float = 30,
    extra: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    on_line: LineSink | None = None,
    docker_host: str = "",
) -> float:
    """Start ``image``, wait for health, run the suite, always remove the container.

    On an engine on this machine the container is published on a free loopback port; on a remote
    one (``docker_host``: tcp://, ssh://) nothing is published and the suite reaches the
    container through the Docker API (:mod:`cnd_toolkit.docker.forward`). Returns the seconds from start
    to healthy. On failure the container's logs are attached to the error, whose message names
    each failed test and its assertion line (:meth:`SuiteRun.summary`).
    """
    port = project.container_port + PORT_OFFSET
    with containers.running(
        client,
        image,
        on_line=on_line,
        container_port=port,
        environment=environment,
        publish=client_is_local(client),
        host_options=containers.HARDENED,  # as the deploy runs it
        quick_stop_on_interrupt=True,
    ) as running:
        healthy_after = containers.wait_healthy(running, timeout=health_timeout)
        with contextlib.ExitStack() as stack:
            if running.reachable:
                url, relayed = running.url, None
            else:
                relayed = stack.enter_context(forward(client, running.container, port))
                url = relayed.url
            run = run_suite(project, url, running.container.id or "", extra, docker_host=docker_host)
        if run.code != 0:
            relay = f"\nrelay: {relayed.problems()}" if relayed is not None and relayed.errors else ""
            # The container's logs are the detail, printed before the message: the failed tests
            # and their assertion lines are what a person reads last.
            raise SmokeFailed(run.summary(image), detail=containers.container_logs(running.container) + relay)
        return healthy_after


def smoke_site(project: Project, url: str, *, revision: str = "", timeout: float = 30, api: bool = True) -> None:
    """Check a deployed site (a Netlify draft, production) as a visitor: the page loads, and the
    API answers through the site's /api/* proxy rule (with ``revision``, when it is given).
    ``api=False`` (the backend is in maintenance, answering 503) checks the page only."""
    import time

    import httpx

    from cnd_toolkit.wait import NotReady, TimedOut, poll

    base = url.rstrip("/")
    with httpx.Client(timeout=10, follow_redirects=True) as http:

        def probe() -> None:
            try:
                page = http.get(base + "/")
                version = http.get(base + "/api/version")
            except httpx.HTTPError as exc:
                raise NotReady(type(exc).__name__) from None
            if page.status_code != 200 or "html" not in page.headers.get("content-type", ""):
                raise NotReady(f"/ answered {page.status_code} {page.headers.get('content-type', '')}")
            if not api:
                return
            try:
                body = version.json()
            except ValueError:
                raise NotReady(
                    f"/api/version answered {version.status_code} without JSON (is the proxy rule there?)"
                ) from None
            if version.status_code != 200:
                raise NotReady(f"/api/version answered {version.status_code}")
            if revision and body.get("revision") != revision:
                raise NotReady(f"/api/version names revision {body.get('revision')!r}, not {revision[:12]}")

        started = time.monotonic()
        try:
            poll(probe, timeout=timeout, interval=0.2, max_interval=1)
        except TimedOut as exc:
            raise SmokeFailed(
                f"smoke test of {base} failed after {time.monotonic() - started:.0f}s: {exc.reason}"
            ) from None
