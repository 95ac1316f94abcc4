"""Every reproducible check of this project: `nox -l` lists them, `nox` runs the defaults."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
# uv makes environments in a fraction of virtualenv's time; it comes with `uv sync` (the dev group) or
# `pip install nox uv`. Without it, virtualenv, silently (nox would log "uv binary not found").
HAS_UV = bool(os.environ.get("UV") or shutil.which("uv") or importlib.util.find_spec("uv"))
nox.options.default_venv_backend = "uv" if HAS_UV else "virtualenv"
nox.options.sessions = ["tests", "lint", "smoke"]
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml("pyproject.toml")
# CI=true, as CI services set it; a person's CI=false (or 0, no, off) is not CI.
IN_CI = os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no", "off"}


def install(session: nox.Session, *groups: str, app: bool = True) -> None:
    if app:
        # The same hashed lock the image installs from, so tests run what production runs.
        session.install("-r", "requirements.lock")
    session.install(*nox.project.dependency_groups(PYPROJECT, *groups))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the tests of api/, the server and the deploy configuration (the tooling is tested where it lives)."""
    install(session, "test", "toolkit")
    session.run("pytest", "--ignore=tests/smoke", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style, types, the workflows and the Netlify config: ruff, mypy on tasks.py,
    check-jsonschema and zizmor on .github/workflows, inv check."""
    install(session, "lint", "toolkit")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    workflows = sorted(str(path) for path in Path(".github/workflows").glob("*.y*ml"))
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    session.run("zizmor", "--offline", ".github/workflows")
    session.run("invoke", "check")


@nox.session
def smoke(session: nox.Session) -> None:
    """Build the image, run it on a free port and run tests/smoke against it."""
    install(session, "test", "toolkit")
    try:
        session.run("python", "-m", "cnd_toolkit.docker", silent=True)
    except nox.command.CommandFailed:
        message = "no Docker engine answers; start one (or set DOCKER_HOST) to run the smoke tests"
        if IN_CI:
            session.error(message)
        session.skip(message)
    session.run("invoke", "smoke", *session.posargs)
