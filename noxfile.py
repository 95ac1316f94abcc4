"""Every reproducible check of the template: `nox -l` lists them, `nox` runs what CI needs."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))  # nox does not put the noxfile's folder on sys.path
from tools.generated import offline_base_image

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests", "toolkit", "generated", "smoke"]
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
APP_LOCK = "template/requirements.lock"
# CI=true, as CI services set it; a person's CI=false (or 0, no, off) is not CI.
IN_CI = os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no", "off"}
# After a Ctrl-C nox gives a command 0.3 s before SIGTERM, then SIGKILL. The demo needs longer to
# stop its container gracefully and remove the images it built.
DEMO_STOP = {"interrupt_timeout": 120.0, "terminate_timeout": 30.0}

# Answer sets for `generated`: the defaults, and the corners (other Python, sync workers,
# unusual port, a name that needs slugifying). Each is rendered and must pass its own `nox`.
ANSWER_SETS: dict[str, dict[str, object]] = {
    "defaults": {},
    "py313-sync": {
        "project_name": "Orders API",
        "python_version": "3.13",
        "port": 9000,
        "web_concurrency": 2,
        "threads": 1,
        "timeout": 30,
    },
    "py311-unicode": {
        "project_name": "Café Ünïcode — Service",
        "python_version": "3.11",
        "author_name": 'Zoë "Z" O\'Brien',
        "description": 'Says "hello" & more',
        "backend_url": "https://api.cafe.example:8443",
    },
}


def install(session: nox.Session, *groups: str, app: bool = False) -> None:
    if app:
        session.install("-r", APP_LOCK)
    session.install(*nox.project.dependency_groups(PYPROJECT, *groups))
    # The generated projects' tooling, from the working tree (a render pins the template's commit).
    session.install("-e", str(ROOT / "toolkit"))


def require_docker(session: nox.Session) -> None:
    """Skip where no engine answers; in CI, fail instead (Docker checks must run there)."""
    try:
        session.run("python", "-c", "import docker; docker.from_env(timeout=10).ping()", silent=True)
    except nox.command.CommandFailed:
        message = "no Docker engine answers (start dockerd, or set DOCKER_HOST)"
        if IN_CI:
            session.error(f"{message}; CI needs one")
        session.skip(message)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint the repository's Python with ruff and mypy."""
    install(session, "lint", "render")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    with session.chdir(ROOT / "toolkit"):
        session.run("mypy")  # strict, as toolkit/pyproject.toml says


@nox.session
def tests(session: nox.Session) -> None:
    """Render the template and test the result (Docker tests need an engine)."""
    install(session, "test", app=True)
    # The generated netlify.toml's build command installs the toolkit with `python3 -m pip`, as in
    # Netlify's build image; `netlify build` runs it with this environment's python3, which uv gives no pip.
    session.install("pip")
    # Every test runs and every failure is reported: one failure must not hide the rest.
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
@nox.parametrize("part", ["1", "2"])
def toolkit(session: nox.Session, part: str) -> None:
    """Test the toolkit (toolkit/tests) once, against a project rendered with default answers,
    on a real Docker engine: deploys, rollouts under load, canaries, Swarm, the Netlify client.
    In two parts of about equal time (toolkit/tests/conftest.py, PART_1), each with its own
    environment and render, so that CI runs them at once on two engines; `nox -s toolkit` runs both."""
    install(session, "render", app=True)
    require_docker(session)
    target = ROOT / ".cache" / "toolkit" / part / "my-service"
    session.run("python", "-m", "tools.generated", str(target), "--answers", "{}")
    project = nox.project.load_toml(str(target / "pyproject.toml"))
    session.install(*nox.project.dependency_groups(project, "test"))
    with session.chdir(target):
        # python -m: the project's folder is on sys.path (its api/ package), as in its own tests.
        session.run(
            "python",
            "-m",
            "pytest",
            str(ROOT / "toolkit" / "tests"),
            "-p",
            "no:cacheprovider",
            *(session.posargs or ["-q"]),
            env={"BASE_IMAGE": offline_base_image("3.11"), "CI": os.environ.get("CI", ""), "CND_TEST_PART": part},
        )


@nox.session
def generated(session: nox.Session) -> None:
    """Render several answer sets and run each generated project's own `nox`."""
    install(session, "render", "dev")
    require_docker(session)
    from_sets = session.posargs or list(ANSWER_SETS)
    failed: list[str] = []
    for name in from_sets:
        answers = ANSWER_SETS[name]
        target = ROOT / ".cache" / "generated" / name
        session.log(f"rendering {name}: {answers or 'default answers'}")
        session.run("python", "-m", "tools.generated", str(target), "--answers", json.dumps(answers))
        # Offline base images exist for 3.11 and 3.13; a 3.12 project builds on the 3.11 one.
        python = str(answers.get("python_version", "3.12"))
        base = offline_base_image("3.13" if python == "3.13" else "3.11")
        with session.chdir(target):
            try:
                session.run("nox", env={"BASE_IMAGE": base, "CI": "true"})
            except nox.command.CommandFailed:
                failed.append(name)  # the other sets still run: one failure must not hide the rest
    if failed:
        session.error(f"the generated project's nox failed for: {', '.join(failed)}")


@nox.session
def smoke(session: nox.Session) -> None:
    """Render with default answers, build the image, run it and run its smoke suite."""
    install(session, "render", "test", app=True)
    require_docker(session)
    session.run(
        "python", "-m", "tools.demo", "--check", "--dir", str(ROOT / ".cache" / "smoke" / "my-service"), **DEMO_STOP
    )


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """Render a project, build it, run it and print its URL (--check: smoke it and exit)."""
    install(session, "render", "test", app=True)
    session.run("python", "-m", "tools.demo", *session.posargs, **DEMO_STOP)


@nox.session(default=False)
def images(session: nox.Session) -> None:
    """Build the offline Python base images from Debian packages (needs root and debootstrap)."""
    if shutil.which("debootstrap") is None:
        session.error("debootstrap is not installed: apt-get install -y debootstrap")
    install(session, "render")
    session.run("python", "-m", "tools.base_image", *(session.posargs or ["bookworm", "trixie"]))


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Measure render, build, start-up, size and throughput; print a table and write JSON."""
    install(session, "render", "test", app=True)
    session.install("pip")  # measures the locked wheels' installed size as pip lays them out
    require_docker(session)
    session.run("python", "-m", "tools.bench", *session.posargs)
