from __future__ import annotations

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


@pytest.fixture
def app() -> Flask:
    # Log lines are written at once here, so tests can read them right after a request.
    config = {"TESTING": True, "VERSION": "1.2.3", "REVISION": "abc123", "MAX_REQUEST_BYTES": 1024}
    return create_app({**config, "LOG_FLUSH_SECONDS": 0})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
