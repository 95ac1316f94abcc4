from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app

# What the tests run besides Python, each with the Debian/Ubuntu package that has it: the tools
# .github/workflows/ci.yml installs (the template's tests check it installs each one).
TOOLS = {
    "git": "git",
    "promtool": "prometheus",
}


def in_ci() -> bool:
    """``CI`` set to anything but an empty or false value (``0``, ``false``, ``no``, ``off``), as CI
    services set it (``CI=true``): a person's ``CI=false`` is not CI."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no", "off"}


def unavailable(message: str) -> NoReturn:
    """A prerequisite of the test is missing (``message`` says which, and how to get it): the test
    is skipped on a machine without it, and fails under CI (``CI`` set, as CI services set it),
    where every test must run. The one way the tests treat a missing prerequisite."""
    if in_ci():
        pytest.fail(f"{message.rstrip('.')}; CI is set, so this test must run, not skip", pytrace=False)
    pytest.skip(message)


def needed_tool(name: str, why: str) -> str:
    """The path of the command ``name`` (one of :data:`TOOLS`), which the test needs ``why``;
    :func:`unavailable` when it is not on PATH."""
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed, and is needed {why} (apt-get install {TOOLS[name]})")
    return found


@pytest.fixture
def app() -> Flask:
    # Log lines are written at once here, so tests can read them right after a request.
    config = {"TESTING": True, "VERSION": "1.2.3", "REVISION": "abc123", "MAX_REQUEST_BYTES": 1024}
    return create_app({**config, "LOG_FLUSH_SECONDS": 0})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
